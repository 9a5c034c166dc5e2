"""Reading and writing images without ever losing the user's work.

The optimised image is a float32 tensor (1, 3, H, W) in BGR order, in pixel units
(0..255) minus the model's mean colour (ALGORITHM.md, "Image representation").
Files on disk are 8-bit RGB. This module converts between the two, reads user
files with errors that say what to fix, and writes every output atomically: a
crash or a full disk never leaves a half-written file or destroys an older one.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cnnvis.errors import UserError

PathLike = str | os.PathLike[str]


# ----------------------------------------------------------------------------- reading

def load_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    Alpha is dropped, grey and palette images become 3 channels, 16-bit grey is
    scaled (not clipped) to 8 bits, and the EXIF orientation is applied so the
    pixels are the way image viewers show them. The image is decoded in full here,
    so a truncated file fails now, not hours later. Pillow's decompression-bomb
    limit stays on. Every problem with the file is a UserError naming the file.
    """
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise _unreadable_file_error("image", path, exc) from None
    with file:
        try:
            with Image.open(file) as image:
                image.load()
                return _to_rgb_array(ImageOps.exif_transpose(image))
        except UnidentifiedImageError:
            raise UserError(f"cannot read image '{path}': not an image file Pillow can decode; "
                            f"give a PNG or JPEG image (or convert the file to one)") from None
        except Image.DecompressionBombError as exc:
            raise UserError(f"cannot read image '{path}': {exc}; downscale the image below "
                            f"{Image.MAX_IMAGE_PIXELS} pixels first") from None
        except Exception as exc:  # noqa: BLE001 - Pillow's decoders signal bad data with many
            # types (OSError, SyntaxError, ValueError, EOFError, struct.error, ...): a damaged file.
            raise UserError(f"cannot read image '{path}': the image data is truncated or corrupt "
                            f"({type(exc).__name__}: {exc}); re-download or re-export the file"
                            ) from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of a decoded Pillow image of any mode."""
    if image.mode.startswith("I;16"):
        # Pillow's convert("RGB") clips 16-bit grey to 0..255 (a white image); scale instead.
        grey = np.rint(np.asarray(image, dtype=np.float64) / 257.0).astype(np.uint8)  # (H, W)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    return np.array(image.convert("RGB"))


def _unreadable_file_error(kind: str, path: PathLike, exc: OSError) -> UserError:
    """UserError for a file that cannot be opened at all, with the usual fix for each cause."""
    if isinstance(exc, FileNotFoundError):
        problem = "no such file; check the path and its spelling"
    elif isinstance(exc, IsADirectoryError):
        problem = "it is a directory; give the path of a file inside it"
    elif isinstance(exc, PermissionError):
        problem = f"permission denied; make the file readable (chmod u+r '{path}')"
    else:
        problem = f"{exc.strerror or exc}; check the file and the disk"
    return UserError(f"cannot read {kind} '{path}': {problem}")


def load_mean_colour(npy_path: PathLike) -> tuple[float, float, float]:
    """The BGR mean colour stored in a NumPy .npy file (for `--mean_image`).

    Accepts a (3, H, W) BGR mean image, reduced to its per-channel mean over H
    and W (as Caffe's ilsvrc_2012_mean.npy), or a length-3 BGR vector. Anything
    else, including pickled object arrays (never unpickled), is a UserError.
    """
    try:
        with open(npy_path, "rb") as file:
            array = np.lib.format.read_array(file, allow_pickle=False)
    except OSError as exc:
        raise _unreadable_file_error("mean image", npy_path, exc) from None
    except (ValueError, EOFError) as exc:
        raise _mean_error(npy_path, f"not a readable NumPy .npy array ({exc})") from None

    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise _mean_error(npy_path, f"its dtype is {array.dtype}, not a real number type")
    if array.shape == (3,):
        mean_bgr = array.astype(np.float64)
    elif array.ndim == 3 and array.shape[0] == 3 and array.size > 0:
        mean_bgr = array.astype(np.float64).mean(axis=(1, 2))  # (3, H, W) -> (3,)
    else:
        raise _mean_error(npy_path, f"its shape is {array.shape}")
    if not np.all(np.isfinite(mean_bgr)):
        raise _mean_error(npy_path, "it contains NaN or infinite values")
    return (float(mean_bgr[0]), float(mean_bgr[1]), float(mean_bgr[2]))


def _mean_error(path: PathLike, problem: str) -> UserError:
    return UserError(f"cannot use mean image '{path}': {problem}; give a .npy file (numpy.save) "
                     f"holding a (3, H, W) BGR mean image or a length-3 BGR vector")


# ----------------------------------------------------------------------------- conversion

def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB (H, W, 3) to size = (height, width) with Pillow's bicubic filter.

    Returns `rgb` itself when it already has that size (ALGORITHM.md, "Initialisation").
    """
    _check_rgb(rgb)
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC)
    return np.array(resized)


def rgb_to_image(rgb: np.ndarray, mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (1, 3, H, W): BGR pixel units minus the mean colour."""
    _check_rgb(rgb)
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)))  # (3, H, W)
    mean = torch.tensor(mean_bgr, dtype=torch.float32).view(3, 1, 1)
    return (bgr.to(torch.float32) - mean).unsqueeze(0)  # (1, 3, H, W)


def image_to_rgb(img: torch.Tensor, mean_bgr: tuple[float, float, float],
                 rescale: bool = False) -> np.ndarray:
    """float (1, 3, H, W) BGR minus mean -> uint8 RGB (H, W, 3), ready to save.

    Adds the mean colour back, then clips to [0, 255], or with `rescale` maps the
    image's [min, max] (over all channels) linearly to [0, 255]. A constant image
    cannot be stretched, so `rescale` leaves it as it is (clipped).
    """
    if img.ndim != 4 or tuple(img.shape[:2]) != (1, 3):
        raise ValueError(f"expected an image of shape (1, 3, H, W), got {tuple(img.shape)}")
    # One float64 copy, then in place: a 4K image is 200 MB at each temporary.
    bgr = img[0].detach().to("cpu", torch.float64, copy=True).numpy()  # (3, H, W)
    bgr += np.asarray(mean_bgr, dtype=np.float64).reshape(3, 1, 1)
    if rescale:
        low, high = bgr.min(), bgr.max()
        if high > low:
            bgr -= low
            bgr *= 255.0 / (high - low)
    np.clip(bgr, 0.0, 255.0, out=bgr)
    np.rint(bgr, out=bgr)
    return bgr[::-1].transpose(1, 2, 0).astype(np.uint8)  # (H, W, 3)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 RGB of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")


# ----------------------------------------------------------------------------- writing

def save_png(path: PathLike, rgb: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """Write uint8 RGB (H, W, 3) as a PNG, atomically, with `text` as PNG text chunks.

    The text (e.g. the command line that made the image) is stored as tEXt chunks,
    or iTXt where a value is not Latin-1; Pillow reads it back as `Image.open(p).text`.
    """
    _check_rgb(rgb)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_write(path) as file:
        Image.fromarray(rgb).save(file, format="PNG", pnginfo=info)


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[BinaryIO]:
    """Context manager: a binary file that replaces `path` only once fully written.

    The data goes to a hidden temporary file in the same directory (so the final
    rename stays on one file system), is fsynced, then renamed over `path` with
    os.replace. If the body raises, the temporary file is removed and an existing
    `path` is left untouched. OSErrors (disk full, no permission) become a
    UserError naming the path; any other exception propagates unchanged.

        with atomic_write("out.png") as file:
            figure.savefig(file, format="png")
    """
    target = Path(path)
    try:
        descriptor, temp_path = _create_temp_file(target)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_path, target)
    except OSError as exc:
        temp_path.unlink(missing_ok=True)
        raise _write_error(target, exc) from exc
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _create_temp_file(target: Path) -> tuple[int, Path]:
    """Create a new hidden file beside `target`; returns its open descriptor and path.

    Mode 0o666 filtered by the umask gives the permissions a plain open() would,
    unlike tempfile.mkstemp's 0o600, which os.replace would carry over to the output.
    """
    temp_path = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    return os.open(temp_path, flags, 0o666), temp_path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, as some file systems refuse."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _write_error(target: Path, exc: OSError) -> UserError:
    return UserError(f"cannot write '{target}': {exc.strerror or exc}; check the free disk space "
                     f"and the directory's permissions, or choose another output path")


def check_writable_output(path: PathLike) -> None:
    """Fail fast, before any optimisation, if the output file could not be written.

    The path must end in .png (the images are PNGs carrying their settings as text),
    must not be a directory, and its directory must exist and accept new files;
    the last is probed by creating and removing a temporary file exactly as
    `atomic_write` will, which is more reliable than permission bits (read-only
    mounts, ACLs, root).
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"output file '{target}' is a directory; "
                        f"give a file name such as '{target / 'out.png'}'")
    if target.suffix.lower() != ".png":
        raise UserError(f"output file '{target}' must end in .png (cnn-vis writes PNG images); "
                        f"use e.g. '{target.with_suffix('.png')}'")
    directory = target.parent
    if not directory.is_dir():
        raise UserError(f"cannot write '{target}': '{directory}' is not an existing directory; "
                        f"create it (mkdir -p '{directory}') or choose another output path")
    try:
        descriptor, temp_path = _create_temp_file(target)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.close(descriptor)
    temp_path.unlink()


def sibling_path(output_file: PathLike, suffix: str) -> Path:
    """`{stem}_{suffix}{ext}` beside the output file, e.g. out.png -> out_show.png."""
    output = Path(output_file)
    return output.with_name(f"{output.stem}_{suffix}{output.suffix}")


def intermediate_path(output_file: PathLike, size_index: int, step: int) -> Path:
    """Where the `save` behaviour writes step `step` of size `size_index` (from 1).

    `{stem}_{size_index}_{step}{ext}` beside the output (ALGORITHM.md, "Schedules"),
    e.g. out.png, size 2, step 50 -> out_2_50.png.
    """
    return sibling_path(output_file, f"{size_index}_{step}")
