"""Files and folders that cnn-vis writes beside an output (`{stem}.json`, `{stem}_frames/`,
`{stem}_atlas/`) are replaced or added to only when cnn-vis wrote what is there: a user's
own `notes.json` beside `--output_file notes.png` is an error naming it, never replaced.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cnnvis.errors import UserError

SOFTWARE = "cnn-vis"    # the PNG text "Software" of every picture cnn-vis writes
SIDECAR_KEYS = {"model", "layer", "seed", "neurons"}
TEMPORARY = re.compile(r"\.cnn-vis-[0-9a-f]{12}\.tmp")   # an interrupted write's leftover


def check_own_sidecar(path: Path) -> None:
    """Refuse a `path` that exists and is not an atlas list that cnn-vis wrote."""
    if not (path.exists() or path.is_symlink()):
        return
    try:
        content = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        content = None
    if not (isinstance(content, dict) and set(content) == SIDECAR_KEYS):
        raise _not_ours(path, "the atlas' list of pictures")


def check_own_folder(folder: Path, names: re.Pattern, what: str) -> None:
    """Refuse a `folder` that exists and holds anything but cnn-vis' PNGs named by `names`
    (in sub-folders of it too), or that is not a folder."""
    if not (folder.exists() or folder.is_symlink()):
        return
    if not folder.is_dir() or folder.is_symlink():
        raise _not_ours(folder, what)
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            continue
        if TEMPORARY.fullmatch(path.name):
            continue
        if not (path.is_file() and names.fullmatch(path.name) and _written_by_us(path)):
            raise _not_ours(folder, what, path)


def _written_by_us(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get("Software") == SOFTWARE
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return False


def _not_ours(path: Path, what: str, inside: Path | None = None) -> UserError:
    found = "" if inside is None else f" ({inside} in it is not a picture cnn-vis made)"
    return UserError(f"'{path}', where cnn-vis would write {what}, is there and was not written "
                     f"by cnn-vis{found}; move it away, or choose another --output_file.")
