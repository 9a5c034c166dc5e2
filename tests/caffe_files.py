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


# A tiny network for end-to-end runs of the command line (16x16 input; target `conv2`).
TINY_DREAM_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
"""


def tiny_dream_weights() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return {"conv1": [rng.normal(0, 0.1, (6, 3, 3, 3)), rng.normal(0, 1, 6)],
            "conv2": [rng.normal(0, 0.3, (8, 6, 3, 3)), rng.normal(0, 1, 8)]}
