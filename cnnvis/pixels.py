"""Pixel conversions, with no file I/O: RGB arrays and PIL images <-> cnn-vis images.

A cnn-vis image is a float32 tensor (1, 3, H, W) in BGR order, in pixel units (0..255)
minus the model's mean colour (docs/algorithm.md, "Image representation"). Pictures
leave as RGB arrays of 8 or 16 bits per channel, or as PIL images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MAX_LEVEL = {8: 255, 16: 65535}   # the largest value of a channel at each output depth
ROWS_PER_BAND = 256               # image_to_rgb's working set: 6 KB per pixel of width


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB (H, W, 3) to size = (height, width) with Pillow's bicubic filter.

    Returns `rgb` itself when it already has that size (docs/algorithm.md, "Initialisation").
    """
    check_rgb(rgb)
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC)
    return np.array(resized)


def rgb_to_image(rgb: np.ndarray, mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (1, 3, H, W): BGR pixel units minus the mean colour."""
    check_rgb(rgb)
    return levels_to_image(rgb, mean_bgr)


def levels_to_image(rgb: np.ndarray, mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """RGB (H, W, 3) of any number type, in 0..255 units -> a cnn-vis image (1, 3, H, W)."""
    bgr = torch.from_numpy(np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1)))  # (3, H, W)
    mean = torch.tensor(mean_bgr, dtype=torch.float32).view(3, 1, 1)
    return (bgr.to(torch.float32) - mean).unsqueeze(0)  # (1, 3, H, W)


def resize_grey(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 grey (H, W) to size = (height, width) with Pillow's bilinear filter."""
    height, width = size
    if grey.shape == (height, width):
        return grey
    return np.array(Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR))


def with_colours_of(img: torch.Tensor, mean_bgr: tuple[float, float, float],
                    photo: np.ndarray) -> torch.Tensor:
    """The image (1, 3, H, W) with its luminance kept and its chroma taken from `photo`
    (uint8 RGB, resized to H x W): YCbCr as in JPEG (ITU-R BT.601, full range)."""
    mean = torch.tensor(mean_bgr, dtype=torch.float64, device=img.device).view(3, 1, 1)
    b, g, r = (img[0].to(torch.float64) + mean).unbind(0)                     # (H, W) each
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    source = torch.from_numpy(resize_rgb(photo, tuple(img.shape[-2:]))).to(img.device, torch.float64)
    pr, pg, pb = source.unbind(2)
    cb = -0.168736 * pr - 0.331264 * pg + 0.5 * pb                             # minus 128
    cr = 0.5 * pr - 0.418688 * pg - 0.081312 * pb
    bgr = torch.stack([luma + 1.772 * cb, luma - 0.344136 * cb - 0.714136 * cr, luma + 1.402 * cr])
    return (bgr - mean).to(img.dtype).unsqueeze(0)


def image_to_rgb(img: torch.Tensor, mean_bgr: tuple[float, float, float],
                 rescale: bool = False, depth: int = 8) -> np.ndarray:
    """float (1, 3, H, W) BGR minus mean -> RGB (H, W, 3) of `depth` bits, ready to save.

    Adds the mean colour back, then clips to [0, 255], or with `rescale` maps the
    image's [min, max] (over all channels) linearly to [0, 255]. A constant image
    cannot be stretched, so `rescale` leaves it as it is (clipped). Depth 8 rounds to
    uint8; depth 16 keeps the same range in 257 times finer steps (uint16).
    """
    if img.ndim != 4 or tuple(img.shape[:2]) != (1, 3):
        raise ValueError(f"expected an image of shape (1, 3, H, W), got {tuple(img.shape)}")
    if depth not in MAX_LEVEL:
        raise ValueError(f"depth must be 8 or 16 (bits per channel), not {depth!r}")
    image = img[0].detach().cpu()                                        # (3, H, W)
    mean = np.asarray(mean_bgr, dtype=np.float64).reshape(3, 1, 1)
    stretch = None
    if rescale:
        # The extremes of the float64 levels: float32 to float64 is exact and adding the
        # mean keeps the order, so each channel's extremes give them.
        channels = image.flatten(1)
        low = float(np.min(channels.amin(1).numpy().astype(np.float64) + mean.ravel()))
        high = float(np.max(channels.amax(1).numpy().astype(np.float64) + mean.ravel()))
        stretch = (low, high) if high > low else None
    rgb = np.empty(image.shape[1:] + (3,), dtype=np.uint8 if depth == 8 else np.uint16)
    # In bands of rows, each as one float64 copy changed in place: an 8K image would be
    # 800 MB at each whole-image temporary.
    for top in range(0, rgb.shape[0], ROWS_PER_BAND):
        bgr = image[:, top:top + ROWS_PER_BAND].to(torch.float64, copy=True).numpy()
        bgr += mean
        if stretch is not None:
            low, high = stretch
            bgr -= low
            bgr *= 255.0 / (high - low)
        np.clip(bgr, 0.0, 255.0, out=bgr)
        if depth != 8:
            bgr *= MAX_LEVEL[depth] / 255.0
        np.rint(bgr, out=bgr)
        rgb[top:top + ROWS_PER_BAND] = bgr[::-1].transpose(1, 2, 0)     # (rows, W, 3)
    return rgb


def as_rgb(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 RGB (H, W, 3) of a PIL image (any mode, converted as `pil_to_rgb` does) or of
    such an array (returned as it is)."""
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        check_rgb(image)
        return image
    raise TypeError(f"expected a PIL image or a uint8 array (H, W, 3), not {type(image).__name__}")


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of a Pillow image of any mode: alpha dropped, grey and
    palette images made 3 channels, 16-bit grey (modes I;16*, and I, as which Pillow opens
    16-bit PGMs) scaled to 8 bits, not clipped."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        # Pillow's convert("RGB") clips 16-bit grey to 0..255 (a white image); scale instead.
        levels = np.clip(np.asarray(image, dtype=np.float64), 0.0, 65535.0)   # (H, W)
        grey = np.rint(levels / 257.0).astype(np.uint8)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    return np.array(image.convert("RGB"))


def check_rgb(rgb: np.ndarray) -> None:
    """A ValueError, saying what to change, unless `rgb` is a uint8 array (H, W, 3)."""
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3:
        return
    problem = ""
    if rgb.dtype.kind in "fc" and not np.isfinite(rgb).all():
        problem = " that holds NaN or infinity, which no pixel can be"
    if rgb.ndim == 2:
        hint = "; for a grey image, make it RGB with np.stack([a] * 3, axis=-1)"
    elif rgb.ndim == 3 and rgb.shape[2] == 4:
        hint = "; drop its alpha channel with a[:, :, :3]"
    elif rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype.kind in "iuf" and not problem:
        hint = "; convert levels 0..255 with np.clip(a, 0, 255).astype(np.uint8)"
    else:
        hint = ""
    raise ValueError(f"expected uint8 RGB of shape (H, W, 3), got {rgb.dtype} {rgb.shape}"
                     f"{problem}{hint}")


@dataclass(frozen=True)
class Picture:
    """An optimised image with what it takes to show it: the result of `cnnvis.render`.

    `image` is the float image (1, 3, H, W) itself, finer than any file; `rgb()` and
    `pil()` turn it into pixels as the command line saves them.
    """

    image: torch.Tensor                       # (1, 3, H, W), BGR minus the mean colour
    mean_bgr: tuple[float, float, float]
    rescale: bool = False                     # --rescale_image
    seed: int | None = None                   # the seed that made it, when known

    def rgb(self, depth: int = 8) -> np.ndarray:
        """RGB (H, W, 3), uint8 (depth 8) or uint16 (depth 16); another depth is a ValueError."""
        return image_to_rgb(self.image, self.mean_bgr, self.rescale, depth)

    def pil(self) -> Image.Image:
        """The picture as an 8-bit RGB PIL image."""
        return Image.fromarray(self.rgb())

    def _repr_png_(self) -> bytes:
        """The picture itself where a notebook shows the result of a cell."""
        return png_bytes(self.rgb())


def png_bytes(rgb: np.ndarray) -> bytes:
    """A quick PNG of uint8 or uint16 RGB (H, W, 3), as 8 bits, for display."""
    if rgb.dtype != np.uint8:
        rgb = np.rint(rgb / 257.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
