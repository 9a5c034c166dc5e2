"""A network ready for cnn-vis: its input convention, mean colour, labels and device.

The optimiser, regularisers and their default strengths always work on BGR pixels minus
the model's mean colour (in 0..255 units). `VisModel` converts that to whatever the
network expects (RGB, other offsets, a scale) inside the autograd graph, so gradients come
back in cnn-vis' units and the README's parameter values mean the same on every model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnvis.errors import UserError
from cnnvis.network import BlobNetwork
from cnnvis.objectives import Objective


@dataclass(frozen=True)
class InputConvention:
    """How a network wants its pixels: channel order, then (pixel - offset) / scale.

    `offset` is per channel in the network's channel order, in 0..255 units.
    """

    channel_order: str = "BGR"            # "BGR" (Caffe) or "RGB"
    offset: tuple[float, float, float] | None = None  # None: the model's mean colour
    scale: float = 1.0


class VisModel:
    """A `BlobNetwork` plus what it takes to feed it cnn-vis images and read its outputs."""

    def __init__(self, network: BlobNetwork, name: str, mean_bgr: tuple[float, float, float],
                 convention: InputConvention = InputConvention(),
                 labels: list[str] | None = None, device: torch.device = torch.device("cpu")):
        self.network = network.to(device)
        self.name = name
        self.mean_bgr = tuple(float(m) for m in mean_bgr)
        self.labels = labels
        self.device = device
        self.input_size: tuple[int, int] = tuple(network.input_size)
        rgb = convention.channel_order == "RGB"
        offset_bgr = self.mean_bgr if convention.offset is None else (
            tuple(reversed(convention.offset)) if rgb else convention.offset)
        # network input = (x + mean - offset) / scale, channels flipped for RGB networks.
        shift = [m - o for m, o in zip(self.mean_bgr, offset_bgr)]
        self._shift = (torch.tensor(shift, device=device).view(1, 3, 1, 1)
                       if any(shift) else None)
        self._scale = convention.scale
        self._flip = rgb

    @property
    def blob_names(self) -> list[str]:
        return self.network.blob_names

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """cnn-vis image (N, 3, H, W), BGR minus the mean colour -> the network's input."""
        if self._shift is not None:
            x = x + self._shift
        if self._scale != 1:
            x = x / self._scale
        return x.flip(1) if self._flip else x

    def check_target(self, target: str) -> tuple[int, ...]:
        """The target blob's shape for one input-sized tile; a clear error for unknown names."""
        with torch.no_grad():
            tile = torch.zeros((1, 3) + self.input_size, device=self.device)
            return tuple(self.network.forward(self.network_input(tile), target).shape)

    def objective_gradient(self, tiles: torch.Tensor, target: str,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over tiles, d loss / d tiles) for tiles (N, 3, h, w) in cnn-vis units."""
        with torch.enable_grad():
            x = tiles.detach().requires_grad_(True)
            blob = self.network.forward(self.network_input(x), target)
            loss, top_gradient = objective(blob.detach())
            blob.backward(top_gradient)
        return loss.detach(), x.grad

    def classify(self, image: torch.Tensor, top: int = 5) -> list[tuple[int, float, str]]:
        """The `top` largest outputs of the network's last blob: (index, value, label)."""
        last = self.blob_names[-1]
        with torch.no_grad():
            scores = self.network.forward(self.network_input(image.to(self.device)), last)
        scores = scores.reshape(scores.shape[0], -1)[0]
        if scores.numel() < top:
            raise UserError(f"the last blob '{last}' has {scores.numel()} values; "
                            "--classify needs a classification network.")
        values, indices = scores.topk(top)
        return [(int(i), float(v), self.labels[i] if self.labels and i < len(self.labels) else "")
                for v, i in zip(values.tolist(), indices.tolist())]
