"""A network ready for cnn-vis: its input convention, mean colour, labels, device and engine.

The optimiser, regularisers and their default strengths always work on BGR pixels minus
the model's mean colour (in 0..255 units). `VisModel` converts that to whatever the
network expects (RGB, other offsets, a scale) and carries gradients back through the
conversion, so they come back in cnn-vis' units and the README's parameter values mean
the same on every model.

What runs the network itself is an `Engine`: PyTorch (`TorchEngine`, for any
`BlobNetwork`) or real Caffe (`cnnvis.pycaffe_engine.CaffeEngine`). An engine sees only
network inputs; it returns blob values and the gradient of an objective with respect
to its input, which `VisModel` carries back through the input conversion.
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class Engine(Protocol):
    """What runs a network for cnn-vis, on inputs in the network's own convention."""

    input_size: tuple[int, int]   # (height, width) the network was trained on
    blob_names: list[str]         # targetable blobs, in network order (input excluded)

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """The values of blob `target` for input x (N, 3, H, W), on x's device; no gradient."""
        ...

    def objective_gradient(self, x: torch.Tensor, target: str,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over the batch, d loss / d x) for input x (N, 3, H, W), on x's device.

        The gradient is the objective's top gradient back-propagated from blob `target`.
        """
        ...


class TorchEngine:
    """An `Engine` that runs a `BlobNetwork` with PyTorch autograd, on `device`.

    Weights and inputs are kept channels-last (NHWC): the convolution libraries behind
    PyTorch (oneDNN on CPUs, cuDNN) run faster on it and skip layout conversions.
    On a CPU, gradients are computed `CPU_TILES_PER_RUN` tiles at a time, however many the
    optimiser sends: memory then grows with the image, not with --batch_size, and on a
    2-core CPU 4 to 25 tiles per run are equally fast per tile. A GPU takes the whole
    batch at once, as --batch_size says.
    """

    CPU_TILES_PER_RUN = 8

    def __init__(self, network: BlobNetwork, device: torch.device = torch.device("cpu")):
        self.network = network.to(device, memory_format=torch.channels_last)
        self.input_size: tuple[int, int] = tuple(network.input_size)
        self.blob_names: list[str] = network.blob_names
        self.tiles_per_run = self.CPU_TILES_PER_RUN if device.type == "cpu" else None
        if device.type == "cpu":
            keep_freed_memory()

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        with torch.no_grad():
            return self.network.forward(x.contiguous(memory_format=torch.channels_last), target)

    def objective_gradient(self, x: torch.Tensor, target: str,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        losses, gradients = [], []
        with torch.enable_grad():
            for tiles in x.detach().split(self.tiles_per_run or len(x)):
                tiles = tiles.contiguous(memory_format=torch.channels_last).requires_grad_(True)
                blob = self.network.forward(tiles, target)
                loss, top_gradient = objective(blob.detach())
                # Backward from the scalar <blob, top_gradient>: the same gradient, and unlike
                # blob.backward(top_gradient) its first call imports no symbolic-shape
                # machinery (half a second of start-up).
                (blob * top_gradient).sum().backward()
                losses.append(loss.detach())
                gradients.append(tiles.grad)
        return sum(losses), torch.cat(gradients)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of returning them to the OS.

    By default it gives large freed blocks back, and the next tile run takes them again
    page by page: some 40,000 page faults per GoogLeNet tile-step of 8 tiles, which keeping
    them makes 1.07x to 1.65x faster, for no less peak memory (benchmarks/bench.py, section
    [allocator]). No-op where the C library is not glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mmap_threshold, trim_threshold = -3, -1  # glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
    mallopt(mmap_threshold, 1 << 30)
    mallopt(trim_threshold, 1 << 30)


class VisModel:
    """An engine plus what it takes to feed it cnn-vis images and read its outputs."""

    def __init__(self, network: Engine | BlobNetwork, name: str,
                 mean_bgr: tuple[float, float, float],
                 convention: InputConvention = InputConvention(),
                 labels: list[str] | None = None, device: torch.device = torch.device("cpu")):
        """`network` is an engine, or a `BlobNetwork` to run with PyTorch on `device`.

        `labels` name the outputs of the last blob; they are dropped when their number
        differs from the blob's size (a preset's labels with the user's own network).
        """
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
        self._scale = convention.scale
        self._flip = rgb
        self.labels = labels if labels and math.prod(
            self.check_target(self.blob_names[-1])) == len(labels) else None

    @property
    def blob_names(self) -> list[str]:
        return self.engine.blob_names

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """cnn-vis image (N, 3, H, W), BGR minus the mean colour -> the network's input."""
        if self._shift is not None:
            x = x + self._shift
        if self._scale != 1:
            x = x / self._scale
        return x.flip(1) if self._flip else x

    def check_target(self, target: str) -> tuple[int, ...]:
        """The target blob's shape for one input-sized tile; a clear error for unknown names."""
        tile = torch.zeros((1, 3) + self.input_size, device=self.device)
        return tuple(self.engine.forward(self.network_input(tile), target).shape)

    def objective_gradient(self, tiles: torch.Tensor, target: str,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over tiles, d loss / d tiles) for tiles (N, 3, h, w) in cnn-vis units."""
        loss, input_gradient = self.engine.objective_gradient(
            self.network_input(tiles.detach()), target, objective)
        # The chain rule through network_input, backwards: flip, then divide by the scale.
        if self._flip:
            input_gradient = input_gradient.flip(1)
        if self._scale != 1:
            input_gradient = input_gradient / self._scale
        return loss, input_gradient

    def classify(self, image: torch.Tensor, top: int = 5) -> list[tuple[int, float, str]]:
        """The `top` largest outputs of the network's last blob: (index, value, label)."""
        last = self.blob_names[-1]
        scores = self.engine.forward(self.network_input(image.to(self.device)), last)
        scores = scores.reshape(scores.shape[0], -1)[0]
        if scores.numel() < top:
            raise UserError(f"the last blob '{last}' has {scores.numel()} values; "
                            "--classify needs a classification network.")
        values, indices = scores.topk(top)
        return [(int(i), float(v), self.labels[i] if self.labels and i < len(self.labels) else "")
                for v, i in zip(values.tolist(), indices.tolist())]
