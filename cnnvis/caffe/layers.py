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


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooling output size: ceil rounding, and no window that starts in the padding."""
    span = size + 2 * pad - kernel
    pooled = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


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


def caffe_pool(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
               pad: tuple[int, int], ceil: bool, average: bool) -> torch.Tensor:
    """Caffe's MAX/AVE pooling of x (N, C, H, W).

    PyTorch's ceil mode has Caffe's output-size rule (a last window that would start in the
    padding is dropped) and, counting padding, Caffe's average divisor (the window clipped
    to the padded image) wherever PyTorch takes the padding (at most half the kernel) and
    no window can start past the input (stride at most the kernel). Elsewhere the
    explicitly padded version below gives the same results, more slowly.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    if ceil and 2 * ph <= kh and 2 * pw <= kw and sh <= kh and sw <= kw:
        if average:
            return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=True, count_include_pad=True)
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=True)
    return caffe_pool_padded(x, kernel, stride, pad, ceil, average)


def caffe_pool_padded(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                      pad: tuple[int, int], ceil: bool, average: bool) -> torch.Tensor:
    """Caffe's pooling for any padding and stride, from PyTorch's floor-mode pooling.

    The input is padded explicitly so that floor mode yields Caffe's window count. MAX
    ignores padding (pads with -inf). AVE divides each window's sum by the window's size
    clipped to the padded image (not to the image, not always k*k).
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    height, width = x.shape[-2:]
    out_h = caffe_pooled_size(height, kh, sh, ph, ceil)
    out_w = caffe_pooled_size(width, kw, sw, pw, ceil)
    extra_h = max(0, (out_h - 1) * sh + kh - height - 2 * ph)  # right/bottom overhang
    extra_w = max(0, (out_w - 1) * sw + kw - width - 2 * pw)
    padding = (pw, pw + extra_w, ph, ph + extra_h)
    if not average:
        padded = F.pad(x, padding, value=-math.inf)
        return F.max_pool2d(padded, (kh, kw), (sh, sw))[..., :out_h, :out_w]
    sums = F.avg_pool2d(F.pad(x, padding), (kh, kw), (sh, sw), divisor_override=1)
    sums = sums[..., :out_h, :out_w]
    return sums / _window_sizes(out_h, kh, sh, ph, height, x)[:, None] \
        / _window_sizes(out_w, kw, sw, pw, width, x)[None, :]


def _window_sizes(count: int, kernel: int, stride: int, pad: int, size: int, like: torch.Tensor):
    starts = torch.arange(count, device=like.device) * stride - pad
    ends = torch.clamp(starts + kernel, max=size + pad)
    return (ends - starts).to(like.dtype)


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
        op = partial(_lrn_across_channels, size=p.local_size, alpha=p.alpha, beta=p.beta, k=p.k)
    else:
        op = partial(_lrn_within_channel, size=p.local_size, alpha=p.alpha, beta=p.beta)
    return _elementwise(op)(layer, bottoms)


def _lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float,
                         k: float) -> torch.Tensor:
    """y = x / (k + alpha/n * sum over n neighbouring channels of x^2)^beta, as in Caffe."""
    return _CrossChannelLRN.apply(x, size, alpha, beta, k)


# Output channels per block of the reduced-precision window sum: of 32 to 96, the fastest for
# GoogLeNet's norm2 (192 channels) in bfloat16 on a 2-core CPU.
WINDOW_SUM_BLOCK = 32


def _channel_window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over the `size` channels centred on each channel (zeros beyond the edges).

    In float32 and float64, in-place adds of shifted channel slices: no padded copy, and t's
    memory format kept. In reduced precision, a banded product over the channels: on a CPU,
    bfloat16 adds of channel slices of a channels-last blob take a slow path (3x a whole
    blob's add), and the product sums in float32 and rounds once.
    """
    if t.dtype in (torch.float32, torch.float64):
        total = t.clone()
        channels = t.shape[1]
        for shift in range(1, min(size // 2, channels - 1) + 1):  # no channel is farther away
            total[:, shift:] += t[:, :channels - shift]
            total[:, :channels - shift] += t[:, shift:]
        return total
    return _banded_channel_sum(t, size // 2)


def _banded_channel_sum(t: torch.Tensor, half: int) -> torch.Tensor:
    """Each channel's sum over channels at most `half` away, as (pixels, channels) times a
    band matrix, in blocks of output channels (each reads only its channels and halo)."""
    channels_last = t.movedim(1, -1)                      # a view of a channels-last blob
    flat = channels_last.reshape(-1, t.shape[1])
    index = torch.arange(t.shape[1], device=t.device)
    band = ((index[:, None] - index[None, :]).abs() <= half).to(t.dtype)
    blocks = []
    for low in range(0, t.shape[1], WINDOW_SUM_BLOCK):
        high = min(t.shape[1], low + WINDOW_SUM_BLOCK)
        first, last = max(0, low - half), min(t.shape[1], high + half)
        blocks.append(flat[:, first:last] @ band[first:last, low:high])
    return torch.cat(blocks, 1).view(channels_last.shape).movedim(-1, 1)


class _CrossChannelLRN(torch.autograd.Function):
    """Caffe's LRN across channels with its closed-form gradient (Caffe's own backward):
    dx = dy * scale^-beta - (2 alpha beta / n) * x * window_sum(dy * y / scale).
    It saves scale and scale^-beta (the costly power) instead of autograd's chain of
    intermediates, and works in place where it can: LRN runs on the largest blobs."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        scale = _channel_window_sum(x * x, size).mul_(alpha / size).add_(k)
        scale_power = scale.pow(-beta)
        y = x * scale_power
        ctx.save_for_backward(x, y, scale, scale_power)
        ctx.constants = size, alpha, beta
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, scale, scale_power = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        correction = _channel_window_sum((dy * y).div_(scale), size)
        correction.mul_(x).mul_(2 * alpha * beta / size)
        return (dy * scale_power).sub_(correction), None, None, None, None


def _lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    # Caffe builds this from a zero-padded size x size average of x^2 and a Power layer
    # with shift 1: the `k` parameter is not used here.
    mean_square = F.avg_pool2d(x * x, size, stride=1, padding=(size - 1) // 2,
                               count_include_pad=True)
    return x * (1 + alpha * mean_square).pow(-beta)


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
