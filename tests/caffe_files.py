"""Writing small Caffe files for tests, through the project's own caffe.proto."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnvis.caffe import caffe_pb2 as pb


def blob_proto(array: np.ndarray, legacy: bool = False) -> pb.BlobProto:
    """A BlobProto holding `array`; `legacy` writes the old num/channels/height/width shape."""
    blob = pb.BlobProto()
    blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    if legacy:
        shape = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = shape
    else:
        blob.shape.dim.extend(array.shape)
    return blob


def caffemodel_bytes(weights: dict[str, list[np.ndarray]], v1: bool = False) -> bytes:
    """Serialised NetParameter with the given layer weights (V1 `layers` or current `layer`)."""
    net = pb.NetParameter(name="test")
    for name, arrays in weights.items():
        layer = net.layers.add() if v1 else net.layer.add()
        layer.name = name
        layer.blobs.extend(blob_proto(a, legacy=v1) for a in arrays)
    return net.SerializeToString()


def write_model(tmp_path: Path, prototxt: str, weights: dict[str, list[np.ndarray]],
                v1: bool = False) -> tuple[Path, Path]:
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(prototxt)
    model = tmp_path / "weights.caffemodel"
    model.write_bytes(caffemodel_bytes(weights, v1=v1))
    return deploy, model
