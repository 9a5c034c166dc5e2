"""Tiling: tile packing along one axis, checkerboard regions, per-pixel coverage."""
import numpy as np
import pytest

from cnnvis.tiling import (Region, checkerboard_groups, coverage_counts, reachable_positions,
                           shifted_positions, tile_starts)


# Hand computation with tile l = 224 (starts = round(linspace(0, L - 224, num))):
#   L = 224: num 1 -> [0], which ends at 224 = L.
#   L = 300: num 1 ends at 224 != 300; num 2 -> [0, 76]: tile 0 ends at 224 >= 76, no gap.
#   L = 448: num 2 -> [0, 224]: tile 0 ends at 224 >= 224, so the tiles touch (no gap).
#   L = 500: num 2 -> [0, 276]: gap (224 < 276); num 3 -> [0, 138, 276]: no gaps, and
#            tile 0 ends at 224 < 276, clear of tile 2.
#   L = 497: num 3 -> [0, 136.5, 273]; 136.5 rounds half to even, to 136.
#   L = 1000: L - l = 776; num 3 -> step 388 > 224, gap; num 4 -> step 258.7, gap;
#            num 5 -> [0, 194, 388, 582, 776]: step 194 <= 224 and 2 * 194 > 224.
@pytest.mark.parametrize("length, expected", [
    (224, [0]),
    (300, [0, 76]),
    (448, [0, 224]),
    (500, [0, 138, 276]),
    (497, [0, 136, 273]),
    (1000, [0, 194, 388, 582, 776]),
])
def test_tile_starts_hand_worked(length, expected):
    assert tile_starts(length, 224) == expected


def _satisfies_packing_rules(starts: list[int], length: int, tile: int) -> bool:
    """Rules (a)-(e) of docs/algorithm.md, written independently of the module."""
    ends = [s + tile for s in starts]
    pairs = list(zip(starts, starts[1:]))
    return (starts[0] == 0 and ends[-1] == length
            and all(a != b for a, b in pairs)
            and all(end >= nxt for end, nxt in zip(ends, starts[1:]))
            and all(end < after_next for end, after_next in zip(ends, starts[2:])))


@pytest.mark.parametrize("tile", [1, 2, 3, 7, 32, 224])
def test_tile_starts_is_the_first_valid_packing(tile):
    for length in range(tile, 12 * tile + 5):
        starts = tile_starts(length, tile)
        assert _satisfies_packing_rules(starts, length, tile), (length, starts)
        for fewer in range(1, len(starts)):
            candidate = [int(s) for s in np.round(np.linspace(0, length - tile, fewer))]
            assert not _satisfies_packing_rules(candidate, length, tile), (length, candidate)


def test_tile_starts_rejects_axis_shorter_than_tile():
    with pytest.raises(ValueError, match="223"):
        tile_starts(223, 224)


# A 3x3 tile grid: height 500 with tile 224 -> y starts [0, 138, 276];
# width 250 with tile 100 -> x starts [0, 75, 150] (num 2 -> [0, 150] leaves a gap).
GRID = dict(height=500, width=250, tile_height=224, tile_width=100)
Y_STARTS, X_STARTS = [0, 138, 276], [0, 75, 150]


def test_checkerboard_groups_order_and_parity():
    even, odd = checkerboard_groups(**GRID)
    # x-tile-major: (row, col) = (0,0) (1,0) (2,0) (0,1) (1,1) (2,1) (0,2) (1,2) (2,2).
    assert [(r.row, r.col) for r in even] == [(0, 0), (2, 0), (1, 1), (0, 2), (2, 2)]
    assert [(r.row, r.col) for r in odd] == [(1, 0), (0, 1), (2, 1), (1, 2)]
    for region in even + odd:
        assert (region.y, region.x) == (Y_STARTS[region.row], X_STARTS[region.col])
        assert (region.height, region.width) == (224, 100)
        assert region.is_even == (region in even)


def test_region_slices_index_the_box():
    image = np.arange(2 * 10 * 12).reshape(2, 10, 12)
    region = Region(y=3, x=5, height=4, width=6, row=1, col=0)
    np.testing.assert_array_equal(image[region.slices], image[:, 3:7, 5:11])
    assert image[0][region.slices].shape == (4, 6)


def test_coverage_counts_hand_worked():
    counts = coverage_counts(**GRID)
    assert counts.shape == (500, 250)
    # y tiles [0,224) [138,362) [276,500): rows 138..223 and 276..361 are in two tiles.
    # x tiles [0,100) [75,175) [150,250): cols 75..99 and 150..174 are in two tiles.
    assert counts[0, 0] == 1 and counts[137, 74] == 1 and counts[224, 100] == 1
    assert counts[138, 0] == 2 and counts[0, 75] == 2 and counts[300, 120] == 2
    assert counts[138, 75] == 4 and counts[361, 174] == 4 and counts[223, 99] == 4
    assert set(np.unique(counts)) == {1, 2, 4}
    assert counts.sum() == 9 * 224 * 100  # every pixel of each of the 9 regions, once


@pytest.mark.parametrize("height, width", [(224, 224), (448, 300), (731, 1000)])
def test_coverage_counts_match_regions(height, width):
    even, odd = checkerboard_groups(height, width, 224, 224)
    expected = np.zeros((height, width), dtype=np.int64)
    for region in even + odd:
        expected[region.slices] += 1
    counts = coverage_counts(height, width, 224, 224)
    np.testing.assert_array_equal(counts, expected)
    assert set(np.unique(counts)) <= {1, 2, 4}
    assert counts.sum() == sum(r.height * r.width for r in even + odd)


def test_same_group_regions_in_a_row_or_column_do_not_overlap():
    # Rule (e) keeps tile i clear of tile i + 2; same-group regions only meet diagonally.
    for group in checkerboard_groups(1000, 1300, 224, 224):
        for a in group:
            for b in group:
                if a != b and (a.row == b.row or a.col == b.col):
                    overlap_y = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
                    overlap_x = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
                    assert overlap_y <= 0 or overlap_x <= 0, (a, b)


def test_shifted_positions_read_the_rolled_axis():
    axis = np.arange(10) * 10
    for start, length, shift in [(2, 4, 0), (2, 4, 2), (0, 4, 3), (7, 3, -1), (0, 10, 4)]:
        rolled = np.roll(axis, shift)
        positions = shifted_positions(start, length, shift, 10)
        np.testing.assert_array_equal(axis[positions], rolled[start:start + length])
    assert shifted_positions(2, 4, 2, 10) == slice(0, 4)          # no wrap: a view
    np.testing.assert_array_equal(shifted_positions(0, 4, 3, 10), [7, 8, 9, 0])


def test_reachable_positions_hand_worked():
    # Length 250, tile 100: starts [0, 75, 150]; parity 0 has tiles 0 and 2, parity 1 tile 1.
    np.testing.assert_array_equal(np.flatnonzero(~reachable_positions(250, 100, 0, 0)),
                                  np.arange(100, 150))
    np.testing.assert_array_equal(np.flatnonzero(reachable_positions(250, 100, 1, 0)),
                                  np.arange(75, 175))
    # A jitter of 5 reaches 5 further each way, around the axis' ends too.
    np.testing.assert_array_equal(np.flatnonzero(reachable_positions(250, 100, 1, 5)),
                                  np.arange(70, 180))
    np.testing.assert_array_equal(np.flatnonzero(~reachable_positions(250, 100, 0, 5)),
                                  np.arange(105, 145))
    reach = reachable_positions(500, 224, 1, 10)                   # starts [0, 138, 276]
    np.testing.assert_array_equal(np.flatnonzero(reach), np.arange(128, 372))
