"""GoogLeNet built in code: its layer list file, structure, blob shapes, parameter count and
partial forward; and the class label files."""
from collections import Counter
from pathlib import Path

import pytest
import torch

from cnnvis.caffe import CaffeNet
from cnnvis.googlenet import googlenet_deploy

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "cnnvis" / "data"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def net() -> CaffeNet:
    return CaffeNet(googlenet_deploy(), None, seed=0).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def blobs(net, image) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return net.blobs(image)


def test_layer_list_file_is_the_networks_blob_names(net):
    names = _lines(REPO_ROOT / "googlenet_layers.txt")
    assert names == net.blob_names
    # 7 stem blobs, 8 per Inception module (6 convolutions, pool, output), pool3-5,
    # classifier and prob.
    assert len(names) == 7 + 9 * 8 + 3 + 2 == 84
    assert names[0] == "conv1/7x7_s2" and names[-1] == "prob"
    assert "data" not in names  # the input is not a target
    assert "pool5/drop_7x7_s1" not in names  # in-place layers write existing blobs


def test_layer_types_and_count():
    layers = googlenet_deploy().layer
    assert len(layers) == 143  # as in Caffe's deploy.prototxt, Input layer included
    assert Counter(layer.type for layer in layers) == {
        "Input": 1, "Convolution": 57, "ReLU": 57, "Pooling": 14, "LRN": 2,
        "Concat": 9, "Dropout": 1, "InnerProduct": 1, "Softmax": 1,
    }
    in_place = [layer.name for layer in layers if list(layer.top) == list(layer.bottom)]
    assert len(in_place) == 57 + 1  # every ReLU, and the Dropout
    assert {layer.name: layer.dropout_param.dropout_ratio for layer in layers
            if layer.type == "Dropout"} == {"pool5/drop_7x7_s1": pytest.approx(0.4)}


def test_places365_variant_differs_only_in_the_classifier():
    imagenet, places = googlenet_deploy(), googlenet_deploy(365, "GoogleNet-Places365")
    differing = [a.name for a, b in zip(imagenet.layer, places.layer) if a != b]
    assert differing == ["loss3/classifier"]
    assert places.layer[-2].inner_product_param.num_output == 365
    assert places.name == "GoogleNet-Places365"


@pytest.mark.parametrize("blob, shape", [
    ("conv1/7x7_s2", (1, 64, 112, 112)),
    ("pool1/3x3_s2", (1, 64, 56, 56)),     # Caffe's ceil rounding: (112 - 3) / 2 -> 55 + 1
    ("pool2/3x3_s2", (1, 192, 28, 28)),
    ("inception_3a/output", (1, 256, 28, 28)),  # 64 + 128 + 32 + 32
    ("inception_4d/3x3_reduce", (1, 144, 14, 14)),
    ("inception_4e/output", (1, 832, 14, 14)),  # 256 + 320 + 128 + 128
    ("inception_5b/output", (1, 1024, 7, 7)),
    ("pool5/7x7_s1", (1, 1024, 1, 1)),
    ("loss3/classifier", (1, 1000)),
    ("prob", (1, 1000)),
])
def test_blob_shapes_at_224(blobs, blob, shape):
    assert tuple(blobs[blob].shape) == shape


def test_parameter_count(net):
    # Convolution weights and biases: stem 9,472 + 4,160 + 110,784 = 124,416; the nine
    # Inception modules 5,849,136; classifier 1024 * 1000 + 1000 = 1,025,000.
    classifier = dict(zip([layer.name for layer in net.layers], net.layers))["loss3/classifier"]
    assert sum(b.numel() for b in classifier.buffers()) == 1_025_000
    assert sum(b.numel() for b in net.buffers()) == 124_416 + 5_849_136 + 1_025_000 == 6_998_552


def test_probabilities_sum_to_one(blobs):
    assert blobs["prob"].sum().item() == pytest.approx(1.0, abs=1e-5)


def test_inception_4d_3x3_reduce_is_post_relu(blobs):
    # The ReLU writes the convolution's blob in place, so the name means the rectified value.
    value = blobs["inception_4d/3x3_reduce"]
    assert value.min().item() == 0.0
    assert 0.05 < (value > 0).float().mean().item() < 0.95  # a real mix of zeros and positives


def test_running_to_a_blob_runs_only_the_layers_it_needs(net, image, blobs):
    called = []
    hooks = [layer.register_forward_hook(lambda module, args, out: called.append(module.name))
             for layer in net.layers]
    try:
        with torch.no_grad():
            value = net(image, "inception_4d/3x3_reduce")
    finally:
        for hook in hooks:
            hook.remove()
    # Stem (10 layers), five whole modules 3a-4c (14 each), pool3, then 4d's reduce and its ReLU.
    assert len(called) == 10 + 5 * 14 + 1 + 2 == 83 < len(net.layers) == 142
    assert called[-2:] == ["inception_4d/3x3_reduce", "inception_4d/relu_3x3_reduce"]
    assert "inception_4d/1x1" not in called and "inception_4d/pool" not in called
    torch.testing.assert_close(value, blobs["inception_4d/3x3_reduce"])


def test_imagenet_labels():
    labels = _lines(DATA_DIR / "imagenet_labels.txt")
    assert len(labels) == len(set(labels)) == 1000
    assert (labels[0], labels[285], labels[967], labels[999]) == (
        "tench", "Egyptian cat", "espresso", "toilet tissue")
    # The two names WordNet's first lemmas share are told apart (torchvision's names).
    assert (labels[134], labels[517], labels[638], labels[639]) == (
        "crane bird", "crane", "maillot", "maillot tank suit")


def test_places365_labels():
    labels = _lines(DATA_DIR / "places365_labels.txt")
    assert len(labels) == len(set(labels)) == 365
    assert (labels[0], labels[8], labels[203], labels[313], labels[364]) == (
        "airfield", "apartment_building/outdoor", "kitchen", "stadium/football", "zen_garden")
