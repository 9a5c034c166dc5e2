"""Writing caffemodel files (weights), through the project's own caffe.proto.

For tests, benchmarks and reference data: cnn-vis itself only reads Caffe files.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cnnvis.caffe import caffe_pb2 as pb

Weights = Mapping[str, Sequence[np.ndarray | torch.Tensor]]  # layer name -> its blobs, in order


def blob_proto(array: np.ndarray | torch.Tensor, legacy: bool = False) -> pb.BlobProto:
    """A BlobProto holding `array`; `legacy` writes the old num/channels/height/width shape."""
    array = np.asarray(array, np.float32)
    blob = pb.BlobProto()
    blob.data.extend(array.ravel().tolist())
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    return blob


def caffemodel_bytes(weights: Weights, v1: bool = False, name: str = "cnn-vis") -> bytes:
    """A serialised NetParameter holding `weights` (in V1 `layers` or current `layer` fields)."""
    net = pb.NetParameter(name=name)
    for layer_name, arrays in weights.items():
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = layer_name
        layer.blobs.extend(blob_proto(a, legacy=v1) for a in arrays)
    return net.SerializeToString()


def write_caffemodel(path: str | Path, weights: Weights, v1: bool = False) -> Path:
    """Write `weights` as a caffemodel file at `path`; returns the path."""
    path = Path(path)
    path.write_bytes(caffemodel_bytes(weights, v1=v1))
    return path


def network_weights(network: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """The weights of a `CaffeNet` as `write_caffemodel` takes them (layers without weights left out)."""
    weights = {}
    for layer in network.layers:
        blobs = [blob for _, blob in layer.named_buffers(recurse=False)]
        if blobs:
            weights[layer.name] = blobs
    return weights
