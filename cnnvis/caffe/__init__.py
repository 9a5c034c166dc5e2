"""Caffe models on PyTorch: read deploy prototxt + caffemodel natively, run any blob as Caffe would.

Usable on its own: `load_caffe_net(deploy, weights)` returns a `CaffeNet`;
`write_caffemodel` writes weights (for tests, benchmarks and reference data).
"""
from cnnvis.caffe.net import CaffeNet, load_caffe_net
from cnnvis.caffe.reader import parse_prototxt, read_caffemodel, read_prototxt
from cnnvis.caffe.writer import network_weights, write_caffemodel

__all__ = ["CaffeNet", "load_caffe_net", "parse_prototxt", "read_caffemodel", "read_prototxt",
           "network_weights", "write_caffemodel"]
