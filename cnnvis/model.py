"""A network ready for cnn-vis: its input convention, mean colour, labels, device and engine.

The optimiser, regularisers and their default strengths always work on BGR pixels minus
the model's mean colour (in 0..255 units). `VisModel` converts that to whatever the
network expects (RGB, other offsets, a scale) and carries gradients back through the
conversion, so they come back in cnn-vis' units and the README's parameter values mean
the same on every model.

What runs the network itself is an `Engine` (`cnnvis.engine`): PyTorch for any
`BlobNetwork`, or real Caffe. `cnnvis.load_model` returns a `VisModel`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnvis.engine import Engine, TorchEngine
from cnnvis.imageio import as_photo
from cnnvis.network import BlobNetwork
from cnnvis.objectives import Objective
from cnnvis.pixels import resize_rgb, rgb_to_image


@dataclass(frozen=True)
class InputConvention:
    """How a network wants its pixels: channel order, then (pixel - offset) / scale.

    `offset`, and `scale` where it is per channel (torchvision's std), are in the network's
    channel order, in 0..255 units.
    """

    channel_order: str = "BGR"            # "BGR" (Caffe) or "RGB"
    offset: tuple[float, float, float] | None = None  # None: the model's mean colour
    scale: float | tuple[float, float, float] = 1.0


class VisModel:
    """An engine plus what it takes to feed it cnn-vis images and read its outputs."""

    def __init__(self, network: Engine | BlobNetwork, name: str,
                 mean_bgr: tuple[float, float, float],
                 convention: InputConvention = InputConvention(),
                 labels: list[str] | None = None, device: torch.device = torch.device("cpu"),
                 default_layer: str | None = None,
                 googlenet_counterpart: Callable[[str], str | None] | None = None):
        """`network` is an engine, or a `BlobNetwork` to run with PyTorch on `device`.

        `labels` name the outputs of the last blob; they are dropped when their number
        differs from the blob's size (a preset's labels with the user's own network).
        `default_layer` is the blob a dream amplifies when none is named;
        `googlenet_counterpart` maps a GoogLeNet blob name to this network's blob, for
        presets that offer it.
        """
        self.default_layer = default_layer
        self.googlenet_counterpart = googlenet_counterpart
        self.engine: Engine = (network if isinstance(network, Engine)
                               else TorchEngine(network, device))
        self.name = name
        self.mean_bgr = tuple(float(m) for m in mean_bgr)
        self.device = device
        self.input_size: tuple[int, int] = tuple(self.engine.input_size)
        rgb = convention.channel_order == "RGB"
        offset_bgr = self.mean_bgr if convention.offset is None else (
            tuple(reversed(convention.offset)) if rgb else convention.offset)
        # network input = (x + mean - offset) / scale, channels flipped for RGB networks.
        shift = [m - o for m, o in zip(self.mean_bgr, offset_bgr)]
        self._shift = (torch.tensor(shift, device=device).view(1, 3, 1, 1)
                       if any(shift) else None)
        self._scaled = convention.scale != 1
        self._scale = (convention.scale if not isinstance(convention.scale, tuple) else
                       torch.tensor(convention.scale[::-1] if rgb else convention.scale,
                                    device=device).view(1, 3, 1, 1))   # BGR, as x is
        self._flip = rgb
        self.labels = labels if labels and math.prod(
            self.check_target(self.blob_names[-1])) == len(labels) else None

    def __repr__(self) -> str:
        height, width = self.input_size
        return (f"VisModel({self.name!r}, input {height}x{width}, {len(self.blob_names)} layers, "
                f"default layer {self.default_layer!r}, device {self.device})")

    @property
    def blob_names(self) -> list[str]:
        return self.engine.blob_names

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """cnn-vis image (N, 3, H, W), BGR minus the mean colour -> the network's input."""
        if self._shift is not None:
            x = x + self._shift
        if self._scaled:
            x = x / self._scale
        return x.flip(1) if self._flip else x

    def layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """(blob name, shape) of every targetable blob, in network order; shapes are (C, ...)
        for one image of the network's input size."""
        return list(self.engine.blob_shapes().items())

    def check_target(self, target: str) -> tuple[int, ...]:
        """The target blob's shape for one input-sized tile; a clear error for unknown names."""
        tile = torch.zeros((1, 3) + self.input_size, device=self.device)
        return tuple(self.blob(tile, target).shape)

    def blob(self, image: torch.Tensor, target: str) -> torch.Tensor:
        """Blob `target` (N, C, ...) of a cnn-vis image (N, 3, H, W); no gradient."""
        return self.engine.forward(self.network_input(image.to(self.device)), target)

    def objective_gradient(self, tiles: torch.Tensor,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over tiles, d loss / d tiles) for tiles (N, 3, h, w) in cnn-vis units."""
        loss, input_gradient = self.engine.objective_gradient(
            self.network_input(tiles.detach()), objective)
        # The chain rule through network_input, backwards: flip, then divide by the scale.
        if self._flip:
            input_gradient = input_gradient.flip(1)
        if self._scaled:
            input_gradient = input_gradient / self._scale
        return loss, input_gradient

    def classify(self, image: str | Path | Image.Image | np.ndarray,
                 top: int = 5) -> list[tuple[int, float, str]]:
        """The `top` largest outputs of the network's last blob, largest first, as
        (index, value, label); all of them when the blob has fewer (a two-output head).

        `image` is a file path, a PIL image or a uint8 RGB array (H, W, 3); it is
        resized to the network input.
        """
        tensor = rgb_to_image(resize_rgb(as_photo(image, "--classify"), self.input_size),
                              self.mean_bgr)
        scores = self.blob(tensor, self.blob_names[-1])
        scores = scores.reshape(scores.shape[0], -1)[0]
        values, indices = scores.topk(min(top, scores.numel()))
        return [(int(i), float(v), self.labels[i] if self.labels and i < len(self.labels) else "")
                for v, i in zip(values.tolist(), indices.tolist())]
