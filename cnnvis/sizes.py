"""Image sizes: the `--initial_size`/`--final_size` strings, the multiscale sequence, its checks.

Sizes are (height, width) tuples of ints. See docs/algorithm.md, "Sizes".
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from cnnvis.errors import UserError

# Refuse sizes above this many pixels: one float32 channel of such an image is 1 GiB,
# and the optimiser keeps several full-size three-channel arrays.
MAX_PIXELS = 2 ** 28

RESIZE_TYPES = ("geometric", "linear")

_ACCEPTED_FORMS = ('accepted forms are "xF", a positive multiple F of the base size '
                   '(e.g. x0.5), and "HxW", positive integer height and width (e.g. 600x800)')
_HEIGHT_X_WIDTH = re.compile(r"(\d+)x(\d+)")
_TOO_LARGE = f"which would not fit in memory (at most {MAX_PIXELS} pixels); use a smaller size."


def parse_size(text: str | None, base: tuple[int, int], option: str = "size") -> tuple[int, int]:
    """The (height, width) that a size string means, relative to the base size.

    None or "" mean `base`; "xF" means (int(F * base height), int(F * base width)),
    truncated; "HxW" means (H, W). `option` names the string's source in error messages
    (e.g. "--initial_size"). Raises UserError for anything else, for sides under one
    pixel, and for sizes over MAX_PIXELS.
    """
    if text is None or not text.strip():
        return base
    spec = text.strip().lower()
    if spec.startswith("x"):
        height, width = _scaled_size(spec[1:], base, text, option)
    elif match := _HEIGHT_X_WIDTH.fullmatch(spec):
        if max(len(match[1]), len(match[2])) > 9:   # checked before int(), which refuses 4,300 digits
            raise UserError(f'{option} "{_shortened(text)}" has a side of more than 9 digits, {_TOO_LARGE}')
        height, width = int(match[1]), int(match[2])
    else:
        raise UserError(f'{option} "{text}" is not a size; {_ACCEPTED_FORMS}.')

    if height < 1 or width < 1:
        raise UserError(f'{option} "{text}" gives a size of {height}x{width}, but both sides must '
                        f'be at least 1 pixel (the base size is {base[0]}x{base[1]}); use a larger size.')
    if height * width > MAX_PIXELS:
        raise UserError(f'{option} "{text}" is {height}x{width} pixels, {_TOO_LARGE}')
    return height, width


def _shortened(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


def _scaled_size(factor_text: str, base: tuple[int, int], text: str,
                 option: str) -> tuple[int, int]:
    """The truncated size that "xF" means; F must be a positive finite number."""
    try:
        factor = float(factor_text)
    except ValueError:
        raise UserError(f'{option} "{text}": "{factor_text}" is not a number; {_ACCEPTED_FORMS}.') from None
    if not (math.isfinite(factor) and factor > 0):
        raise UserError(f'{option} "{text}": the factor must be a positive finite number; '
                        f'{_ACCEPTED_FORMS}.')
    # Checked before int(), which cannot convert a side that overflowed to inf.
    if factor * max(base) > MAX_PIXELS:
        raise UserError(f'{option} "{text}" is {factor:g} times the base size {base[0]}x{base[1]}, '
                        f'{_TOO_LARGE}')
    return int(factor * base[0]), int(factor * base[1])


def size_sequence(initial: tuple[int, int], final: tuple[int, int], num_sizes: int,
                  resize_type: str) -> list[tuple[int, int]]:
    """The sizes to optimise at, from `initial` to `final` inclusive.

    One size is just `initial`. Otherwise heights and widths are each spaced
    geometrically (numpy's logspace between the log10 of the ends) or linearly
    (linspace), then rounded to the nearest integer, half to even, as np.round does.
    """
    if num_sizes < 1:
        raise UserError(f"--num_sizes must be at least 1, not {num_sizes}.")
    if num_sizes == 1:
        return [initial]
    ends = np.asarray([initial, final], dtype=np.float64)  # (2, 2): rows initial/final, cols H/W
    if resize_type == "geometric":
        sizes = np.logspace(np.log10(ends[0]), np.log10(ends[1]), num_sizes)  # (num_sizes, 2)
    elif resize_type == "linear":
        sizes = np.linspace(ends[0], ends[1], num_sizes)  # (num_sizes, 2)
    else:
        raise UserError(f'--resize_type "{resize_type}" is unknown; use one of {", ".join(RESIZE_TYPES)}.')
    return [(int(height), int(width)) for height, width in np.round(sizes)]


def check_min_size(sizes: Sequence[tuple[int, int]], minimum: tuple[int, int],
                   base: tuple[int, int]) -> None:
    """Raise UserError unless every size is at least `minimum` (the network input) in both sides.

    The sizes are monotone in each side, so a too-small size means a too-small end: the
    message blames --initial_size when the first size is too small, else --final_size,
    and suggests a value for it, both as a multiple of `base` and as HxW.
    """
    min_height, min_width = minimum
    for index, (height, width) in enumerate(sizes):
        if height >= min_height and width >= min_width:
            continue
        option = "--initial_size" if index == 0 else "--final_size"
        raise UserError(
            f"Size {height}x{width} (size {index + 1} of {len(sizes)}) is smaller than the network "
            f"input {min_height}x{min_width}; every size must be at least that in both height and "
            f"width. Use a larger {option}, e.g. {option} {_smallest_factor(minimum, base)} "
            f"(a multiple of the base size {base[0]}x{base[1]}) or {option} "
            f"{max(height, min_height)}x{max(width, min_width)}.")


def _smallest_factor(minimum: tuple[int, int], base: tuple[int, int]) -> str:
    """The smallest "xF" string, F in hundredths, whose size is at least `minimum`."""
    hundredths = math.ceil(100 * max(m / b for m, b in zip(minimum, base)))
    # Float rounding in F * base side may still truncate below the minimum: step up.
    while any(int(hundredths / 100 * b) < m for m, b in zip(minimum, base)):
        hundredths += 1
    return f"x{hundredths / 100:g}"
