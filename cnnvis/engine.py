"""What runs a network for cnn-vis: the `Engine` interface and its PyTorch implementation.

An engine sees only network inputs, in the network's own convention; it returns blob
values and the gradient of an objective with respect to its input. `cnnvis.model.VisModel`
converts cnn-vis images to and from that convention. Real Caffe is the other engine
(`cnnvis.pycaffe_engine.CaffeEngine`).
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import itertools
import math
from typing import Protocol, runtime_checkable

import torch

from cnnvis.convolution import input_gradients_in
from cnnvis.errors import UserError
from cnnvis.network import BlobNetwork
from cnnvis.objectives import Objective

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    batch at once, as --batch_size says, up to what its free memory holds
    (`tiles_per_run_for_memory`).
    """

    CPU_TILES_PER_RUN = 8

    def __init__(self, network: BlobNetwork, device: torch.device = torch.device("cpu"),
                 precision: str = "fp32"):
        """`precision` "bf16" or "fp16" runs the network's work in that type (see
        `reduce_precision`); "fp32" runs it as it is. The engine works on its own copy of
        `network`: the caller's module keeps its device, types, mode and hooks."""
        self.network = copy.deepcopy(network).to(device, memory_format=torch.channels_last)
        self.input_size: tuple[int, int] = tuple(network.input_size)
        self.blob_names: list[str] = network.blob_names
        self.tiles_per_run = self.CPU_TILES_PER_RUN if device.type == "cpu" else None
        self.precision = precision
        if precision != "fp32":
            reduce_precision(self.network, DTYPES[precision])
        if device.type == "cuda":   # as many tiles per run as the free memory holds
            free, _ = torch.cuda.mem_get_info(device)
            self.tiles_per_run = tiles_per_run_for_memory(
                free, bytes_per_tile(self.blob_shapes(), DTYPES[precision].itemsize))

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        with torch.no_grad():
            blob = self.network.forward(x.contiguous(memory_format=torch.channels_last), target)
            return blob if self.precision == "fp32" else blob.float()

    def blob_shapes(self) -> dict[str, tuple[int, ...]]:
        device = next(itertools.chain(self.network.buffers(), self.network.parameters())).device
        with torch.no_grad():
            blobs = self.network.blobs(torch.zeros((1, 3) + self.input_size, device=device))
        return {name: tuple(blob.shape[1:]) for name, blob in blobs.items()}

    def objective_gradient(self, x: torch.Tensor,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        losses, gradients = [], []
        reduced_gradients = (contextlib.nullcontext() if self.precision == "fp32"
                             else input_gradients_in(DTYPES[self.precision]))
        with torch.enable_grad(), reduced_gradients:
            for tiles in x.detach().split(self.tiles_per_run or len(x)):
                tiles = tiles.contiguous(memory_format=torch.channels_last).requires_grad_(True)
                blobs = self.network.forward_blobs(tiles, list(objective))
                # Backward from the scalar sum of <blob, top_gradient>: the same gradient as
                # setting every top at once, and unlike blob.backward(top_gradient) its first
                # call imports no symbolic-shape machinery (half a second of start-up).
                products = []
                for name, blob_objective in objective.items():
                    # In reduced precision the objective and its top gradient are float32
                    # (the blob's .float() hands the gradient back in the blob's type).
                    blob = blobs[name] if self.precision == "fp32" else blobs[name].float()
                    loss, top_gradient = blob_objective(blob.detach())
                    losses.append(loss.detach())
                    products.append((blob * top_gradient).sum())
                sum(products[1:], start=products[0]).backward()
                gradients.append(tiles.grad)
        return sum(losses), torch.cat(gradients)


def tiles_per_run_for_memory(free_bytes: int, bytes_per_tile: int, reserve: float = 0.25,
                             most: int = 512) -> int:
    """How many tiles one run of the network may take on a GPU with `free_bytes` free, when a
    tile needs `bytes_per_tile` (its blobs and their gradients): all but `reserve` of the free
    memory, at most `most`, and at least 1 (a tile that does not fit fails as it would)."""
    usable = int(free_bytes * (1 - reserve))
    return max(1, min(most, usable // max(1, bytes_per_tile)))


def bytes_per_tile(blob_shapes: dict[str, tuple[int, ...]], element_size: int) -> int:
    """A tile's memory in a gradient run: every blob's value and its gradient."""
    return 2 * element_size * sum(math.prod(shape) for shape in blob_shapes.values())


def check_precision(precision: str, device: torch.device) -> None:
    """A UserError unless `device` runs the network's work in `precision`: fp32 anywhere,
    bf16 on CUDA and on CPUs with bfloat16 instructions, fp16 on CUDA."""
    if precision not in DTYPES:
        raise UserError(f"unknown precision '{precision}'; --precision takes one of: "
                        f"{', '.join(DTYPES)}.")
    if precision == "fp32" or device.type == "cuda":
        return
    if precision == "bf16" and device.type == "cpu":
        if cpu_supports_bf16():
            return
        problem = "this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)"
    elif precision == "fp16" and device.type == "cpu":
        problem = "fp16 runs on CUDA GPUs only"
    else:
        problem = f"it runs on CUDA (and bf16 on capable CPUs), not on {device.type}"
    raise UserError(f"--precision {precision}: {problem}; use --precision fp32"
                    + (", or bf16 on a CPU that has AVX-512 BF16" if precision == "fp16" else "")
                    + ", or run on a CUDA GPU.")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has bfloat16 dot products (AVX-512 BF16 or AMX), which make bf16 fast."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def reduce_precision(network: torch.nn.Module, dtype: torch.dtype) -> None:
    """Convert `network`'s weights to `dtype` once, keeping float32 where it buys the accuracy.

    The input gradient's direction is decided by the forward pass's choices (which units a
    ReLU passes, which a max-pool picks), and rounding the first layers' activations changes
    many of those choices at full resolution. So the first layer with weights, and the
    normalisation layers that follow it directly (`network.full_precision_modules()` where
    the network says which), stay float32, with the weightless layers that read them. Every
    module with weights casts its inputs to its own type; the rest run in the type they get.
    (The engine computes the first layer's phased input gradient in `dtype` all the same:
    `cnnvis.convolution.input_gradients_in`.)
    """
    keep = set(getattr(network, "full_precision_modules", lambda: [])())
    weighted = [m for m in network.modules() if any(
        t.is_floating_point() for t in list(m.parameters(recurse=False))
        + list(m.buffers(recurse=False)))]
    if not keep and weighted:
        keep = {weighted[0]}
    for module in weighted:
        module.to(torch.float32 if module in keep else dtype)
        module.register_forward_pre_hook(_cast_inputs)


def _cast_inputs(module: torch.nn.Module, inputs: tuple) -> tuple:
    dtype = next(t.dtype for t in list(module.parameters(recurse=False))
                 + list(module.buffers(recurse=False)) if t.is_floating_point())
    return tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
                 for x in inputs)


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed blocks for reuse instead of returning them to the OS.

    A process-wide setting, so the library never makes it: the command line calls it
    when it runs on a CPU, and so may a script or notebook that wants the speed.

    By default it gives large freed blocks back, and the next tile run takes them again
    page by page: some 40,000 page faults per GoogLeNet tile-step of 8 tiles, which keeping
    them makes 1.07x to 1.65x faster, for no less peak memory (benchmarks/bench.py, section
    [allocator]). No-op where the C library is not glibc.
    """
    global _keeping_freed_memory
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mmap_threshold, trim_threshold = -3, -1  # glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD
    mallopt(mmap_threshold, 1 << 30)
    mallopt(trim_threshold, 1 << 30)
    _keeping_freed_memory = True


_keeping_freed_memory = False


def keeps_freed_memory() -> bool:
    """Whether this process called `keep_freed_memory` (its workers then do too)."""
    return _keeping_freed_memory
