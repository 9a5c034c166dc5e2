"""Reading and writing images without ever losing the user's work.

This module reads user files with errors that say what to fix, and writes every
output atomically: a crash or a full disk never leaves a half-written file or destroys
an older one. Outputs are PNGs of 8 or 16 bits per channel carrying text (the command
that made them). Conversions between pixels and cnn-vis images live in `cnnvis.pixels`.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import warnings
import secrets
import shlex
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from cnnvis.errors import UserError
from cnnvis.files import PathLike, open_input
from cnnvis.pixels import as_rgb, pil_to_rgb

# What the API takes as an image: a file, a PIL image, a uint8 RGB array, or None (noise).
ImageInput = str | Path | Image.Image | np.ndarray | None
logger = logging.getLogger("cnnvis")


# ----------------------------------------------------------------------------- reading

def load_rgb(path: PathLike, option: str = "--initial_image") -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    Alpha is dropped, grey and palette images become 3 channels, 16-bit grey is
    scaled (not clipped) to 8 bits, and the EXIF orientation is applied so the
    pixels are the way image viewers show them. The image is decoded in full here,
    so a truncated file fails now, not hours later. Pillow's decompression-bomb
    limit stays on; an image above its warning size is said in one line. Every
    problem with the file is a UserError naming the file (and `option`, its source).
    """
    with open_input(path, "image", option) as file:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", Image.DecompressionBombWarning)
                image = Image.open(file)
            with image:
                if caught:
                    logger.warning(f"cnn-vis: image '{path}' has {image.width}x{image.height} "
                                   "pixels; it takes a lot of memory and time.")
                image.load()
                return pil_to_rgb(ImageOps.exif_transpose(image))
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


def as_photo(image: PathLike | Image.Image | np.ndarray, option: str = "--initial_image") -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file (read as `load_rgb` does), a PIL image (its mode
    converted as a file's is) or such an array. An image without pixels is a UserError; an
    array of another type or shape a ValueError (`cnnvis.pixels.check_rgb`)."""
    rgb = load_rgb(image, option) if isinstance(image, (str, os.PathLike)) else as_rgb(image)
    if rgb.size == 0:
        raise UserError(f"{option}: the image has no pixels (height {rgb.shape[0]}, width {rgb.shape[1]}); "
                        "give an image of at least 1x1 pixels.")
    return rgb


def load_mean_colour(npy_path: PathLike) -> tuple[float, float, float]:
    """The BGR mean colour stored in a NumPy .npy file (for `--mean_image`).

    Accepts a (3, H, W) BGR mean image, reduced to its per-channel mean over H
    and W (as Caffe's ilsvrc_2012_mean.npy), or a length-3 BGR vector. Anything
    else, including pickled object arrays (never unpickled), is a UserError.
    """
    try:
        with open_input(npy_path, "mean image", "--mean_image") as file:
            array = np.lib.format.read_array(file, allow_pickle=False)
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
    if not np.all((mean_bgr >= 0) & (mean_bgr <= 255)):
        raise _mean_error(npy_path, f"its mean colour {tuple(float(m) for m in mean_bgr)} lies "
                                    "outside the pixel range 0..255")
    return (float(mean_bgr[0]), float(mean_bgr[1]), float(mean_bgr[2]))


def _mean_error(path: PathLike, problem: str) -> UserError:
    return UserError(f"cannot use mean image '{path}': {problem}; give a .npy file (numpy.save) "
                     f"holding a (3, H, W) BGR mean image or a length-3 BGR vector")


# ----------------------------------------------------------------------------- writing

def save_png(path: PathLike, rgb: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """Write RGB (H, W, 3), uint8 or uint16, as a PNG, atomically, with `text` as PNG text chunks.

    The text (e.g. the command line that made the image) is stored as tEXt chunks,
    or iTXt where a value is not Latin-1; Pillow reads it back as `Image.open(p).text`.
    Pillow cannot write 16-bit RGB, so OpenCV encodes those pixels and the text chunks
    are put in after the header.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected RGB (H, W, 3) of uint8 or uint16, got {rgb.dtype} {rgb.shape}")
    text = {key: _encodable(value) for key, value in (text or {}).items()}
    with atomic_write(path) as file:
        if rgb.dtype == np.uint8:
            info = PngImagePlugin.PngInfo()
            for key, value in text.items():
                info.add_text(key, value)
            Image.fromarray(rgb).save(file, format="PNG", pnginfo=info)
        else:
            file.write(_png16(rgb, text))


# Pictures cnn-vis writes, by suffix: PNG (8 or 16 bits, the settings as text), or 8-bit
# JPEG and WebP (the same text as a JPEG comment or WebP XMP packet).
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LOSSY_QUALITY = 95


def save_picture(path: PathLike, rgb: np.ndarray, text: Mapping[str, str] | None = None) -> None:
    """`save_png`, or for a .jpg, .jpeg or .webp `path` an 8-bit picture of quality 95 that
    keeps `text` where the format can hold it."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return save_png(path, rgb, text)
    if rgb.dtype != np.uint8:
        raise ValueError("JPEG and WebP pictures have 8 bits per channel")
    packet = json.dumps(dict(text or {}), sort_keys=True)
    with atomic_write(path) as file:
        if suffix == ".webp":
            Image.fromarray(rgb).save(file, format="WEBP", quality=LOSSY_QUALITY,
                                      xmp=packet.encode())
        else:
            Image.fromarray(rgb).save(file, format="JPEG", quality=LOSSY_QUALITY,
                                      comment=packet.encode())


# The PNG text key of the settings that decide a picture's pixels (as JSON): a frame of a
# sequence or a large job's picture made again with the same settings is reused.
SETTINGS_KEY = "cnn-vis:settings"


def settings_text(settings: Mapping[str, object]) -> dict[str, str]:
    """PNG text recording `settings`."""
    return {SETTINGS_KEY: json.dumps(settings, sort_keys=True)}


def differing_settings(recorded: Mapping[str, object], settings: Mapping[str, object]) -> list[str]:
    """The names of `settings` whose recorded value (as JSON kept it) is another."""
    settings = json.loads(json.dumps(settings))
    return [name for name, value in settings.items() if recorded.get(name) != value]


def _encodable(text: str) -> str:
    """`text` with what no PNG text can hold escaped: a path that is not valid UTF-8 reaches
    Python with lone surrogates in it, and its bytes are written as \\xNN."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _png16(rgb: np.ndarray, text: Mapping[str, str]) -> bytes:
    """PNG bytes of uint16 RGB (H, W, 3) with `text` chunks right after the IHDR chunk."""
    import cv2  # only for 16-bit prints: it takes a while to import

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV wants BGR
    if not ok:
        raise ValueError("OpenCV could not encode the 16-bit PNG")
    data = encoded.tobytes()
    header_end = 8 + 8 + 13 + 4  # signature, then IHDR: length and type, 13 bytes of data, CRC
    chunks = b"".join(_text_chunk(key, value) for key, value in text.items())
    return data[:header_end] + chunks + data[header_end:]


def _text_chunk(key: str, value: str) -> bytes:
    """A tEXt chunk, or an iTXt chunk (UTF-8) where the value is not Latin-1."""
    try:
        kind, body = b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")
    except UnicodeEncodeError:
        kind, body = b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8")
    return (len(body).to_bytes(4, "big") + kind + body
            + zlib.crc32(kind + body).to_bytes(4, "big"))


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
    # A name of fixed length, so that any legal output name leaves room for it.
    temp_path = target.with_name(f".cnn-vis-{secrets.token_hex(6)}.tmp")
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
    if exc.errno == errno.ENAMETOOLONG:
        return UserError(f"cannot write '{target}': the path is longer than the operating system "
                         "allows; choose a shorter output path")
    return UserError(f"cannot write '{target}': {exc.strerror or exc}; check the free disk space "
                     f"and the directory's permissions, or choose another output path")


def check_writable_output(path: PathLike, suffixes: tuple[str, ...] = (".png",)) -> None:
    """Fail fast, before any optimisation, if the output file could not be written.

    The path must end in one of `suffixes` (by default .png: the images are PNGs
    carrying their settings as text),
    must not be a directory, and its directory must exist and accept new files;
    the last is probed by creating and removing a temporary file exactly as
    `atomic_write` will, which is more reliable than permission bits (read-only
    mounts, ACLs, root).
    """
    target = Path(path)
    try:
        if target.is_dir():
            raise UserError(f"output file '{target}' is a directory; "
                            f"give a file name such as '{target / 'out.png'}'")
        if target.suffix.lower() not in suffixes:
            raise UserError(f"output file '{target}' must end in {', '.join(suffixes)}; use "
                            f"e.g. '{target.with_suffix(suffixes[0])}'")
        directory = target.parent
        if not directory.is_dir():
            raise UserError(f"cannot write '{target}': '{directory}' is not an existing directory; "
                            f"create it (mkdir -p {shlex.quote(str(directory))}) or choose another output path")
        if len(os.fsencode(target.name)) > os.pathconf(directory, "PC_NAME_MAX"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        descriptor, temp_path = _create_temp_file(target)
        os.close(descriptor)
        temp_path.unlink()
    except OSError as exc:
        raise _write_error(target, exc) from exc


def make_folder(folder: Path, what: str) -> None:
    """Create `folder` (and its parents) where outputs go, unless it is there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {what} '{folder}': {error.strerror or error}; check the "
                        "permissions, or choose another --output_file") from None


def sibling_path(output_file: PathLike, suffix: str) -> Path:
    """`{stem}_{suffix}{ext}` beside the output file, e.g. out.png -> out_show.png."""
    output = Path(output_file)
    return output.with_name(f"{output.stem}_{suffix}{output.suffix}")


def intermediate_path(output_file: PathLike, size_index: int, step: int) -> Path:
    """Where the `save` behaviour writes step `step` of size `size_index` (from 1).

    `{stem}_{size_index}_{step}{ext}` beside the output (docs/algorithm.md, "Schedules"),
    e.g. out.png, size 2, step 50 -> out_2_50.png.
    """
    return sibling_path(output_file, f"{size_index}_{step}")
