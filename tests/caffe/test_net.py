"""Whole Caffe networks: files written by the test (current and V1 format) and a real model."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as samples

from cnnvis.caffe import (CaffeNet, caffe_pb2 as pb, load_caffe_net, parse_prototxt,
                          read_caffemodel, read_prototxt)
from cnnvis.errors import UserError
from cnnvis.googlenet import googlenet_deploy
from tests.caffe_files import NSFW_FOLDER, PLAIN_CNN, RESIDUAL, needs_nsfw, write_model

RNG = np.random.default_rng(1)

TINY = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2
        weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 } }
layer { name: "branch_a" type: "Convolution" bottom: "norm1" top: "branch_a"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "branch_b" type: "Convolution" bottom: "norm1" top: "branch_b"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layer { name: "relu_b" type: "ReLU" bottom: "branch_b" top: "branch_b" }
layer { name: "cat" type: "Concat" bottom: "branch_a" bottom: "branch_b" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

# The same network in the legacy V1 format, with the legacy input declaration.
TINY_V1 = """
name: "tiny"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 12 input_dim: 12
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
         convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 } }
layers { name: "branch_a" type: CONVOLUTION bottom: "norm1" top: "branch_a"
         convolution_param { num_output: 2 kernel_size: 1 } }
layers { name: "branch_b" type: CONVOLUTION bottom: "norm1" top: "branch_b"
         convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
layers { name: "relu_b" type: RELU bottom: "branch_b" top: "branch_b" }
layers { name: "cat" type: CONCAT bottom: "branch_a" bottom: "branch_b" top: "cat" }
layers { name: "pool2" type: POOLING bottom: "cat" top: "pool2"
         pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool2" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def tiny_weights() -> dict[str, list[np.ndarray]]:
    def normal(*shape):
        return RNG.normal(scale=0.5, size=shape).astype(np.float32)
    return {
        "conv1": [normal(4, 3, 3, 3), normal(4)],
        "branch_a": [normal(2, 4, 1, 1), normal(2)],
        "branch_b": [normal(3, 4, 3, 3), normal(3)],
        "fc": [normal(5, 5 * 2 * 2), normal(5)],
        "unused_layer": [normal(7)],  # caffemodel layers absent from the prototxt are ignored
    }


def tiny_direct(x: torch.Tensor, w: dict) -> dict[str, torch.Tensor]:
    """The tiny net written out directly with PyTorch and hand-computed Caffe pooling sizes."""
    t = {k: [torch.from_numpy(a).to(x.dtype) for a in v] for k, v in w.items()}
    conv1 = F.relu(F.conv2d(x, *t["conv1"], stride=2, padding=1))            # 6x6
    pool1 = F.max_pool2d(conv1, 2, 2)                                         # 3x3 (exact fit)
    norm1 = pool1 / (1 + 0.1 / 3 * F.pad(pool1 ** 2, (0, 0, 0, 0, 1, 1))
                     .unfold(1, 3, 1).sum(-1)) ** 0.75
    cat = torch.cat([F.conv2d(norm1, *t["branch_a"]),
                     F.relu(F.conv2d(norm1, *t["branch_b"], padding=1))], dim=1)
    # AVE 3x3 stride 2 pad 1 on 3x3: Caffe gives 2x2 (ceil((3+2-3)/2)+1); windows start -1, 1,
    # end min(start+3, 4) = 2, 4 -> divisor 3 on each axis, sums over the image part only.
    sums = F.avg_pool2d(F.pad(cat, (1, 1, 1, 1)), 3, 2, divisor_override=1)
    pool2 = sums / 9
    fc = F.linear(pool2.flatten(1), *t["fc"])
    return {"conv1": conv1, "pool1": pool1, "norm1": norm1, "cat": cat, "pool2": pool2,
            "fc": fc, "prob": torch.softmax(fc, dim=1)}


@pytest.mark.parametrize("v1", [False, True], ids=["current", "v1"])
def test_tiny_net_from_files_matches_direct_computation(tmp_path, v1):
    weights = tiny_weights()
    net = load_caffe_net(*write_model(tmp_path, TINY_V1 if v1 else TINY, weights, v1=v1))
    assert net.input_size == (12, 12)
    assert net.blob_names == ["conv1", "pool1", "norm1", "branch_a", "branch_b", "cat",
                              "pool2", "fc", "prob"]
    x = torch.from_numpy(RNG.normal(size=(2, 3, 12, 12)).astype(np.float32))
    expected = tiny_direct(x.double(), weights)
    with torch.no_grad():
        blobs = net.blobs(x)
        for name, value in expected.items():
            np.testing.assert_allclose(blobs[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=name)
            np.testing.assert_array_equal(net(x, name).numpy(), blobs[name].numpy())


@pytest.mark.parametrize("target", ["norm1", "cat", "fc"])
def test_input_gradient_matches_finite_differences(tmp_path, target):
    net = load_caffe_net(*write_model(tmp_path, TINY, tiny_weights())).double()
    x = torch.from_numpy(RNG.normal(size=(1, 3, 12, 12))).requires_grad_(True)
    top_grad = torch.from_numpy(RNG.normal(size=tuple(net(x, target).shape)))
    net(x, target).backward(top_grad)
    assert all(not b.requires_grad for b in net.buffers())
    eps = 1e-6
    for index in [(0, 0, 0, 0), (0, 1, 5, 7), (0, 2, 11, 3), (0, 0, 6, 6)]:
        plus, minus = x.detach().clone(), x.detach().clone()
        plus[index] += eps
        minus[index] -= eps
        with torch.no_grad():
            numeric = ((net(plus, target) - net(minus, target)) * top_grad).sum() / (2 * eps)
        assert x.grad[index].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8)


def test_target_runs_only_the_layers_it_needs(tmp_path):
    net = load_caffe_net(*write_model(tmp_path, TINY, tiny_weights()))
    ran = []
    for layer in net.layers:
        layer.register_forward_hook(lambda module, inputs, outputs: ran.append(module.name))
    net(torch.zeros(1, 3, 12, 12), "branch_a")
    # relu1 after pool1: see test_a_relu_before_a_max_pool_runs_after_it_to_the_same_bits.
    assert ran == ["conv1", "pool1", "relu1", "norm1", "branch_a"]


def test_in_place_blob_holds_value_after_in_place_layer(tmp_path):
    net = load_caffe_net(*write_model(tmp_path, TINY, tiny_weights()))
    with torch.no_grad():
        conv1 = net(torch.from_numpy(RNG.normal(size=(4, 3, 12, 12)).astype(np.float32)), "conv1")
    assert conv1.min() == 0 and conv1.max() > 0  # post-ReLU, like Caffe's blob


def test_unknown_blob_suggests_close_names(tmp_path):
    net = load_caffe_net(*write_model(tmp_path, TINY, tiny_weights()))
    with pytest.raises(UserError, match=r"no blob named 'branch_c'.*branch_a"):
        net(torch.zeros(1, 3, 12, 12), "branch_c")


def test_input_shape_field_and_phase_rules(tmp_path):
    text = TINY.replace(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }',
        'input: "data" input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }\n'
        'layer { name: "train_only" type: "Data" top: "data" include { phase: TRAIN } }')
    net = load_caffe_net(*write_model(tmp_path, text, tiny_weights()))
    assert net.input_shape == (3, 12, 12)


def test_corrupt_and_wrong_files_are_clear_errors(tmp_path):
    deploy, model = write_model(tmp_path, TINY, tiny_weights())
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(model.read_bytes()[:-50])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_caffemodel(truncated)
    with pytest.raises(UserError, match="not a Caffe .caffemodel|no layer weights"):
        read_caffemodel(deploy)
    with pytest.raises(UserError, match="no such file"):
        read_prototxt(tmp_path / "missing.prototxt")
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: Convolution\n}\n')
    with pytest.raises(UserError, match=r"line 4, column \d+"):
        read_prototxt(bad)
    with pytest.raises(UserError, match="binary"):
        read_prototxt(model)


# ------------------------------------------------------ a real Caffe model

@needs_nsfw
def test_open_nsfw_resnet50_from_the_nsfw_package():
    """Yahoo's open_nsfw (BatchNorm, Scale, Eltwise): ordinary photos are safe for work."""
    folder = NSFW_FOLDER
    net = load_caffe_net(folder / "deploy.prototxt", folder / "resnet_50_1by2_nsfw.caffemodel")
    mean_bgr = np.array([104, 117, 123], np.float32)   # the package's own preprocessing
    batch = []
    for name in ["coffee", "chelsea", "astronaut"]:
        rgb = Image.fromarray(getattr(samples, name)()).resize((224, 224), Image.BICUBIC)
        bgr = np.asarray(rgb, np.float32)[..., ::-1] - mean_bgr
        batch.append(bgr.transpose(2, 0, 1))
    with torch.no_grad():
        prob = net(torch.from_numpy(np.stack(batch)), "prob").numpy()
    assert prob.shape == (3, 2)
    np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
    assert (prob[:, 1] < 0.5).all(), prob


# ------------------------------------------------------ shapes without running

def _networks_to_shape() -> dict[str, pb.NetParameter]:
    networks = {"tiny": TINY, "tiny_v1": TINY_V1, "plain_cnn": PLAIN_CNN, "residual": RESIDUAL}
    parsed = {name: parse_prototxt(text) for name, text in networks.items()}
    parsed["googlenet"] = googlenet_deploy()
    if NSFW_FOLDER is not None:
        parsed["open_nsfw"] = read_prototxt(NSFW_FOLDER / "deploy.prototxt")
    return parsed


@pytest.mark.parametrize("name, net", _networks_to_shape().items())
def test_builders_compute_the_shapes_that_running_makes(name, net):
    network = CaffeNet(net, None).eval()
    with torch.no_grad():
        blobs = network.blobs(torch.zeros((1,) + network.input_shape))
    assert {blob: tuple(value.shape) for blob, value in blobs.items()} == network.blob_shapes


RELU_THEN_POOL = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 15 dim: 15 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "leaky" type: "ReLU" bottom: "pool" top: "leaky" relu_param { negative_slope: 0.1 } }
layer { name: "pool2" type: "Pooling" bottom: "leaky" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""


def test_a_relu_before_a_max_pool_runs_after_it_to_the_same_bits():
    """max(relu(x)) = relu(max(x)): the plan pools first (the ReLU then works on the smaller
    blob), with the same values and input gradient, to the bit, as every layer in order."""
    net = CaffeNet(parse_prototxt(RELU_THEN_POOL), None)
    names = lambda target: [net.layers[step.layer].name for step in net._plan((target,))]
    assert names("pool") == ["conv", "pool", "relu"]
    assert names("conv") == ["conv", "relu"]                      # the ReLU's own output
    assert names("pool2") == ["conv", "pool", "relu", "leaky", "pool2"]  # a slope: kept
    x = torch.randn(4, 3, 15, 15, generator=torch.Generator().manual_seed(0))
    for target in ("pool", "pool2", "conv"):
        planned = x.clone().requires_grad_(True)
        value = net.forward(planned, target)
        in_order = x.clone().requires_grad_(True)
        expected = net.blobs(in_order)[target]                  # every layer, in order
        assert torch.equal(value, expected)
        top = torch.randn(value.shape, generator=torch.Generator().manual_seed(1))
        (value * top).sum().backward()
        (expected * top).sum().backward()
        assert torch.equal(planned.grad, in_order.grad)
    assert (net.forward(x, "pool") <= 0).any() and (net.forward(x, "conv") >= 0).all()
