"""How an image larger than the network input is covered by input-sized tiles.

Pure geometry: tile starts along one axis, the regions (tile pairs) split into two
checkerboard groups, and how many regions cover each pixel. Nothing here knows of
models or tensors; see docs/algorithm.md, "Tiling (per size)".
"""
from __future__ import annotations

from dataclasses import dataclass
from types import EllipsisType

import numpy as np


def tile_starts(length: int, tile: int) -> list[int]:
    """Starts of the tiles of size `tile` that cover an axis of size `length`.

    Tries num = 1, 2, 3, ... evenly spaced starts, round(linspace(0, length - tile, num))
    (numpy's round-half-to-even), and returns the first packing whose tiles start at 0,
    end at `length`, have distinct starts, leave no gap, and do not reach the tile two
    further on. So neighbouring tiles overlap, and every pixel lies in one or two tiles.
    """
    if tile < 1 or length < tile:
        raise ValueError(f"cannot tile an axis of length {length} with tiles of length {tile}")
    # More than length - tile + 1 starts cannot all be distinct.
    for num in range(1, length - tile + 2):
        starts = [int(s) for s in np.round(np.linspace(0, length - tile, num))]
        if _is_valid_packing(starts, length, tile):
            return starts
    raise ValueError(f"no valid packing of tiles of length {tile} on an axis of length {length}")


def _is_valid_packing(starts: list[int], length: int, tile: int) -> bool:
    """Whether tiles [s, s + tile) satisfy the packing rules (a)-(e) of docs/algorithm.md."""
    ends = [start + tile for start in starts]
    if starts[0] != 0 or ends[-1] != length:
        return False
    distinct_and_gapless = all(
        starts[i] != starts[i + 1] and ends[i] >= starts[i + 1] for i in range(len(starts) - 1))
    clear_of_second_neighbour = all(ends[i] < starts[i + 2] for i in range(len(starts) - 2))
    return distinct_and_gapless and clear_of_second_neighbour


@dataclass(frozen=True)
class Region:
    """One network-input-sized box of the image: pixels [y, y + height) x [x, x + width).

    `row` and `col` are the indices of its y-tile and x-tile; their parity decides the
    region's checkerboard group.
    """

    y: int
    x: int
    height: int
    width: int
    row: int
    col: int

    @property
    def slices(self) -> tuple[EllipsisType, slice, slice]:
        """Index for the region's pixels of an array or tensor shaped (..., H, W)."""
        return ..., slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    @property
    def parity(self) -> int:
        """0 to 3, from the parities of row and col: regions of one parity never overlap,
        since a tile does not reach the tile two further on."""
        return 2 * (self.row % 2) + self.col % 2

    @property
    def is_even(self) -> bool:
        """Whether the region is in the even checkerboard group (row and col of equal parity)."""
        return self.row % 2 == self.col % 2


def checkerboard_groups(height: int, width: int, tile_height: int,
                        tile_width: int) -> tuple[list[Region], list[Region]]:
    """The (even, odd) regions tiling an image of height x width.

    Regions are all (y-tile, x-tile) pairs, listed x-tile-major (for each x-tile left to
    right, each y-tile top to bottom); each group keeps that order. Regions of one group
    overlap at most at corners, which is why a group's CNN gradients can be computed
    together on the same image.
    """
    y_starts = tile_starts(height, tile_height)
    x_starts = tile_starts(width, tile_width)
    regions = [Region(y, x, tile_height, tile_width, row, col)
               for col, x in enumerate(x_starts)
               for row, y in enumerate(y_starts)]
    even = [region for region in regions if region.is_even]
    odd = [region for region in regions if not region.is_even]
    return even, odd


def coverage_counts(height: int, width: int, tile_height: int, tile_width: int) -> np.ndarray:
    """How many regions cover each pixel: an int array (height, width) of 1, 2 or 4.

    A pixel lies in one or two tiles along each axis, and the regions are all pairs of
    tiles, so its count is the product of the two per-axis counts.
    """
    rows_per_y = _axis_coverage(height, tile_height)  # (H,)
    cols_per_x = _axis_coverage(width, tile_width)    # (W,)
    return np.outer(rows_per_y, cols_per_x)           # (H, W)


def _axis_coverage(length: int, tile: int) -> np.ndarray:
    """How many tiles cover each position of one axis: an int array (length,)."""
    counts = np.zeros(length, dtype=np.int64)
    for start in tile_starts(length, tile):
        counts[start:start + tile] += 1
    return counts


def shifted_positions(start: int, length: int, shift: int, size: int) -> slice | np.ndarray:
    """Where the positions start .. start + length - 1 of an axis rolled by `shift` come from
    in the unrolled axis of `size`: (start - shift + k) mod size. A slice where they do not
    wrap around the axis' end, else an index array."""
    first = start - shift
    if 0 <= first and first + length <= size:
        return slice(first, first + length)
    return (first + np.arange(length)) % size


def reachable_positions(length: int, tile: int, parity: int, jitter: int) -> np.ndarray:
    """Whether each position of an axis (a bool array (length,)) lies in a tile of the
    given index parity once the axis is rolled by any shift in [-jitter, jitter]."""
    reachable = np.zeros(length, dtype=bool)
    for start in tile_starts(length, tile)[parity::2]:
        reachable[np.arange(start - jitter, start + tile + jitter) % length] = True
    return reachable
