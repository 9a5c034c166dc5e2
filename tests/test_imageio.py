"""Tests for cnnvis.imageio (reading user files, atomic writing) and cnnvis.pixels (conversions)."""
from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis import imageio
from cnnvis.errors import UserError
from cnnvis.imageio import (
    atomic_write,
    check_writable_output,
    intermediate_path,
    load_mean_colour,
    load_rgb,
    save_png,
    sibling_path,
)
from cnnvis.pixels import image_to_rgb, resize_rgb, rgb_to_image

IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def assert_user_error_names(path: Path, excinfo: pytest.ExceptionInfo[UserError],
                            *words: str) -> None:
    """The message is one line, names the file and contains the given problem words."""
    message = str(excinfo.value)
    assert str(path) in message
    assert "\n" not in message
    for word in words:
        assert word in message


# ----------------------------------------------------------------------------- conversion

def test_rgb_to_image_subtracts_mean_in_bgr_order():
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)  # (1, 2, 3): two pixels
    image = rgb_to_image(rgb, (1.0, 2.0, 3.0))
    assert image.shape == (1, 3, 1, 2)
    assert image.dtype == torch.float32
    # Channel 0 is blue (RGB index 2) minus mean B = 1, and so on.
    assert image[0, :, 0, 0].tolist() == [29.0, 18.0, 7.0]
    assert image[0, :, 0, 1].tolist() == [-1.0, 98.0, 197.0]


@pytest.mark.parametrize("rescale", [False, True])
def test_rgb_image_round_trip_is_exact(rescale):
    rgb = random_rgb(5, 7)
    rgb[0, 0] = 0      # full range, so rescaling is the identity
    rgb[0, 1] = 255
    image = rgb_to_image(rgb, IMAGENET_MEAN_BGR)
    np.testing.assert_array_equal(image_to_rgb(image, IMAGENET_MEAN_BGR, rescale=rescale), rgb)


def test_image_to_rgb_clips_and_rounds():
    mean = (10.0, 20.0, 30.0)
    pixel_bgr = torch.tensor([-50.0, 127.6, 300.0])  # values once the mean is added back
    image = (pixel_bgr - torch.tensor(mean)).view(1, 3, 1, 1)
    # RGB order: R = 300 -> 255, G = 127.6 -> 128, B = -50 -> 0.
    assert image_to_rgb(image, mean).tolist() == [[[255, 128, 0]]]


def test_image_to_rgb_rescale_maps_min_max_to_full_range():
    mean = (10.0, 20.0, 30.0)
    # Two pixels, BGR values after adding the mean: (-100, 0, 100) and (200, 300, 410):
    # min -100 -> 0, max 410 -> 255, so v -> (v + 100) / 2.
    values = torch.tensor([[-100.0, 200.0], [0.0, 300.0], [100.0, 410.0]])  # (3, 2)
    image = (values - torch.tensor(mean).view(3, 1)).view(1, 3, 1, 2)
    rgb = image_to_rgb(image, mean, rescale=True)
    assert rgb.tolist() == [[[100, 50, 0], [255, 200, 150]]]
    # Without rescale the same image is clipped.
    assert image_to_rgb(image, mean).tolist() == [[[100, 0, 0], [255, 255, 200]]]


@pytest.mark.parametrize("value, expected", [(100.0, 100), (300.0, 255)])
def test_image_to_rgb_rescale_of_constant_image_clips_without_dividing(value, expected):
    image = torch.full((1, 3, 2, 2), value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by zero would warn
        rgb = image_to_rgb(image, (0.0, 0.0, 0.0), rescale=True)
    assert (rgb == expected).all()


def test_image_to_rgb_rejects_a_batch():
    with pytest.raises(ValueError, match="shape"):
        image_to_rgb(torch.zeros(2, 3, 4, 4), IMAGENET_MEAN_BGR)


def test_resize_rgb_keeps_an_image_of_the_right_size_as_is():
    rgb = random_rgb(4, 6)
    assert resize_rgb(rgb, (4, 6)) is rgb


def test_resize_rgb_uses_pillow_bicubic_with_height_width_order():
    rgb = random_rgb(8, 8)
    resized = resize_rgb(rgb, (3, 5))  # (height, width)
    assert resized.shape == (3, 5, 3) and resized.dtype == np.uint8
    expected = np.array(Image.fromarray(rgb).resize((5, 3), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(resized, expected)
    bilinear = np.array(Image.fromarray(rgb).resize((5, 3), Image.Resampling.BILINEAR))
    assert not np.array_equal(resized, bilinear)  # the filter matters for the check above


# ----------------------------------------------------------------------------- reading

def test_load_rgb_reads_rgb_png_exactly(tmp_path):
    rgb = random_rgb(3, 4)
    path = tmp_path / "in.png"
    Image.fromarray(rgb).save(path)
    loaded = load_rgb(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, rgb)


def test_load_rgb_drops_alpha(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], dtype=np.uint8)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    assert load_rgb(path).tolist() == [[[10, 20, 30], [40, 50, 60]]]


def test_load_rgb_expands_grey_to_three_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8)).save(path)
    assert load_rgb(path).tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]


def test_load_rgb_scales_16_bit_grey_instead_of_clipping(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)).save(path)
    assert load_rgb(path)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_load_rgb_maps_palette_to_colours(tmp_path):
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putdata([1, 0])
    path = tmp_path / "palette.gif"
    palette_image.save(path)
    assert load_rgb(path).tolist() == [[[0, 0, 255], [255, 0, 0]]]


def test_load_rgb_applies_exif_orientation(tmp_path):
    rgb = random_rgb(2, 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer rotates 90 degrees clockwise
    path = tmp_path / "rotated.png"
    Image.fromarray(rgb).save(path, exif=exif)
    np.testing.assert_array_equal(load_rgb(path), np.rot90(rgb, k=-1))


def test_load_rgb_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(UserError) as excinfo:
        load_rgb(path)
    assert_user_error_names(path, excinfo, "no such file")


def test_load_rgb_directory(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_rgb(tmp_path)
    assert_user_error_names(tmp_path, excinfo, "directory")


def test_load_rgb_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    Image.fromarray(random_rgb(2, 2)).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user (e.g. root) can read a chmod 000 file")
        with pytest.raises(UserError) as excinfo:
            load_rgb(path)
        assert_user_error_names(path, excinfo, "permission denied", "chmod")
    finally:
        path.chmod(0o644)


def test_load_rgb_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 10)
    with pytest.raises(UserError) as excinfo:
        load_rgb(path)
    assert_user_error_names(path, excinfo, "not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_load_rgb_truncated_image_fails_at_load_time(tmp_path, fmt):
    data = encoded(Image.fromarray(random_rgb(32, 32)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image:
        assert image.size == (32, 32)  # the header survives: only a full decode notices
    with pytest.raises(UserError) as excinfo:
        load_rgb(path)
    assert_user_error_names(path, excinfo, "truncated")


def test_load_rgb_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.fromarray(random_rgb(10, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 100 pixels > twice the limit
    with pytest.raises(UserError) as excinfo:
        load_rgb(path)
    assert_user_error_names(path, excinfo, "decompression bomb", "downscale")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_load_rgb_damaged_files_raise_only_user_errors(tmp_path, fmt):
    """Deterministic fuzzing: corrupted and cut files give an image or a UserError, nothing else."""
    data = encoded(Image.fromarray(random_rgb(12, 12)), fmt)
    rng = np.random.default_rng(1)
    path = tmp_path / f"damaged.{fmt.lower()}"
    for case in range(40):
        damaged = bytearray(data[: rng.integers(1, len(data) + 1)] if case % 2 else data)
        for position in rng.integers(0, len(damaged), size=3):
            damaged[position] = rng.integers(0, 256)
        path.write_bytes(bytes(damaged))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF
            try:
                rgb = load_rgb(path)
            except UserError as exc:
                assert str(path) in str(exc)
            else:
                assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


# ----------------------------------------------------------------------------- writing

def test_save_png_writes_pixels_and_text(tmp_path):
    rgb = random_rgb(4, 5)
    path = tmp_path / "out.png"
    text = {"Software": "cnn-vis", "command": "cnn_vis.py --tv_reg 0.5 --output_file réve ✓.png"}
    save_png(path, rgb, text)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.text == text  # the non-Latin-1 value went into an iTXt chunk
        np.testing.assert_array_equal(np.array(image), rgb)
    assert os.listdir(tmp_path) == ["out.png"]


def test_save_png_gives_the_usual_file_permissions(tmp_path):
    old_umask = os.umask(0o027)
    try:
        save_png(tmp_path / "out.png", random_rgb(2, 2))
    finally:
        os.umask(old_umask)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o640


def test_save_png_replaces_an_existing_file(tmp_path):
    path = tmp_path / "out.png"
    save_png(path, random_rgb(2, 2, seed=1))
    new = random_rgb(3, 3, seed=2)
    save_png(path, new)
    np.testing.assert_array_equal(load_rgb(path), new)
    assert os.listdir(tmp_path) == ["out.png"]


def failing_png_encoder(error: BaseException):
    """A Pillow PNG save function that writes some bytes, then fails like a full disk."""
    def save(image, file, filename):
        file.write(b"\x89PNG\r\n\x1a\n partial")
        raise error
    return save


def test_failed_write_leaves_existing_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    old = random_rgb(3, 3)
    save_png(path, old)
    old_bytes = path.read_bytes()
    no_space = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setitem(Image.SAVE, "PNG", failing_png_encoder(no_space))
    with pytest.raises(UserError) as excinfo:
        save_png(path, random_rgb(3, 3, seed=5))
    assert_user_error_names(path, excinfo, os.strerror(errno.ENOSPC), "disk space")
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["out.png"]


def test_failed_write_with_a_bug_propagates_the_bug_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setitem(Image.SAVE, "PNG", failing_png_encoder(RuntimeError("encoder bug")))
    with pytest.raises(RuntimeError, match="encoder bug"):
        save_png(tmp_path / "out.png", random_rgb(2, 2))
    assert os.listdir(tmp_path) == []


def test_atomic_write_writes_arbitrary_bytes(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with atomic_write(path) as file:
        file.write(b"new contents")
        assert path.read_bytes() == b"old"  # nothing visible until the body completes
    assert path.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_atomic_write_into_missing_directory_is_a_user_error(tmp_path):
    path = tmp_path / "missing" / "out.png"
    with pytest.raises(UserError) as excinfo:
        with atomic_write(path) as file:
            file.write(b"never")
    assert_user_error_names(path, excinfo)


# ----------------------------------------------------------------------------- output paths

def test_check_writable_output_accepts_a_new_or_existing_file_and_leaves_nothing(tmp_path):
    check_writable_output(tmp_path / "out.png")
    (tmp_path / "old.PNG").write_bytes(b"x")
    check_writable_output(tmp_path / "old.PNG")
    assert os.listdir(tmp_path) == ["old.PNG"]


def test_check_writable_output_directory(tmp_path):
    with pytest.raises(UserError) as excinfo:
        check_writable_output(tmp_path)
    assert_user_error_names(tmp_path, excinfo, "is a directory", "out.png")


def test_check_writable_output_missing_directory(tmp_path):
    path = tmp_path / "no" / "such" / "out.png"
    with pytest.raises(UserError) as excinfo:
        check_writable_output(path)
    assert_user_error_names(path, excinfo, "mkdir -p")


def test_check_writable_output_requires_png(tmp_path):
    path = tmp_path / "out.jpg"
    with pytest.raises(UserError) as excinfo:
        check_writable_output(path)
    assert_user_error_names(path, excinfo, ".png", str(tmp_path / "out.png"))


def test_check_writable_output_read_only_directory(tmp_path):
    directory = tmp_path / "read_only"
    directory.mkdir(mode=0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("this user (e.g. root) can write to a read-only directory")
        with pytest.raises(UserError) as excinfo:
            check_writable_output(directory / "out.png")
        assert_user_error_names(directory / "out.png", excinfo, "ermission denied")
    finally:
        directory.chmod(0o755)


def test_check_writable_output_reports_a_refused_file_creation(tmp_path, monkeypatch):
    """Whoever runs the tests (root included), a refused creation becomes a UserError."""
    def refuse(target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    monkeypatch.setattr(imageio, "_create_temp_file", refuse)
    path = tmp_path / "out.png"
    with pytest.raises(UserError) as excinfo:
        check_writable_output(path)
    assert_user_error_names(path, excinfo, os.strerror(errno.EACCES), "permissions")


def test_intermediate_and_sibling_paths():
    assert intermediate_path("runs/out.png", 2, 50) == Path("runs/out_2_50.png")
    assert intermediate_path(Path("a.b.png"), 1, 100) == Path("a.b_1_100.png")
    assert sibling_path("runs/out.png", "show") == Path("runs/out_show.png")
    assert sibling_path("out.png", "pix") == Path("out_pix.png")


# ----------------------------------------------------------------------------- mean colour

def test_load_mean_colour_reduces_a_mean_image_per_channel(tmp_path):
    mean_image = np.stack([np.full((4, 5), 100.0), np.full((4, 5), 110.0), np.zeros((4, 5))])
    mean_image[2, 0, :2] = [20.0, 30.0]  # channel 2 sums to 50 over 20 pixels
    path = tmp_path / "mean.npy"
    np.save(path, mean_image.astype(np.float32))
    assert load_mean_colour(path) == pytest.approx((100.0, 110.0, 2.5))


@pytest.mark.parametrize("vector", [np.array([104.0, 117.0, 123.0]),
                                    np.array([104, 117, 123], dtype=np.uint8)])
def test_load_mean_colour_accepts_a_bgr_vector(tmp_path, vector):
    path = tmp_path / "mean.npy"
    np.save(path, vector)
    mean = load_mean_colour(path)
    assert mean == (104.0, 117.0, 123.0)
    assert all(type(channel) is float for channel in mean)


@pytest.mark.parametrize("array, problem", [
    (np.zeros(4), "shape"),
    (np.zeros((2, 2, 3)), "shape"),          # channels last is not Caffe's layout
    (np.zeros((1, 3, 2, 2)), "shape"),
    (np.zeros((3, 0, 0)), "shape"),
    (np.array([1.0, np.nan, 2.0]), "NaN"),
    (np.array([1.0, np.inf, 2.0]), "infinite"),
    (np.array([True, False, True]), "dtype"),
    (np.array([1j, 2, 3]), "dtype"),
])
def test_load_mean_colour_rejects_bad_arrays(tmp_path, array, problem):
    path = tmp_path / "mean.npy"
    np.save(path, array)
    with pytest.raises(UserError) as excinfo:
        load_mean_colour(path)
    assert_user_error_names(path, excinfo, problem, "(3, H, W)", "length-3")


def test_load_mean_colour_never_unpickles(tmp_path):
    path = tmp_path / "mean.npy"
    np.save(path, np.array([1.0, "two", None], dtype=object), allow_pickle=True)
    with pytest.raises(UserError) as excinfo:
        load_mean_colour(path)
    assert_user_error_names(path, excinfo, "allow_pickle", "(3, H, W)")


@pytest.mark.parametrize("name, contents", [
    ("mean.binaryproto", b"\x08\x01\x10\x03 not numpy"),
    ("mean.npz", None),
    ("mean.npy", b""),
])
def test_load_mean_colour_rejects_files_that_are_not_npy(tmp_path, name, contents):
    path = tmp_path / name
    if contents is None:
        np.savez(path, mean=np.zeros(3))
    else:
        path.write_bytes(contents)
    with pytest.raises(UserError) as excinfo:
        load_mean_colour(path)
    assert_user_error_names(path, excinfo, ".npy")


def test_load_mean_colour_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError) as excinfo:
        load_mean_colour(tmp_path / "nope.npy")
    assert_user_error_names(tmp_path / "nope.npy", excinfo, "no such file")
    with pytest.raises(UserError) as excinfo:
        load_mean_colour(tmp_path)
    assert_user_error_names(tmp_path, excinfo, "directory")
