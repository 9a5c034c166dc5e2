"""Caffe layers as PyTorch operations, with Caffe's exact semantics.

Each supported layer type has a builder: given the layer's message and the shapes of
its bottom blobs, it returns a `LayerPlan` naming the parameter blobs the layer needs
(shapes, and how to initialise them when no weights are given), a function that
makes the `CaffeLayer` module from those blobs, and the shapes of its top blobs. Like
Caffe's own Reshape, the builders compute those shapes and reject bottoms the layer
cannot take, so that a network is checked without running anything (PyTorch's meta
device would do it too, but its first use costs a second of start-up). Where Caffe
and PyTorch differ (pooling's output size and average divisor, LRN within a channel,
legacy blob shapes), the code follows Caffe and says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial, reduce
from typing import Callable

import torch
import torch.nn.functional as F

from cnnvis import convolution
from cnnvis.caffe import caffe_pb2 as pb
from cnnvis.caffe.kernels import (lrn_across_channels, lrn_within_channel, caffe_pool,
                                  caffe_pooled_size)
from cnnvis.errors import UserError

Shape = tuple[int, ...]
C_INT_MAX = 2 ** 31 - 1
Op = Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]


class CaffeLayer(torch.nn.Module):
    """One Caffe layer: `op(*bottoms, *blobs)`, with the parameter blobs held as buffers.

    Buffers (not parameters) so that no parameter gradient can ever be computed, and so
    that `.to(device)` moves them.
    """

    def __init__(self, name: str, op: Op, blobs: list[torch.Tensor]):
        super().__init__()
        self.name = name
        self.op = op
        self.num_blobs = len(blobs)
        for i, blob in enumerate(blobs):
            self.register_buffer(f"blob{i}", blob)

    def forward(self, *bottoms: torch.Tensor) -> tuple[torch.Tensor, ...]:
        blobs = [getattr(self, f"blob{i}") for i in range(self.num_blobs)]
        tops = self.op(*bottoms, *blobs)
        return tops if isinstance(tops, tuple) else (tops,)


@dataclass(frozen=True)
class BlobSpec:
    """A parameter blob a layer needs: its shape and its initial value when no weights are given."""

    shape: Shape
    init: str  # "fan_in" (Gaussian, std sqrt(2 / fan_in)), "zeros" or "ones"


@dataclass(frozen=True)
class LayerPlan:
    blobs: list[BlobSpec]
    # Makes the layer's op from its blobs (as float32 tensors of the declared shapes).
    make_op: Callable[[list[torch.Tensor]], tuple[Op, list[torch.Tensor]]]
    tops: list[Shape]  # the shapes of the op's outputs, for the bottom shapes given


def _error(layer: pb.LayerParameter, problem: str) -> UserError:
    return UserError(f"layer '{layer.name}' ({layer.type}): {problem}. Fix the prototxt.")


def _pair(layer, repeated, single_h: int, single_w: int, has_hw: bool, default: int, what: str):
    """Caffe's (h, w) resolution of kernel/stride/pad: the _h/_w fields, else 1 or 2 values, else default."""
    if has_hw:
        pair = single_h, single_w
    else:
        values = list(repeated)
        if len(values) > 2:
            raise _error(layer, f"{what} has {len(values)} values; 2-D layers take 1 or 2")
        pair = (default, default) if not values else (values[0], values[-1])
    return _c_int(layer, what, pair)


def _c_int(layer, what: str, values: tuple[int, ...]) -> tuple[int, ...]:
    """`values`, which PyTorch's kernels take as 32-bit ints (Caffe's fields are unsigned)."""
    for value in values:
        if value > C_INT_MAX:
            raise _error(layer, f"{what} {value} is too large (at most {C_INT_MAX})")
    return values


def _positive(layer, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise _error(layer, f"{name} must be at least 1, not {value}")


def _keep(op: Op) -> Callable[[list[torch.Tensor]], tuple[Op, list[torch.Tensor]]]:
    """make_op for layers that use their blobs as they are."""
    return lambda blobs: (op, blobs)


def _elementwise(op: Op) -> Callable[[pb.LayerParameter, list[Shape]], LayerPlan]:
    """The builder of a layer without parameters whose top has its bottom's shape."""
    return lambda layer, bottoms: LayerPlan([], _keep(op), [bottoms[0]])


def _require_image_blob(layer, bottoms: list[Shape]) -> None:
    if len(bottoms[0]) != 4:
        raise _error(layer, f"its bottom has shape {bottoms[0]}, but it takes a 4-D blob "
                            "(num, channels, height, width)")


# ---------------------------------------------------------------- builders


def _convolution(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.convolution_param
    kh, kw = _pair(layer, p.kernel_size, p.kernel_h, p.kernel_w,
                   p.HasField("kernel_h") or p.HasField("kernel_w"), 0, "kernel_size")
    sh, sw = _pair(layer, p.stride, p.stride_h, p.stride_w,
                   p.HasField("stride_h") or p.HasField("stride_w"), 1, "stride")
    ph, pw = _pair(layer, p.pad, p.pad_h, p.pad_w,
                   p.HasField("pad_h") or p.HasField("pad_w"), 0, "pad")
    dilation = list(p.dilation) or [1]
    dh, dw = _c_int(layer, "dilation", tuple((dilation * 2)[:2]))
    _positive(layer, kernel=min(kh, kw), stride=min(sh, sw), dilation=min(dh, dw),
              num_output=p.num_output, group=p.group)
    _require_image_blob(layer, bottoms)
    num, channels, height, width = bottoms[0]
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if min(out_h, out_w) < 1:
        raise _error(layer, f"its kernel ({kh}x{kw}, dilation {dh}x{dw}) is larger than its padded "
                            f"input ({height + 2 * ph}x{width + 2 * pw})")
    if channels % p.group or p.num_output % p.group:
        raise _error(layer, f"group {p.group} must divide both the input channels ({channels}) "
                            f"and num_output ({p.num_output})")
    blobs = [BlobSpec((p.num_output, channels // p.group, kh, kw), "fan_in")]
    if p.bias_term:
        blobs.append(BlobSpec((p.num_output,), "zeros"))
    conv = partial(convolution.conv2d, stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=p.group)
    return LayerPlan(blobs, _keep(lambda x, w, b=None: conv(x, w, b)),
                     [(num, p.num_output, out_h, out_w)])


def _pooling(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.pooling_param
    if p.pool == pb.PoolingParameter.STOCHASTIC:
        raise _error(layer, "STOCHASTIC pooling is not supported; use MAX or AVE")
    ceil = p.round_mode == pb.PoolingParameter.CEIL
    average = p.pool == pb.PoolingParameter.AVE
    _require_image_blob(layer, bottoms)
    num, channels, height, width = bottoms[0]
    if p.global_pooling:  # the window is the whole input, whatever its size at run time
        return LayerPlan([], _keep(lambda x: caffe_pool(
            x, kernel=tuple(x.shape[-2:]), stride=(1, 1), pad=(0, 0), ceil=ceil, average=average)),
            [(num, channels, 1, 1)])
    kh, kw = _pair(layer, [p.kernel_size] if p.HasField("kernel_size") else [],
                   p.kernel_h, p.kernel_w, p.HasField("kernel_h") or p.HasField("kernel_w"),
                   0, "kernel_size")
    sh, sw = _pair(layer, [p.stride], p.stride_h, p.stride_w,
                   p.HasField("stride_h") or p.HasField("stride_w"), 1, "stride")
    ph, pw = _pair(layer, [p.pad], p.pad_h, p.pad_w,
                   p.HasField("pad_h") or p.HasField("pad_w"), 0, "pad")
    _positive(layer, kernel=min(kh, kw), stride=min(sh, sw))
    if ph >= kh or pw >= kw:
        raise _error(layer, f"pad ({ph}, {pw}) must be smaller than the kernel ({kh}, {kw})")
    out_h = caffe_pooled_size(height, kh, sh, ph, ceil)
    out_w = caffe_pooled_size(width, kw, sw, pw, ceil)
    if min(out_h, out_w) < 1:
        raise _error(layer, f"its kernel ({kh}x{kw}) is larger than its padded input "
                            f"({height + 2 * ph}x{width + 2 * pw})")
    return LayerPlan([], _keep(partial(
        caffe_pool, kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw), ceil=ceil, average=average)),
        [(num, channels, out_h, out_w)])


def _relu(layer, bottoms: list[Shape]) -> LayerPlan:
    slope = layer.relu_param.negative_slope
    op = F.relu if slope == 0 else partial(F.leaky_relu, negative_slope=slope)
    return _elementwise(op)(layer, bottoms)


def _lrn(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.lrn_param
    if p.local_size % 2 == 0:
        raise _error(layer, f"local_size must be odd, not {p.local_size}")
    _c_int(layer, "local_size", (p.local_size,))
    _require_image_blob(layer, bottoms)
    if p.norm_region == pb.LRNParameter.ACROSS_CHANNELS:
        op = partial(lrn_across_channels, size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k)
    else:
        op = partial(lrn_within_channel, size=p.local_size, alpha=p.alpha, beta=p.beta)
    return _elementwise(op)(layer, bottoms)


def _axis(layer, axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise _error(layer, f"{what} {axis} is out of range for a {ndim}-D blob")
    return axis % ndim


def _concat(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.concat_param
    axis = _axis(layer, p.axis if p.HasField("axis") or not p.HasField("concat_dim")
                 else p.concat_dim, len(bottoms[0]))
    for shape in bottoms[1:]:
        if len(shape) != len(bottoms[0]) or any(
                a != b for i, (a, b) in enumerate(zip(shape, bottoms[0])) if i != axis):
            raise _error(layer, f"bottom shapes {bottoms} differ outside the concat axis {axis}")
    top = list(bottoms[0])
    top[axis] = sum(shape[axis] for shape in bottoms)
    return LayerPlan([], _keep(lambda *xs: torch.cat(xs, dim=axis)), [tuple(top)])


def _inner_product(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.inner_product_param
    _positive(layer, num_output=p.num_output)
    axis = _axis(layer, p.axis, len(bottoms[0]))
    fan_in = math.prod(bottoms[0][axis:])
    weight = (fan_in, p.num_output) if p.transpose else (p.num_output, fan_in)
    blobs = [BlobSpec(weight, "fan_in")]
    if p.bias_term:
        blobs.append(BlobSpec((p.num_output,), "zeros"))

    def make_op(tensors):
        w = tensors[0].t() if p.transpose else tensors[0]
        return (lambda x, w, b=None: F.linear(x.flatten(axis), w, b)), [w.contiguous()] + tensors[1:]
    return LayerPlan(blobs, make_op, [bottoms[0][:axis] + (p.num_output,)])


def _softmax(layer, bottoms: list[Shape]) -> LayerPlan:
    axis = _axis(layer, layer.softmax_param.axis, len(bottoms[0]))
    return _elementwise(partial(torch.softmax, dim=axis))(layer, bottoms)


def _flatten(layer, bottoms: list[Shape]) -> LayerPlan:
    ndim = len(bottoms[0])
    start = _axis(layer, layer.flatten_param.axis, ndim)
    end = _axis(layer, layer.flatten_param.end_axis, ndim, "end_axis")
    if end < start:
        raise _error(layer, f"end_axis {layer.flatten_param.end_axis} comes before axis "
                            f"{layer.flatten_param.axis} in a {ndim}-D blob")
    shape = bottoms[0]
    top = shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]
    return LayerPlan([], _keep(partial(torch.flatten, start_dim=start, end_dim=end)), [top])


def _split(layer, bottoms: list[Shape]) -> LayerPlan:
    copies = len(layer.top)
    return LayerPlan([], _keep(lambda x: (x,) * copies), [bottoms[0]] * copies)


def _batch_norm(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.batch_norm_param
    if len(bottoms[0]) < 2:
        raise _error(layer, f"its bottom has shape {bottoms[0]}, but it takes a blob with channels "
                            "(num, channels, ...)")
    channels = bottoms[0][1]
    # Caffe's default at test time: use the stored statistics.
    use_global = p.use_global_stats if p.HasField("use_global_stats") else True
    blobs = [BlobSpec((channels,), "zeros"), BlobSpec((channels,), "ones"), BlobSpec((1,), "ones")]
    shape = (1, channels) + (1,) * (len(bottoms[0]) - 2)

    def make_op(tensors):
        mean, var, factor = tensors
        # Caffe stores running sums; the third blob is the factor that turns them into averages.
        scale = 0.0 if float(factor[0]) == 0 else 1.0 / float(factor[0])
        if use_global:
            return (lambda x, m, v: (x - m) / torch.sqrt(v + p.eps)), \
                [(mean * scale).reshape(shape), (var * scale).reshape(shape)]

        def batch_statistics(x):
            dims = [d for d in range(x.dim()) if d != 1]
            m = x.mean(dim=dims, keepdim=True)
            v = ((x - m) ** 2).mean(dim=dims, keepdim=True)
            return (x - m) / torch.sqrt(v + p.eps)
        return batch_statistics, []
    return LayerPlan(blobs, make_op, [bottoms[0]])


def _scale(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.scale_param
    ndim = len(bottoms[0])
    axis = _axis(layer, p.axis, ndim)
    learned = len(bottoms) == 1  # else the scale is the second bottom
    covered = (ndim - axis if p.num_axes == -1 else p.num_axes) if learned else len(bottoms[1])
    if not 0 <= covered <= ndim - axis:
        raise _error(layer, f"its scale would cover {covered} axes of a {ndim}-D bottom from "
                            f"axis {axis}")
    param_shape = tuple(bottoms[0][axis:axis + covered])
    if not learned and bottoms[1] != param_shape:
        raise _error(layer, f"its scale bottom has shape {bottoms[1]}, but its first bottom "
                            f"{bottoms[0]} needs {param_shape} from axis {axis}")
    blobs = [BlobSpec(param_shape, "ones")] if learned else []
    if p.bias_term:
        blobs.append(BlobSpec(param_shape, "zeros"))

    def scale_op(x, *rest):
        # The scale covers x's dimensions axis..axis+covered-1; with axis 0 a second bottom
        # covers the batch too, so the view comes from the run-time shapes.
        view = (1,) * axis + tuple(x.shape[axis:axis + covered]) + (1,) * (ndim - axis - covered)
        out = x * rest[0].reshape(view)
        return out + rest[1].reshape(view) if len(rest) > 1 else out
    return LayerPlan(blobs, _keep(scale_op), [bottoms[0]])


def _eltwise(layer, bottoms: list[Shape]) -> LayerPlan:
    p = layer.eltwise_param
    if any(shape != bottoms[0] for shape in bottoms):
        raise _error(layer, f"bottom shapes differ: {bottoms}")
    if p.operation == pb.EltwiseParameter.SUM:
        coeff = list(p.coeff) or [1.0] * len(bottoms)
        if len(coeff) != len(bottoms):
            raise _error(layer, f"{len(coeff)} coeff values for {len(bottoms)} bottoms")
        return LayerPlan([], _keep(lambda *xs: reduce(
            torch.add, [x if c == 1 else c * x for c, x in zip(coeff, xs)])), [bottoms[0]])
    if p.operation == pb.EltwiseParameter.PROD:
        return LayerPlan([], _keep(lambda *xs: reduce(torch.mul, xs)), [bottoms[0]])
    # MAX: on ties Caffe routes the gradient to the first bottom (torch.maximum would split it).
    return LayerPlan([], _keep(lambda *xs: reduce(lambda a, b: torch.where(b > a, b, a), xs)),
                     [bottoms[0]])


BUILDERS: dict[str, Callable[[pb.LayerParameter, list[Shape]], LayerPlan]] = {
    "Convolution": _convolution,
    "Pooling": _pooling,
    "ReLU": _relu,
    "LRN": _lrn,
    "Concat": _concat,
    "InnerProduct": _inner_product,
    "Dropout": _elementwise(lambda x: x),  # identity at test time (Caffe scales while training)
    "Softmax": _softmax,
    "Flatten": _flatten,
    "Split": _split,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Eltwise": _eltwise,
    "Sigmoid": _elementwise(torch.sigmoid),
    "TanH": _elementwise(torch.tanh),
}
# How many bottom blobs a type takes, as Caffe checks: (minimum, maximum or None for no
# maximum). Every type not listed takes exactly one.
BOTTOM_COUNTS: dict[str, tuple[int, int | None]] = {
    "Concat": (1, None), "Eltwise": (2, None), "Scale": (1, 2),
}
