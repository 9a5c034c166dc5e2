"""The files of a large job, written by the caller as results come: one PNG per job that
records the settings that decide its pixels and its objective (so that the same command
run again skips the jobs already made), and for an atlas a contact sheet of its pictures
and a JSON sidecar listing each neuron's file, objective and seed.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnvis.imageio import SETTINGS_KEY, atomic_write, save_png, settings_text

OBJECTIVE_KEY = "cnn-vis:objective"
CELL_SIDES = (96, 224)          # a contact sheet's pictures: at least, at most this many pixels
LABEL_HEIGHT = 16
BACKGROUND, INK = (24, 24, 24), (230, 230, 230)


def save_job_png(path: Path, rgb: np.ndarray, png_text: Mapping[str, str],
                 settings: Mapping[str, object], objective: float) -> None:
    save_png(path, rgb, {**png_text, **settings_text(settings), OBJECTIVE_KEY: repr(objective)})


def recorded(path: Path) -> tuple[dict, float] | None:
    """The settings and objective recorded in a job PNG; None when there are none that a
    large job wrote (no file, another kind of file, or its metadata edited: settings that
    are not a JSON object with a seed, an objective that is not a finite number)."""
    try:
        with Image.open(path) as image:
            text = getattr(image, "text", {})
            settings, objective = json.loads(text[SETTINGS_KEY]), float(text[OBJECTIVE_KEY])
    except Exception:  # noqa: BLE001 - whatever is wrong, it is not a job's record
        return None
    seed = settings.get("seed") if isinstance(settings, dict) else None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        return None
    return (settings, objective) if math.isfinite(objective) else None


def save_contact_sheet(path: Path, pictures: Sequence[tuple[str, Path]],
                       png_text: Mapping[str, str]) -> None:
    """A grid of the pictures (label, PNG file), each labelled below, as a PNG."""
    images = []
    for label, file in pictures:
        with Image.open(file) as image:
            images.append((label, image.convert("RGB")))
    cell = min(max(CELL_SIDES[0], max(max(image.size) for _, image in images)), CELL_SIDES[1])
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + LABEL_HEIGHT)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (label, image) in enumerate(images):
        scale = cell / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        # Small pictures (a tiny network's) are enlarged as blocks rather than blurred.
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1
                             else Image.Resampling.NEAREST)
        left, top = (k % columns) * cell, (k // columns) * (cell + LABEL_HEIGHT)
        sheet.paste(image, (left + (cell - image.width) // 2, top + (cell - image.height) // 2))
        draw.text((left + cell / 2, top + cell + LABEL_HEIGHT / 2), label, fill=INK, font=font,
                  anchor="mm")
    save_png(path, np.asarray(sheet), png_text)


def save_sidecar(path: Path, content: Mapping[str, object]) -> None:
    """Write `content` as JSON, always valid: a number that is not finite is written null."""
    with atomic_write(path) as file:
        file.write((json.dumps(_finite(content), indent=1, allow_nan=False) + "\n").encode())


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
