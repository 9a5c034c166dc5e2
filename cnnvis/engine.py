"""What runs a network for cnn-vis: the `Engine` interface and its PyTorch implementation.

An engine sees only network inputs, in the network's own convention; it returns blob
values and the gradient of an objective with respect to its input. `cnnvis.model.VisModel`
converts cnn-vis images to and from that convention. Real Caffe is the other engine
(`cnnvis.pycaffe_engine.CaffeEngine`).
"""
from __future__ import annotations

import ctypes
from typing import Protocol, runtime_checkable

import torch

from cnnvis.network import BlobNetwork
from cnnvis.objectives import Objective


@runtime_checkable
class Engine(Protocol):
    """What runs a network for cnn-vis, on inputs in the network's own convention."""

    input_size: tuple[int, int]   # (height, width) the network was trained on
    blob_names: list[str]         # targetable blobs, in network order (input excluded)

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """The values of blob `target` for input x (N, 3, H, W), on x's device; no gradient."""
        ...

    def blob_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each targetable blob's shape (C, ...) for one input-sized image, in network order."""
        ...

    def objective_gradient(self, x: torch.Tensor,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss summed over the batch, d loss / d x) for input x (N, 3, H, W), on x's device.

        The gradient is the objective's top gradients, set on each of its blobs,
        back-propagated together in one backward pass.
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

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        with torch.no_grad():
            return self.network.forward(x.contiguous(memory_format=torch.channels_last), target)

    def blob_shapes(self) -> dict[str, tuple[int, ...]]:
        device = next(self.network.buffers()).device
        with torch.no_grad():
            blobs = self.network.blobs(torch.zeros((1, 3) + self.input_size, device=device))
        return {name: tuple(blob.shape[1:]) for name, blob in blobs.items()}

    def objective_gradient(self, x: torch.Tensor,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        losses, gradients = [], []
        with torch.enable_grad():
            for tiles in x.detach().split(self.tiles_per_run or len(x)):
                tiles = tiles.contiguous(memory_format=torch.channels_last).requires_grad_(True)
                blobs = self.network.forward_blobs(tiles, list(objective))
                # Backward from the scalar sum of <blob, top_gradient>: the same gradient as
                # setting every top at once, and unlike blob.backward(top_gradient) its first
                # call imports no symbolic-shape machinery (half a second of start-up).
                products = []
                for name, blob_objective in objective.items():
                    loss, top_gradient = blob_objective(blobs[name].detach())
                    losses.append(loss.detach())
                    products.append((blobs[name] * top_gradient).sum())
                sum(products[1:], start=products[0]).backward()
                gradients.append(tiles.grad)
        return sum(losses), torch.cat(gradients)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of returning them to the OS.

    A process-wide setting, so the library never makes it: the command line calls it
    when it runs on a CPU, and so may a script or notebook that wants the speed.

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
