"""Caffe's own arithmetic where PyTorch's differs: pooling's output size and average
divisor, and local response normalisation (across channels, with its own backward pass,
and within a channel). The layer builders (`cnnvis.caffe.layers`) use these.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooling output size: ceil rounding, and no window that starts in the padding."""
    span = size + 2 * pad - kernel
    pooled = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


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


def lrn_across_channels(x: torch.Tensor, size: int, alpha: float, beta: float,
                         k: float) -> torch.Tensor:
    """y = x / (k + alpha/n * sum over n neighbouring channels of x^2)^beta, as in Caffe."""
    return _CrossChannelLRN.apply(x, size, alpha, beta, k)


# Output channels per block of the reduced-precision window sum: of 32 to 96, the fastest for
# GoogLeNet's norm2 (192 channels) in bfloat16 on a 2-core CPU.
WINDOW_SUM_BLOCK = 32


def channel_window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
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
        scale = channel_window_sum(x * x, size).mul_(alpha / size).add_(k)
        scale_power = scale.pow(-beta)
        y = x * scale_power
        ctx.save_for_backward(x, y, scale, scale_power)
        ctx.constants = size, alpha, beta
        return y

    @staticmethod
    def backward(ctx, dy):
        x, y, scale, scale_power = ctx.saved_tensors
        size, alpha, beta = ctx.constants
        correction = channel_window_sum((dy * y).div_(scale), size)
        correction.mul_(x).mul_(2 * alpha * beta / size)
        return (dy * scale_power).sub_(correction), None, None, None, None


def lrn_within_channel(x: torch.Tensor, size: int, alpha: float, beta: float) -> torch.Tensor:
    # Caffe builds this from a zero-padded size x size average of x^2 and a Power layer
    # with shift 1: the `k` parameter is not used here.
    mean_square = F.avg_pool2d(x * x, size, stride=1, padding=(size - 1) // 2,
                               count_include_pad=True)
    return x * (1 + alpha * mean_square).pow(-beta)
