"""Image regularisers: pure functions returning a value and its exact gradient.

Each takes one image region x of shape (C, h, w) (float32 or float64) and a `scale` that
x is divided by first, and returns R(x / scale) and its gradient with respect to x
(the chain rule's 1 / scale included). Gradients are closed-form, so no autograd graph
is built; they run once per tile per step. See docs/algorithm.md, "One region's gradient".
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class ValueAndGradient(NamedTuple):
    """What every regulariser returns: its value and its gradient with respect to x."""

    value: torch.Tensor     # 0-dim, x's dtype and device
    gradient: torch.Tensor  # x's shape, dtype and device


# Floor on the squared image gradient before the power beta / 2, so that beta < 2 never
# takes a negative power of zero.
TV_FLOOR = 1e-3

# Each operator's correlation kernels (x difference, y difference), applied per channel
# where they fit (valid correlation, no padding).
# naive: dx = x[i, j] - x[i, j+1], dy = x[i, j] - x[i+1, j] (on the top-left (h-1, w-1)).
_TV_KERNELS: dict[str, tuple[list[list[float]], list[list[float]]]] = {
    "naive": ([[1, -1], [0, 0]],
              [[1, 0], [-1, 0]]),
    "sobel": ([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
              [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "sobel_squish": ([[-1, 1, 0], [-2, 2, 0], [-1, 1, 0]],
                     [[-1, -2, -1], [1, 2, 1], [0, 0, 0]]),
}
TV_OPERATORS = tuple(_TV_KERNELS)


@torch.no_grad()
def p_norm(x: torch.Tensor, alpha: float, scale: float = 1.0) -> ValueAndGradient:
    """P = sum |x / scale|^alpha and its gradient (alpha / scale) sign(x) |x / scale|^(alpha - 1).

    Keeps pixels from growing large; alpha >= 1.
    """
    magnitude = (x / scale).abs()                # (C, h, w)
    power_below = magnitude ** (alpha - 1)       # shared by the value and the gradient
    value = (power_below * magnitude).sum()
    gradient = (alpha / scale) * x.sign() * power_below
    return ValueAndGradient(value, gradient)


@torch.no_grad()
def total_variation(x: torch.Tensor, beta: float, operator: str = "naive",
                    scale: float = 1.0) -> ValueAndGradient:
    """TV = sum over pixels and channels of max(dx^2 + dy^2, TV_FLOOR)^(beta / 2), of x / scale.

    dx and dy are the operator's differences (`naive`, `sobel` or `sobel_squish`; see
    _TV_KERNELS). The floor's gradient is 0 where it is active (dx^2 + dy^2 < TV_FLOOR).
    """
    if operator not in _TV_KERNELS:
        raise ValueError(f'unknown TV operator "{operator}"; use one of {", ".join(TV_OPERATORS)}')
    x_kernel, y_kernel = _TV_KERNELS[operator]
    scaled = x / scale
    dx = _correlate(scaled, x_kernel)  # (C, h', w')
    dy = _correlate(scaled, y_kernel)  # (C, h', w')
    squared_norm = dx ** 2 + dy ** 2
    floored = squared_norm < TV_FLOOR
    squared_norm = squared_norm.clamp_min(TV_FLOOR)
    power_below = squared_norm ** (beta / 2 - 1)  # shared by the value and the gradient
    value = (power_below * squared_norm).sum()

    # d TV / d squared_norm, zero where the floor holds the value constant.
    weight = torch.where(floored, 0.0, (beta / 2) * power_below)  # (C, h', w')
    # d TV / d dx = 2 dx weight (likewise dy), then back through the linear differences.
    gradient = torch.zeros_like(x)
    _add_correlation_adjoint(gradient, 2 * dx * weight, x_kernel)
    _add_correlation_adjoint(gradient, 2 * dy * weight, y_kernel)
    return ValueAndGradient(value, gradient / scale)


def _correlate(x: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    """Valid 2-D correlation of each channel of x (C, h, w) with a small kernel (k, k).

    A sum of shifted slices, one per non-zero tap: on CPU this is many times faster than
    conv2d for these 2x2 and 3x3 kernels. Returns (C, h - k + 1, w - k + 1).
    """
    out_height, out_width = x.shape[1] - len(kernel) + 1, x.shape[2] - len(kernel[0]) + 1
    return sum(weight * x[:, i:i + out_height, j:j + out_width]
               for i, j, weight in _taps(kernel))


def _add_correlation_adjoint(gradient: torch.Tensor, output_gradient: torch.Tensor,
                             kernel: list[list[float]]) -> None:
    """Add to gradient (C, h, w) the pull-back of output_gradient (C, h', w') through _correlate."""
    out_height, out_width = output_gradient.shape[1:]
    for i, j, weight in _taps(kernel):
        gradient[:, i:i + out_height, j:j + out_width] += weight * output_gradient


def _taps(kernel: list[list[float]]) -> list[tuple[int, int, float]]:
    """The (row, column, weight) of each non-zero entry of a kernel."""
    return [(i, j, weight) for i, row in enumerate(kernel) for j, weight in enumerate(row) if weight]
