"""A Caffe network on PyTorch that runs to any named blob, as Caffe names them."""
from __future__ import annotations

import difflib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnvis.caffe import caffe_pb2 as pb
from cnnvis.caffe.layers import BOTTOM_COUNTS, BUILDERS, BlobSpec, CaffeLayer
from cnnvis.caffe.reader import blob_array, read_caffemodel, read_prototxt
from cnnvis.errors import UserError

BlobVersion = tuple[str, int]  # a blob name and how many layers have written it so far
# The most values a blob may hold for one image (1 GiB of float32): inputs, layer outputs
# and random weights (trained weights are bounded by their file). A typo such as
# `num_output: 2000000000` or `dim: 100000` is an error, not an attempt to allocate it.
MAX_BLOB_VALUES = 2 ** 28


@dataclass(frozen=True)
class _Step:
    layer: int                    # index into CaffeNet.layers
    bottoms: list[BlobVersion]
    tops: list[BlobVersion]


def included_in_test_phase(layer: pb.LayerParameter) -> bool:
    """Caffe's NetStateRule filtering for a deploy net (phase TEST, level 0, no stages)."""
    def met(rule: pb.NetStateRule) -> bool:
        return ((not rule.HasField("phase") or rule.phase == pb.TEST)
                and (not rule.HasField("min_level") or rule.min_level <= 0)
                and (not rule.HasField("max_level") or rule.max_level >= 0)
                and not rule.stage)
    if layer.include:
        return any(met(rule) for rule in layer.include)
    return not any(met(rule) for rule in layer.exclude)


class CaffeNet(torch.nn.Module):
    """A Caffe deploy network whose blobs can be computed by name.

    A layer whose top equals its bottom works in place, as in Caffe: the blob name then
    refers to the value after the in-place layer (so `conv1` is post-ReLU when a ReLU
    writes `conv1` in place). `forward(x, target)` and `forward_blobs(x, targets)` run
    only the layers that their targets depend on. Weights are buffers: no parameter gradient is ever computed.
    """

    def __init__(self, net: pb.NetParameter, weights: dict[str, list[pb.BlobProto]] | None,
                 seed: int = 0):
        """Build from a parsed network; `weights` from a caffemodel, or None for random
        weights (drawn from `seed`, for architecture-only uses such as benchmarks)."""
        super().__init__()
        self.name = net.name
        layers = [layer for layer in net.layer if included_in_test_phase(layer)]
        self.input_name, self.input_shape = network_input(net)
        self.input_size = self.input_shape[1:]
        generator = torch.Generator().manual_seed(seed)

        versions: dict[str, int] = {self.input_name: 0}
        shapes: dict[BlobVersion, tuple[int, ...]] = {(self.input_name, 0): (1,) + self.input_shape}
        self.layers = torch.nn.ModuleList()
        self.layer_types: list[str] = []
        # Layers whose order `_plan` may swap: ReLUs without a slope (monotonic, and no
        # two values they keep apart become equal) and MAX poolings.
        self._plain_relus: set[int] = set()
        self._max_pools: set[int] = set()
        self._steps: list[_Step] = []
        self.blob_names: list[str] = []
        for layer in layers:
            if layer.type == "Input":
                continue
            builder = BUILDERS.get(layer.type)
            if builder is None:
                raise UserError(
                    f"layer '{layer.name}' has type '{layer.type}', which cnn-vis does not support "
                    f"(supported: {', '.join(sorted(BUILDERS))}). Remove it from the prototxt.")
            least, most = BOTTOM_COUNTS.get(layer.type, (1, 1))
            if not least <= len(layer.bottom) <= (most or len(layer.bottom)):
                takes = (f"exactly {least}" if least == most else
                         f"{least} to {most}" if most else f"at least {least}")
                raise UserError(f"layer '{layer.name}' ({layer.type}) has {len(layer.bottom)} "
                                f"bottom blob(s) but takes {takes}. "
                                "Fix its bottoms in the prototxt.")
            for name in layer.bottom:
                if name not in versions:
                    raise UserError(f"layer '{layer.name}' reads blob '{name}', which no earlier "
                                    "layer produces. Fix its bottom in the prototxt.")
            if not layer.top:
                raise UserError(f"layer '{layer.name}' has no top blob. Fix the prototxt.")
            bottoms = [(name, versions[name]) for name in layer.bottom]
            plan = builder(layer, [shapes[b] for b in bottoms])
            blobs = self._layer_blobs(layer, plan.blobs, weights, generator)
            op, buffers = plan.make_op(blobs)
            tops = []
            for name, shape in zip(layer.top, plan.tops):
                _check_blob_size(f"blob '{name}' of layer '{layer.name}' ({layer.type})", shape)
                versions[name] = versions.get(name, -1) + 1
                tops.append((name, versions[name]))
                shapes[tops[-1]] = shape
                if name not in self.blob_names and name != self.input_name:
                    self.blob_names.append(name)
            self.layers.append(CaffeLayer(layer.name, op, buffers))
            self.layer_types.append(layer.type)
            if layer.type == "ReLU" and layer.relu_param.negative_slope == 0:
                self._plain_relus.add(len(self.layers) - 1)
            if layer.type == "Pooling" and layer.pooling_param.pool == pb.PoolingParameter.MAX:
                self._max_pools.add(len(self.layers) - 1)
            self._steps.append(_Step(len(self.layers) - 1, bottoms, tops))
        self._final: dict[str, BlobVersion] = {name: (name, v) for name, v in versions.items()}
        # Each blob's shape for one image, as the layers' builders computed it.
        self.blob_shapes: dict[str, tuple[int, ...]] = {
            name: shapes[self._final[name]] for name in self.blob_names}
        self._plans: dict[str, list[_Step]] = {}

    @staticmethod
    def _layer_blobs(layer: pb.LayerParameter, specs: list[BlobSpec],
                     weights: dict[str, list[pb.BlobProto]] | None,
                     generator: torch.Generator) -> list[torch.Tensor]:
        if weights is None:
            for spec in specs:
                _check_blob_size(f"a weight blob of layer '{layer.name}' ({layer.type})",
                                 spec.shape)
            return [_initial_blob(spec, generator) for spec in specs]
        stored = weights.get(layer.name, [])
        if not specs:
            return []
        if len(stored) != len(specs):
            raise UserError(
                f"layer '{layer.name}' needs {len(specs)} weight blob(s) "
                f"{[spec.shape for spec in specs]} but the caffemodel has {len(stored)}"
                f"{'' if stored else ' (no weights under that layer name)'}. "
                "Use the caffemodel that belongs to this prototxt.")
        blobs = []
        for i, (spec, blob) in enumerate(zip(specs, stored)):
            values, shape, legacy = blob_array(blob)
            # A legacy 4-D blob matches when the expected shape, padded to 4-D with 1s, does.
            expected = ((1,) * (4 - len(spec.shape)) + spec.shape) if legacy else spec.shape
            if tuple(shape) != tuple(expected):
                raise UserError(
                    f"layer '{layer.name}': weight blob {i} has shape {tuple(shape)} in the "
                    f"caffemodel but the prototxt needs {spec.shape}. "
                    "Use the caffemodel that belongs to this prototxt.")
            if values.size != math.prod(spec.shape):  # math.prod: np.prod wraps past 2**63
                raise UserError(
                    f"layer '{layer.name}': weight blob {i} holds {values.size} values but its "
                    f"shape {tuple(shape)} needs {math.prod(spec.shape)}, so the caffemodel is "
                    "corrupt. Download it again, or pass the right file with --caffe_model.")
            if not np.isfinite(values).all():
                raise UserError(
                    f"layer '{layer.name}': weight blob {i} in the caffemodel holds NaN or "
                    "infinite values (or values too large for float32), so the file is corrupt. "
                    "Download it again, or pass the right file with --caffe_model.")
            blobs.append(torch.from_numpy(values.reshape(spec.shape)))
        return blobs

    def full_precision_modules(self) -> list[torch.nn.Module]:
        """What stays float32 when the engine runs in reduced precision: the first layer with
        weights and the BatchNorm and Scale layers right after it (`cnnvis.engine`)."""
        kept = []
        for layer, kind in zip(self.layers, self.layer_types):
            if kept and kind not in ("BatchNorm", "Scale"):
                break
            if kept or layer.num_blobs:
                kept.append(layer)
        return kept

    def _plan(self, targets: tuple[str, ...]) -> list[_Step]:
        """The steps that the targets' final values depend on, in network order."""
        if targets not in self._plans:
            for target in targets:
                if target not in self.blob_names:
                    raise unknown_blob(target, self.blob_names)
            finals = {self._final[target] for target in targets}
            needed = set(finals)
            plan = []
            for step in reversed(self._steps):
                if needed.intersection(step.tops):
                    plan.append(step)
                    needed.update(step.bottoms)
            self._plans[targets] = self._pooled_before_rectified(plan[::-1], finals)
        return self._plans[targets]

    def _pooled_before_rectified(self, plan: list[_Step], finals: set[BlobVersion]) -> list[_Step]:
        """`plan` with each ReLU that feeds only a MAX pooling run after it instead:
        max(relu(x)) = relu(max(x)), value for value, and the gradient takes the same path
        (the first largest value of each window, or none where that is not positive), but
        the ReLU then works on the pooled blob (GoogLeNet's conv1: a quarter of the size).
        Not where the ReLU's output is a target."""
        readers = Counter(bottom for step in plan for bottom in step.bottoms)
        swapped: list[_Step] = []
        for step in plan:
            relu = swapped[-1] if swapped else None
            if (relu is not None and relu.layer in self._plain_relus
                    and step.layer in self._max_pools and step.bottoms == relu.tops
                    and readers[relu.tops[0]] == 1 and relu.tops[0] not in finals):
                unrectified = (step.tops[0][0], -1)   # versions count from 0: no other has -1
                swapped[-1:] = [_Step(step.layer, relu.bottoms, [unrectified]),
                                _Step(relu.layer, [unrectified], step.tops)]
            else:
                swapped.append(step)
        return swapped

    def _run(self, x: torch.Tensor, steps: list[_Step],
             keep: set[BlobVersion] | None) -> dict[BlobVersion, torch.Tensor]:
        """Run `steps` on x. A value not in `keep` is dropped after its last reader, so that
        memory holds only what autograd saves (a pre-ReLU convolution output, say, is not
        kept alive beside its rectified copy); `keep` None keeps every value."""
        last_reader = {} if keep is None else {
            b: i for i, step in enumerate(steps) for b in step.bottoms if b not in keep}
        values = {(self.input_name, 0): x}
        for i, step in enumerate(steps):
            outputs = self.layers[step.layer](*[values[b] for b in step.bottoms])
            values.update(zip(step.tops, outputs))
            for bottom in set(step.bottoms):
                if last_reader.get(bottom) == i:
                    del values[bottom]
        return values

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """The blob `target` for input x (N, C, H, W), running only the layers it needs."""
        return self.forward_blobs(x, [target])[target]

    def forward_blobs(self, x: torch.Tensor, targets: list[str]) -> dict[str, torch.Tensor]:
        """The blobs `targets` for input x, running only the layers they need, once."""
        finals = {target: self._final.get(target) for target in targets}
        values = self._run(x, self._plan(tuple(targets)), keep=set(finals.values()))
        return {target: values[version] for target, version in finals.items()}

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob's final value, in network order."""
        values = self._run(x, self._steps, keep=None)
        return {name: values[self._final[name]] for name in self.blob_names}


def network_input(net: pb.NetParameter) -> tuple[str, tuple[int, int, int]]:
    """The input blob's name and (channels, height, width), from the first Input layer."""
    inputs = [layer for layer in net.layer
              if layer.type == "Input" and included_in_test_phase(layer)]
    if not inputs or not inputs[0].input_param.shape:
        raise UserError("the prototxt declares no input shape; add an Input layer with "
                        "input_param { shape { dim: 1 dim: 3 dim: H dim: W } }.")
    if not inputs[0].top:
        raise UserError(f"the Input layer '{inputs[0].name}' has no top blob; add "
                        'top: "data" to it in the prototxt.')
    name = inputs[0].top[0]
    shape = tuple(int(d) for d in inputs[0].input_param.shape[0].dim)
    if len(shape) != 4:
        raise UserError(f"the input blob '{name}' has shape {shape}; "
                        "cnn-vis needs an image input (num, channels, height, width).")
    if min(shape) < 1:
        raise UserError(f"the input blob '{name}' has shape {shape}; every "
                        "dimension must be at least 1. Fix the input shape in the prototxt.")
    _check_blob_size(f"the input blob '{name}'", (1,) + shape[1:])
    return name, shape[1:]


def unknown_blob(target: str, blob_names: list[str]) -> UserError:
    """The error for a target that is none of a Caffe network's blobs, with close names."""
    close = difflib.get_close_matches(target, blob_names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UserError(f"the network has no blob named '{target}'.{hint} "
                     "--list_layers shows every blob that can be targeted.")


def _check_blob_size(what: str, shape: tuple[int, ...]) -> None:
    values = math.prod(shape)
    if values > MAX_BLOB_VALUES:
        raise UserError(f"{what} would have shape {tuple(shape)}: {values} values, more than "
                        f"cnn-vis holds ({MAX_BLOB_VALUES}). Check the input shape and the "
                        "layers' num_output and kernel sizes in the prototxt.")


def _initial_blob(spec: BlobSpec, generator: torch.Generator) -> torch.Tensor:
    if spec.init == "zeros":
        return torch.zeros(spec.shape)
    if spec.init == "ones":
        return torch.ones(spec.shape)
    fan_in = int(np.prod(spec.shape[1:])) if len(spec.shape) > 1 else 1
    return torch.randn(spec.shape, generator=generator) * (2.0 / fan_in) ** 0.5


def load_caffe_net(deploy: str | Path, weights: str | Path | None = None, seed: int = 0) -> CaffeNet:
    """Read a deploy prototxt and (optionally) its caffemodel into an eval-mode CaffeNet."""
    net = read_prototxt(deploy)
    stored = read_caffemodel(weights) if weights is not None else None
    return CaffeNet(net, stored, seed=seed).eval()
