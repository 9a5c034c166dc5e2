"""Sizes: size strings, the multiscale sequence, the minimum-size check."""
import re

import pytest

from cnnvis.errors import UserError
from cnnvis.sizes import MAX_PIXELS, check_min_size, parse_size, size_sequence

BASE = (333, 500)  # (height, width), e.g. an initial image's own size


@pytest.mark.parametrize("text, expected", [
    (None, BASE),
    ("", BASE),
    ("  ", BASE),
    ("x1", (333, 500)),
    ("x0.5", (166, 250)),     # 166.5 truncated
    ("x1.5", (499, 750)),     # 499.5 truncated
    ("x0.45", (149, 225)),    # 149.85 truncated
    ("x2", (666, 1000)),
    ("600x800", (600, 800)),
    (" 600x800 ", (600, 800)),
    ("600X800", (600, 800)),
    ("1x1", (1, 1)),
    ("16384x16384", (16384, 16384)),  # exactly MAX_PIXELS
])
def test_parse_size(text, expected):
    size = parse_size(text, BASE)
    assert size == expected
    assert all(type(side) is int for side in size)


@pytest.mark.parametrize("text", [
    "x", "x-1", "10x", "x10x", "abc", "nan", "inf", "xabc", "nanxnan",
    "10x20x30", "-10x20", "10.5x20", "1e9x1e9", "10 x 20", "10*20",
])
def test_parse_size_rejects_malformed_strings(text):
    with pytest.raises(UserError) as error:
        parse_size(text, BASE, option="--initial_size")
    message = str(error.value)
    assert f'--initial_size "{text}"' in message
    assert '"xF"' in message and '"HxW"' in message


@pytest.mark.parametrize("text", ["x0", "x-0.5", "xnan", "xinf", "x-inf"])
def test_parse_size_rejects_factors_that_are_not_positive_finite(text):
    with pytest.raises(UserError, match="positive finite number") as error:
        parse_size(text, BASE, option="--final_size")
    assert f'--final_size "{text}"' in str(error.value)


@pytest.mark.parametrize("text, size", [("0x10", "0x10"), ("10x0", "10x0"), ("x0.001", "0x0")])
def test_parse_size_rejects_empty_sides(text, size):
    with pytest.raises(UserError, match="at least 1 pixel") as error:
        parse_size(text, BASE)
    assert f'"{text}" gives a size of {size}' in str(error.value)


@pytest.mark.parametrize("text", ["16384x16385", "100000x100000", "99999999999999999999x2",
                                  "x1000", "x1e300", "x1e308"])
def test_parse_size_rejects_sizes_that_do_not_fit_in_memory(text):
    with pytest.raises(UserError, match="would not fit in memory") as error:
        parse_size(text, BASE)
    assert f'"{text}"' in str(error.value) and str(MAX_PIXELS) in str(error.value)


def test_size_sequence_one_size_is_the_initial_size():
    assert size_sequence((300, 400), (1000, 2000), 1, "geometric") == [(300, 400)]


def test_size_sequence_geometric():
    # Heights 270 -> 1080 and widths 480 -> 1920 grow 4x over 4 steps, sqrt(2) per step:
    # 270 * sqrt(2) = 381.84 -> 382, 540 * sqrt(2) = 763.68 -> 764;
    # 480 * sqrt(2) = 678.82 -> 679, 960 * sqrt(2) = 1357.65 -> 1358.
    assert size_sequence((270, 480), (1080, 1920), 5, "geometric") == [
        (270, 480), (382, 679), (540, 960), (764, 1358), (1080, 1920)]
    # Separately per side: widths 224 -> 448 in 2 steps, sqrt(224 * 448) = 316.78 -> 317.
    assert size_sequence((224, 224), (896, 448), 3, "geometric") == [
        (224, 224), (448, 317), (896, 448)]


def test_size_sequence_linear():
    # Heights 224, 612, 1000; widths 300, 350.5, 401 with 350.5 rounded half to even.
    sizes = size_sequence((224, 300), (1000, 401), 3, "linear")
    assert sizes == [(224, 300), (612, 350), (1000, 401)]
    assert all(type(side) is int for size in sizes for side in size)


def test_size_sequence_may_shrink():
    assert size_sequence((600, 600), (300, 300), 2, "linear") == [(600, 600), (300, 300)]


def test_size_sequence_errors():
    with pytest.raises(UserError, match="--num_sizes must be at least 1, not 0"):
        size_sequence((224, 224), (448, 448), 0, "linear")
    with pytest.raises(UserError, match='"cubic".*geometric, linear'):
        size_sequence((224, 224), (448, 448), 2, "cubic")


def test_check_min_size_accepts_sizes_at_least_the_minimum():
    check_min_size([(224, 224), (300, 500)], (224, 224), BASE)


def test_check_min_size_blames_the_initial_size():
    # Smallest factor: max(224 / 333, 224 / 500) = 0.6727 -> x0.68, giving 226x340.
    with pytest.raises(UserError) as error:
        check_min_size([(166, 250), (333, 500)], (224, 224), BASE)
    message = str(error.value)
    assert "Size 166x250 (size 1 of 2)" in message
    assert "network input 224x224" in message
    assert "--initial_size x0.68" in message
    assert "base size 333x500" in message
    assert "--initial_size 224x250" in message
    assert parse_size("x0.68", BASE) == (226, 340)


def test_check_min_size_blames_the_final_size():
    with pytest.raises(UserError) as error:
        check_min_size([(300, 300), (250, 200)], (224, 224), (224, 224))
    message = str(error.value)
    assert "Size 250x200 (size 2 of 2)" in message
    assert "--final_size x1 " in message and "--final_size 250x224" in message


@pytest.mark.parametrize("base", [(100, 100), (333, 500), (1080, 1920), (4000, 3000), (227, 225)])
def test_check_min_size_suggests_the_smallest_factor_that_works(base):
    # (100, 100) with minimum 29: 0.29 * 100 = 28.999999999999996 truncates to 28, so x0.3.
    minimum = (29, 29) if base == (100, 100) else (224, 224)
    with pytest.raises(UserError) as error:
        check_min_size([(1, 1)], minimum, base)
    factor = re.search(r"--initial_size x([\d.]+)", str(error.value))[1]
    height, width = parse_size(f"x{factor}", base)
    assert height >= minimum[0] and width >= minimum[1]
    smaller_height, smaller_width = parse_size(f"x{float(factor) - 0.01:.2f}", base)
    assert smaller_height < minimum[0] or smaller_width < minimum[1]
    if base == (100, 100):
        assert factor == "0.3"
