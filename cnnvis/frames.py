"""The folder of a sequence's finished frames, `{stem}_frames/` beside the output: one PNG
per frame, `000001.png` on, each recording the settings that decide its pixels. A run
resumed with --resume reuses the frames that the same settings made, and refuses frames
that other settings made rather than mixing them in.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.imageio import (SETTINGS_KEY, check_writable_output, differing_settings, make_folder,
                            save_png, settings_text)

FRAME_NAME = re.compile(r"(\d{6})\.png")


class FrameStore:
    """Finished frames of the sequence written to `output` (a video or GIF)."""

    def __init__(self, output: Path, depth: int, png_text: Mapping[str, str],
                 settings: Mapping[str, object]):
        self.folder = output.with_name(f"{output.stem}_frames")
        self.depth = depth
        self.settings = dict(settings)
        self.png_text = {**png_text, **settings_text(self.settings)}

    def path(self, number: int) -> Path:
        return self.folder / f"{number:06d}.png"

    def check_writable(self) -> None:
        """Fail now, before any work, if frames could not be written into the folder."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"'{self.folder}', where the frames go, is not a folder; move it "
                            "away, or choose another --output_file")
        if self.folder.is_dir():
            check_writable_output(self.path(1))

    def save(self, number: int, rgb: np.ndarray) -> None:
        """Write frame `number` (the folder is made with the first frame)."""
        make_folder(self.folder, "the frames folder")
        save_png(self.path(number), rgb, {**self.png_text, "cnn-vis:frame": str(number)})

    def check_resumable(self) -> None:
        """Refuse stored frames that other settings made, naming the settings that differ."""
        for number, settings in recorded_settings(self.folder).items():
            differences = [f"--{name} {_shown(settings.get(name))} there, "
                           f"{_shown(self.settings[name])} here"
                           for name in differing_settings(settings, self.settings)]
            if differences:
                raise UserError(f"--resume: frame {self.path(number)} was made by another "
                                f"command ({'; '.join(differences)}); give the same options as "
                                "before, or drop --resume to make every frame anew, or choose "
                                "another --output_file")

    def stored(self, number: int) -> np.ndarray | None:
        """The pixels of frame `number` when it is in the folder (checked before), else None."""
        path = self.path(number)
        if not path.is_file():
            return None
        with open_input(path, "frame", "--resume") as file:
            data = file.read()
        try:
            if self.depth == 8:
                with Image.open(io.BytesIO(data)) as image:
                    return np.array(image.convert("RGB"))
            import cv2  # only for 16-bit frames, which Pillow cannot read as RGB
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            return np.ascontiguousarray(bgr[:, :, ::-1])
        except Exception as error:  # noqa: BLE001 - any decoder's way to say "damaged"
            raise UserError(f"--resume: frame {path} cannot be read ({error}); delete it and "
                            "run again") from None


def recorded_settings(folder: Path) -> dict[int, dict]:
    """The settings recorded in each frame PNG of `folder`, by frame number."""
    recorded = {}
    if not folder.is_dir():
        return recorded
    for path in sorted(folder.iterdir()):
        match = FRAME_NAME.fullmatch(path.name)
        if not match:
            continue
        with open_input(path, "frame", "--resume") as file:
            try:
                with Image.open(file) as image:
                    text = getattr(image, "text", {}).get(SETTINGS_KEY)
            except Exception:  # noqa: BLE001 - not a PNG: reported below as not ours
                text = None
        try:
            recorded[int(match.group(1))] = json.loads(text)
        except (TypeError, ValueError):
            raise UserError(f"--resume: {path} is not a frame that cnn-vis made (it records no "
                            "settings); move it away, or drop --resume") from None
    return recorded


def _shown(value: object) -> str:
    return "(not given)" if value is None else str(value)
