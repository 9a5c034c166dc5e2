"""conv2d with a faster input gradient for a network's first, strided, convolution.

cnn-vis back-propagates to the pixels, so every step computes the input gradient of
the first convolution: a transposed convolution to 3 channels with stride 2 (GoogLeNet's
7x7 conv1, EfficientNet's stem), which the CPU libraries run at a small fraction of
their speed. The same gradient is, for each of the stride_h * stride_w phases of the
input (rows s*r + a, columns s*q + b), a stride-1 transposed convolution with the
kernel's taps of that phase (w[:, :, a::s, b::s]). All phases run as one stride-1
transposed convolution with s*s times the output channels, then are interleaved.
GoogLeNet's conv1, forward and input gradient, is then 2x faster on a 2-core CPU
(benchmarks/bench.py, section [1c]).
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F

FEW_CHANNELS = 4  # an image (RGB, perhaps with alpha); wider inputs are fast as they are

# The number type of the phased input gradients of the convolutions run in its scope
# (`input_gradients_in`); None: their weights' type.
_INPUT_GRADIENT_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "input_gradient_dtype", default=None)


@contextlib.contextmanager
def input_gradients_in(dtype: torch.dtype) -> Iterator[None]:
    """Compute the phased input gradients of the convolutions run (forward) in this scope in
    `dtype`, whatever their weights' type: a float32 first layer's backward in bfloat16 costs
    no accuracy (its forward decides what the gradient follows) and half the time."""
    token = _INPUT_GRADIENT_DTYPE.set(dtype)
    try:
        yield
    finally:
        _INPUT_GRADIENT_DTYPE.reset(token)


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
           dilation: int | tuple[int, int] = 1, groups: int = 1) -> torch.Tensor:
    """F.conv2d, same values; by phases in the input gradient where that is faster.

    The phased gradient is for the input only: where a weight wants a gradient (the
    benchmark's 2015-style baseline), this is plain F.conv2d.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    wants_weight_gradient = weight.requires_grad or (bias is not None and bias.requires_grad)
    if (wants_weight_gradient or stride == (1, 1) or dilation != (1, 1) or groups != 1
            or x.shape[1] > FEW_CHANNELS):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return _PhasedInputGradientConv.apply(x, weight, bias, stride, padding)


class _PhasedInputGradientConv(torch.autograd.Function):
    """F.conv2d (groups 1, no dilation) whose backward gives the input gradient only."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(weight)
        ctx.geometry = stride, padding, tuple(x.shape[-2:])
        ctx.gradient_dtype = _INPUT_GRADIENT_DTYPE.get() or weight.dtype
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, dy):
        weight, = ctx.saved_tensors
        (sh, sw), (ph, pw), (height, width) = ctx.geometry
        out_channels, in_channels, kh, kw = weight.shape
        taps_h, taps_w = -(-kh // sh), -(-kw // sw)  # the most taps any phase has
        phase_kernels = weight.new_zeros(out_channels, in_channels, sh, sw, taps_h, taps_w,
                                         dtype=ctx.gradient_dtype)
        for a in range(min(sh, kh)):
            for b in range(min(sw, kw)):
                taps = weight[:, :, a::sh, b::sw]
                phase_kernels[:, :, a, b, :taps.shape[2], :taps.shape[3]] = taps
        by_phase = F.conv_transpose2d(
            dy.to(ctx.gradient_dtype),
            phase_kernels.reshape(out_channels, in_channels * sh * sw, taps_h, taps_w))
        n, _, rows, columns = by_phase.shape
        # Element (c, a, b, r, q) is the gradient at row sh*r + a, column sw*q + b of the
        # zero-padded input.
        padded = (by_phase.reshape(n, in_channels, sh, sw, rows, columns)
                  .permute(0, 1, 4, 2, 5, 3).reshape(n, in_channels, rows * sh, columns * sw))
        dx = padded[..., ph:ph + height, pw:pw + width]
        # Rows and columns that no output window reached (the last ones, when the stride
        # does not divide the input) have gradient 0.
        dx = F.pad(dx, (0, width - dx.shape[-1], 0, height - dx.shape[-2]))
        return dx.to(dy.dtype), None, None, None, None
