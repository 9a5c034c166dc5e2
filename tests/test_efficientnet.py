"""EfficientNet-Lite0: architecture, ImageNet predictions, partial forward, gradients."""
import copy

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from cnnvis.efficientnet import (
    EFFICIENTNET_LITE0_DEFAULT_LAYER, INPUT_MEAN, INPUT_SCALE, EfficientNetLite0,
    _tf_same_padding, load_efficientnet_lite0,
)
from cnnvis.errors import UserError


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    return load_efficientnet_lite0()


def _network_input(rgb: np.ndarray, size: tuple[int, int] = (224, 224)) -> torch.Tensor:
    """A uint8 RGB image (H, W, 3) resized with Pillow's bicubic, as (1, 3, h, w) network input."""
    height, width = size
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC), np.float32)
    return torch.from_numpy((resized - INPUT_MEAN) / INPUT_SCALE).permute(2, 0, 1)[None]


def test_parameters_match_efficientnet_lite0(model):
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert model._conv_stem.weight.shape == (32, 3, 3, 3)
    assert model._conv_head.weight.shape == (1280, 320, 1, 1)
    assert model._fc.weight.shape == (1000, 1280)
    assert len(model._blocks) == 16
    kernels = [block._depthwise_conv.kernel_size[0] for block in model._blocks]
    assert kernels == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert model._blocks[0]._expand_conv is None  # stage 1 has expand ratio 1
    assert all(bn.eps == 1e-3 for bn in model.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_model_is_frozen_and_in_eval_mode(model):
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(b.requires_grad for b in model.buffers())
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("image, imagenet_class, probability", [
    ("chelsea", 285, 0.77),  # Egyptian cat
    ("coffee", 967, 0.90),   # espresso
])
def test_classifies_imagenet_like_tensorflow(model, image, imagenet_class, probability):
    x = _network_input(getattr(skimage.data, image)())
    prob = model(x, "prob")[0]
    assert prob.argmax().item() == imagenet_class
    assert prob[imagenet_class].item() == pytest.approx(probability, abs=0.02)
    assert prob.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_blob_names_are_in_network_order(model):
    assert model.blob_names[:3] == ["stem", "stage1/block1", "stage2/block1"]
    assert model.blob_names[-5:] == ["stage7/block1", "head", "pool", "logits", "prob"]
    assert len(model.blob_names) == 1 + 16 + 4
    assert EFFICIENTNET_LITE0_DEFAULT_LAYER in model.blob_names
    assert model.input_size == (224, 224)


def test_blob_shapes_at_224(model):
    shapes = {name: tuple(blob.shape) for name, blob in model.blobs(torch.zeros(2, 3, 224, 224)).items()}
    assert list(shapes) == model.blob_names
    assert shapes["stem"] == (2, 32, 112, 112)
    # The last block of each stage: channels and total stride 2, 4, 8, 16, 16, 32, 32.
    assert shapes["stage1/block1"] == (2, 16, 112, 112)
    assert shapes["stage2/block2"] == (2, 24, 56, 56)
    assert shapes["stage3/block2"] == (2, 40, 28, 28)
    assert shapes["stage4/block3"] == (2, 80, 14, 14)
    assert shapes["stage5/block3"] == (2, 112, 14, 14)
    assert shapes["stage6/block4"] == (2, 192, 7, 7)
    assert shapes["stage7/block1"] == (2, 320, 7, 7)
    assert shapes["head"] == (2, 1280, 7, 7)
    assert shapes["pool"] == (2, 1280, 1, 1)
    assert shapes["logits"] == shapes["prob"] == (2, 1000)


def test_other_input_sizes_follow_tensorflow_same_padding(model):
    blobs = model.blobs(torch.zeros(1, 3, 240, 320))
    assert blobs["stem"].shape[-2:] == (120, 160)
    assert blobs["stage4/block1"].shape[-2:] == (15, 20)
    assert blobs["stage6/block1"].shape[-2:] == (8, 10)  # ceil(15 / 2): odd sizes round up
    assert blobs["prob"].shape == (1, 1000)


def test_tf_same_padding_puts_the_extra_pixel_after():
    assert _tf_same_padding(224, kernel_size=3, stride=2) == (0, 1)
    assert _tf_same_padding(224, kernel_size=5, stride=2) == (1, 2)
    assert _tf_same_padding(225, kernel_size=3, stride=2) == (1, 1)
    assert _tf_same_padding(15, kernel_size=5, stride=1) == (2, 2)


@pytest.mark.parametrize("target", ["stem", "stage3/block1", EFFICIENTNET_LITE0_DEFAULT_LAYER, "logits"])
def test_forward_to_target_equals_that_blob(model, target):
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model(x, target), model.blobs(x)[target], rtol=0, atol=0)


def test_forward_stops_at_the_target(model):
    calls = []
    hook = model._conv_head.register_forward_hook(lambda *_: calls.append("head"))
    try:
        model(torch.zeros(1, 3, 64, 64), "stage7/block1")
        assert calls == []
        model(torch.zeros(1, 3, 64, 64), "head")
        assert calls == ["head"]
    finally:
        hook.remove()


def test_unknown_target_names_it_and_suggests_close_names(model):
    with pytest.raises(UserError, match=r"'stage4/blok3'.*closest: stage4/block3.*--target_layer"):
        model(torch.zeros(1, 3, 64, 64), "stage4/blok3")


def test_input_gradient_matches_finite_differences(model):
    model64 = copy.deepcopy(model).double()
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    target = "stage3/block2"
    x.requires_grad_(True)
    model64(x, target).sum().backward()
    step = 1e-6
    for channel, row, column in [(0, 5, 7), (2, 20, 33)]:
        plus, minus = x.detach().clone(), x.detach().clone()
        plus[0, channel, row, column] += step
        minus[0, channel, row, column] -= step
        with torch.no_grad():
            numeric = (model64(plus, target).sum() - model64(minus, target).sum()) / (2 * step)
        assert x.grad[0, channel, row, column].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-7)
