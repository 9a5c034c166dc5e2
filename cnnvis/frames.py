"""The folder of a sequence's finished frames, `{stem}_frames/` beside the output: one PNG
per frame, `000001.png` on, each recording the settings that decide its pixels; for a video
in chunks, also each chunk's own dream of the frames it cross-fades, `000037_chunk2.png`. A run
resumed with --resume reuses the frames that the same settings made, and refuses frames
that other settings made (or of another size, or whose recorded settings cannot be read)
rather than mixing them in.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.imageio import (SETTINGS_KEY, check_writable_output, differing_settings, make_folder,
                            save_png, settings_text)

FRAME_NAME = re.compile(r"(\d{6})(_chunk\d+)?\.png")


class FrameStore:
    """Finished frames of the sequence written to `output` (a video or GIF)."""

    def __init__(self, output: Path, depth: int, png_text: Mapping[str, str],
                 settings: Mapping[str, object]):
        self.folder = output.with_name(f"{output.stem}_frames")
        self.depth = depth
        self.settings = dict(settings)
        self.png_text = {**png_text, **settings_text(self.settings)}

    def path(self, number: int, chunk: int | None = None) -> Path:
        """Frame `number`, or chunk `chunk`'s own dream of it."""
        return self.folder / (f"{number:06d}.png" if chunk is None else f"{number:06d}_chunk{chunk}.png")

    def check_writable(self) -> None:
        """Fail now, before any work, if frames could not be written into the folder."""
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"'{self.folder}', where the frames go, is not a folder; move it "
                            "away, or choose another --output_file")
        if self.folder.is_dir():
            check_writable_output(self.path(1))

    def save(self, number: int, rgb: np.ndarray, chunk: int | None = None) -> None:
        """Write frame `number`, or chunk `chunk`'s own dream of it (the folder is made with
        the first frame)."""
        make_folder(self.folder, "the frames folder")
        save_png(self.path(number, chunk), rgb, {**self.png_text, "cnn-vis:frame": str(number)})

    def check_resumable(self, size: tuple[int, int]) -> None:
        """Refuse stored frames that other settings made, naming the settings that differ,
        and frames of another (height, width) than `size`, this run's."""
        for path, frame in recorded_frames(self.folder).items():
            if frame.settings is None:
                differences = ["its recorded settings are not a cnn-vis record"]
            else:
                differences = [_difference(name, frame.settings.get(name), self.settings[name])
                               for name in differing_settings(frame.settings, self.settings)]
            if not differences and frame.size != tuple(size):
                differences = [f"it is {frame.size[1]}x{frame.size[0]} pixels, this run's "
                               f"frames {size[1]}x{size[0]}"]
            if differences:
                raise UserError(f"--resume: frame {path} was made by another "
                                f"command ({'; '.join(differences)}); give the same options as "
                                "before, or drop --resume to make every frame anew, or choose "
                                "another --output_file")

    def stored(self, number: int, chunk: int | None = None) -> np.ndarray | None:
        """The pixels of frame `number` (or of chunk `chunk`'s own dream of it) when it is in
        the folder (checked before), else None."""
        path = self.path(number, chunk)
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


@dataclass(frozen=True)
class StoredFrame:
    """What a stored frame records: its settings (None where they are not a JSON object)
    and its (height, width)."""

    settings: dict | None
    size: tuple[int, int]


def recorded_frames(folder: Path) -> dict[Path, StoredFrame]:
    """The frame PNGs of `folder`, in the order of their names."""
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
                    size = (image.height, image.width)
            except Exception:  # noqa: BLE001 - not a PNG: reported below as not ours
                text = None
        if not isinstance(text, str):
            raise UserError(f"--resume: {path} is not a frame that cnn-vis made (it records no "
                            "settings); move it away, or drop --resume")
        try:
            settings = json.loads(text)
        except (ValueError, RecursionError):   # edited: read as another command's
            settings = None
        recorded[path] = StoredFrame(
            settings if isinstance(settings, dict) else None, size)
    return recorded


def recorded_seed(recorded: Mapping[Path, StoredFrame]) -> int | None:
    """The seed that the first stored frame records, where it is a seed, else None."""
    first = next(iter(recorded.values()), None)
    seed = first.settings.get("seed") if first and first.settings else None
    is_seed = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 63
    return seed if is_seed else None


def _difference(name: str, there: object, here: object) -> str:
    """`--name X there, Y here`; values of two JSON types (the seed 5 and the text "5")
    are written as JSON, so that they do not read as one."""
    same_type = type(there) is type(here) or None in (there, here)
    there, here = (_shown(value) if same_type else json.dumps(value, default=str) for value in (there, here))
    return f"--{name} {there} there, {here} here"


def _shown(value: object) -> str:
    return "(not given)" if value is None else str(value)
