"""Real Caffe as cnn-vis' second engine (`--backend caffe`), through pycaffe.

Caffe computes every blob and gradient itself, on the network as cnn-vis parsed and
validated it (rebuilt from the parsed message, so that a model file can make Caffe
neither read nor write files), plus `force_backward: true` (without which Caffe computes
no gradient for the input). It is also the reference that the tests hold the PyTorch
engine to.

pycaffe is optional (scripts/install_pycaffe.sh builds it) and imported on first use.
A Caffe that fails a check while loading aborts its whole process, so a network is
first loaded in a child process: a file Caffe refuses becomes a `UserError` with
Caffe's own reason, and a GPU that Caffe cannot use (a CPU-only build) means the CPU.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from google.protobuf import text_format
from google.protobuf.message import Message

from cnnvis.caffe import caffe_pb2 as pb
from cnnvis.caffe import CaffeNet, read_prototxt
from cnnvis.caffe.net import included_in_test_phase, unknown_blob
from cnnvis.errors import UserError
from cnnvis.objectives import Objective

INSTALL_HINT = ("install it with scripts/install_pycaffe.sh (in the project's activated "
                "virtual environment), or use --backend torch")

# Loads the network as the engine will (argv: prototxt, caffemodel, [GPU]) and says how
# far it got; Caffe's reason for failing is on stderr.
_LOAD_CHECK = """
import os, sys
os.environ.setdefault("GLOG_minloglevel", "2")
import caffe
caffe.set_mode_cpu()
caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)
print("loaded", flush=True)
if len(sys.argv) > 3:
    caffe.set_mode_gpu()
    caffe.set_device(int(sys.argv[3]))
    print("gpu", flush=True)
"""


def import_caffe() -> ModuleType:
    """pycaffe, with Caffe's logging cut down to errors; a `UserError` if it is missing."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # before the import: glog reads it once
    try:
        import caffe
    except ImportError as error:
        raise UserError(f"--backend caffe needs pycaffe (real Caffe's Python bindings), which "
                        f"cannot be imported here ({error}); {INSTALL_HINT}.") from None
    return caffe


@dataclass(frozen=True)
class _BackwardRange:
    """How to back-propagate from one target blob in Caffe."""

    layer: str                 # the last layer that writes the blob: forward ends, backward starts here
    stale_diffs: tuple[str, ...]  # blobs whose diff the backward pass reads but does not write first


class CaffeEngine:
    """An `Engine` (see `cnnvis.engine`) that runs a `caffe.Net` built with force_backward.

    Each call reshapes the input blob to the batch, runs Caffe forward to the layer that
    last writes the target blob and, for a gradient, backward from that layer with the
    target's diff set to the objective's top gradient. Starting at the *last* writer
    matters for blobs written in place: `inception_4d/3x3_reduce` is rewritten by its
    ReLU, and its value and gradient are the post-ReLU ones, as in the PyTorch engine.
    """

    def __init__(self, net, blob_names: list[str], gpu: int | None):
        """`net`: a caffe.Net with force_backward; `blob_names`: its targetable blobs;
        `gpu`: the CUDA device Caffe runs on, or None for the CPU."""
        self.net = net
        self.blob_names = blob_names
        self._caffe = import_caffe()
        self._gpu = gpu
        if len(net.inputs) != 1:
            raise UserError(f"the network has {len(net.inputs)} input blobs {list(net.inputs)}; "
                            "cnn-vis needs exactly one image input. Fix the prototxt.")
        self._input = net.inputs[0]
        shape = net.blobs[self._input].data.shape
        if len(shape) != 4:
            raise UserError(f"the input blob '{self._input}' has shape {shape}; cnn-vis needs "
                            "an image input (num, channels, height, width). Fix the prototxt.")
        self.input_size: tuple[int, int] = tuple(shape[2:])
        self._ranges: dict[str, _BackwardRange] = {}

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        self._forward(x, self._backward_range(target).layer)
        return torch.from_numpy(self.net.blobs[target].data.copy()).to(x.device)

    def blob_shapes(self) -> dict[str, tuple[int, ...]]:
        self._forward(torch.zeros((1, 3) + self.input_size), None)
        return {name: tuple(self.net.blobs[name].data.shape[1:]) for name in self.blob_names}

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every targetable blob's final value for input x (N, 3, H, W): one whole forward pass."""
        self._forward(x, None)
        return {name: torch.from_numpy(self.net.blobs[name].data.copy()).to(x.device)
                for name in self.blob_names}

    def objective_gradient(self, x: torch.Tensor,
                           objective: Objective) -> tuple[torch.Tensor, torch.Tensor]:
        # A layer's backward pass overwrites its bottoms' diffs, so a top gradient set on a
        # shallower blob before the pass would be lost. The pass runs in segments instead,
        # deepest target first: down to just above the next target's last writer, then that
        # target's top gradient is added to the diff there, and so on to the input.
        targets = sorted(objective, key=self._last_writer, reverse=True)
        deepest = self._backward_range(targets[0])
        self._forward(x, deepest.layer)
        blobs, layers = self.net.blobs, list(self.net.layer_dict)
        for name in deepest.stale_diffs:
            blobs[name].diff[...] = 0
        losses, start = [], deepest.layer
        for target in targets:
            writer = self._last_writer(target)
            if layers[writer] != start:
                self.net.backward(start=start, end=layers[writer + 1])
                start = layers[writer]
            loss, top_gradient = objective[target](torch.from_numpy(blobs[target].data))
            losses.append(loss)
            if target == targets[0]:
                blobs[target].diff[...] = top_gradient.numpy()
            else:
                blobs[target].diff[...] += top_gradient.numpy()
        self.net.backward(start=start)
        gradient = torch.from_numpy(blobs[self._input].diff.copy())   # (N, 3, H, W)
        return sum(losses).to(x.device), gradient.to(x.device)

    def _forward(self, x: torch.Tensor, end_layer: str | None) -> None:
        """Put x (N, 3, H, W) in the input blob and run Caffe up to `end_layer` (inclusive;
        None: the whole network)."""
        self._select_device()
        data = self.net.blobs[self._input]
        if data.data.shape != tuple(x.shape):
            data.reshape(*x.shape)
            self.net.reshape()
        data.data[...] = x.detach().cpu().numpy()
        self.net.forward(end=end_layer)

    def _select_device(self) -> None:
        # Caffe's mode is per thread and per process, not per net: set it for every call.
        if self._gpu is None:
            self._caffe.set_mode_cpu()
        else:
            self._caffe.set_mode_gpu()
            self._caffe.set_device(self._gpu)

    def _backward_range(self, target: str) -> _BackwardRange:
        if target not in self._ranges:
            if target not in self.blob_names:
                raise unknown_blob(target, self.blob_names)
            layers = list(self.net.layer_dict)[:self._last_writer(target) + 1]
            tops, bottoms = self.net.top_names, self.net.bottom_names
            # Caffe runs the backward pass of every layer in the range, also of those that
            # the target does not depend on (the other branches of an Inception module),
            # and it never clears diffs. A layer overwrites the diffs of its bottoms, so a
            # blob's diff is fresh when a layer reads the blob after its last write; any
            # other diff may still hold an earlier call's values and must be zeroed.
            last_write = {blob: i for i, layer in enumerate(layers) for blob in tops[layer]}
            read_after_write = {blob for i, layer in enumerate(layers) for blob in bottoms[layer]
                                if i > last_write.get(blob, -1)}
            stale = tuple(blob for blob in last_write
                          if blob not in read_after_write and blob != target)
            self._ranges[target] = _BackwardRange(layers[-1], stale)
        return self._ranges[target]

    def _last_writer(self, target: str) -> int:
        if target not in self.blob_names:
            raise unknown_blob(target, self.blob_names)
        return max(i for i, tops in enumerate(self.net.top_names.values()) if target in tops)


def load_caffe_engine(deploy: str | Path | pb.NetParameter, weights: str | Path,
                      device: torch.device = torch.device("cpu")) -> CaffeEngine:
    """A Caffe engine for a deploy prototxt file (or a network built in code) and its weights.

    Caffe runs on the GPU when `device` is a CUDA device and this Caffe can use it;
    otherwise on the CPU (said once on stderr when a GPU was asked for).
    """
    caffe = import_caffe()
    net_param, source = _net_for_gradients(caffe, deploy)
    weights = Path(weights)
    if not weights.is_file():
        raise UserError(f"weights file (caffemodel) not found: {weights} "
                        "(check the path given to --caffe_model).")
    gpu = (device.index or 0) if device.type == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="cnn-vis-caffe-") as folder:
        prototxt = Path(folder) / "deploy.prototxt"
        prototxt.write_text(text_format.MessageToString(net_param), encoding="utf-8")
        gpu = _check_loads(prototxt, weights, gpu, source)
        engine_net = caffe.Net(str(prototxt), str(weights), caffe.TEST)
    declared = {top for layer in [*net_param.layer, *net_param.layers] for top in layer.top}
    # Caffe's own blobs also include the copies its Split layers make; they are not targets.
    blob_names = [name for name in engine_net.blobs
                  if name in declared and name not in engine_net.inputs]
    return CaffeEngine(engine_net, blob_names, gpu)


def _net_for_gradients(caffe: ModuleType, deploy: str | Path | pb.NetParameter) -> tuple[Message, str]:
    """(Caffe's own NetParameter of `deploy` with force_backward set, a name for messages).

    Caffe gets the network as cnn-vis parsed and validated it, rebuilt: only the layers
    that run in the TEST phase, only of the types cnn-vis supports, with only the fields
    cnn-vis reads. So no layer that reads or writes files or runs code (data layers,
    HDF5Output, Python) ever reaches Caffe, whatever the file says.
    """
    if isinstance(deploy, pb.NetParameter):
        net, source = deploy, f"the network '{deploy.name}'"
    else:
        net, source = read_prototxt(deploy), str(deploy)
    CaffeNet(net, None)   # refuses unsupported layer types and inconsistent networks, as --backend torch
    rebuilt = pb.NetParameter(name=net.name, force_backward=True)
    for layer in net.layer:
        if included_in_test_phase(layer):
            kept = rebuilt.layer.add()
            kept.CopyFrom(layer)
            kept.ClearField("include")
            kept.ClearField("exclude")
    caffe_net = caffe.proto.caffe_pb2.NetParameter()
    text_format.Parse(text_format.MessageToString(rebuilt), caffe_net)
    return caffe_net, source


def _check_loads(prototxt: Path, weights: Path, gpu: int | None, source: str) -> int | None:
    """Load the network in a child process; returns the GPU Caffe can use (None: the CPU)."""
    command = [sys.executable, "-c", _LOAD_CHECK, str(prototxt), str(weights)]
    if gpu is not None:
        command.append(str(gpu))
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "GLOG_minloglevel": "2"})
    if "loaded" not in result.stdout.split():
        raise UserError(f"Caffe cannot load {source} with the weights {weights}: "
                        f"{_caffe_reason(result.stderr)}. Use the .caffemodel that belongs to "
                        "the prototxt, and only layer types that this Caffe knows.")
    if gpu is not None and "gpu" not in result.stdout.split():
        print(f"cnn-vis: --backend caffe: this Caffe cannot use GPU {gpu} (a CPU-only build, "
              "or no such device); Caffe runs on the CPU (--gpu -1 to silence this).",
              file=sys.stderr)
        return None
    return gpu


def _caffe_reason(stderr: str) -> str:
    """Caffe's fatal log message (glog: 'F20250101 12:00:00.000 123 net.cpp:42] reason'),
    else the last line (a Python exception)."""
    fatal = re.search(r"^F\d+ [^\]]*\] (.*)$", stderr, re.MULTILINE)
    if fatal:
        return fatal.group(1).strip().rstrip(".")
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else "it exited without a message"
