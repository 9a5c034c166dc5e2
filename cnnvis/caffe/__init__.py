"""Caffe models on PyTorch: read deploy prototxt + caffemodel natively, run any blob as Caffe would.

Usable on its own: `load_caffe_net(deploy, weights)` returns a `CaffeNet`.
"""
from cnnvis.caffe.net import CaffeNet, load_caffe_net
from cnnvis.caffe.reader import parse_prototxt, read_caffemodel, read_prototxt

__all__ = ["CaffeNet", "load_caffe_net", "parse_prototxt", "read_caffemodel", "read_prototxt"]
