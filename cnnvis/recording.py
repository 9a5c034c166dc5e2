"""What a picture records of the command that made it, and --replay, which runs it again.

Every PNG cnn-vis writes holds the model, the seed and the command line (PNG text), and
each frame and job picture also the settings that decide its pixels (`pixel_settings`),
so that --resume and a large job made again reuse only what the same settings made.
Which options are recorded, replayed or paths is the option table's (`cnnvis.settings`).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.settings import option_names

COMMAND_KEY = "cnn-vis:command"
NOT_RECORDED = frozenset(option_names(recorded=False))
NOT_REPLAYED = frozenset(option_names(replayed=False))
RECORDED_PATHS = tuple(name for name in option_names(path=True) if name not in NOT_RECORDED)


def option_flags(name: str, value: object) -> list[str]:
    """The command-line words that give option `name` the value `value`."""
    return [f"--{name}"] if value is True else [f"--{name}", str(value)]


def option_argv(*settings) -> list[str]:
    """The command-line options that give these settings (those not at their default)."""
    argv = []
    for options in settings:
        for field in dataclasses.fields(options):
            value = getattr(options, field.name)
            if value != field.default and field.name not in NOT_REPLAYED:
                argv += option_flags(field.name, value)
    return argv


def recorded_text(model_name: str, seed: int, argv: Sequence[str],
                  seed_given: bool) -> dict[str, str]:
    """The PNG text of every image written: the model, the seed and the command (with the
    seed, so that --replay repeats it)."""
    return {"Software": "cnn-vis", "cnn-vis:model": model_name, "cnn-vis:seed": str(seed),
            COMMAND_KEY: shlex.join(["cnn_vis.py", *argv] + (
                [] if seed_given else ["--seed", str(seed)]))}


def pixel_settings(*settings, seed: int) -> dict[str, object]:
    """Every option that decides a picture's pixels, by name (files as absolute paths)."""
    values = {"seed": seed}
    for options in settings:
        values.update(dataclasses.asdict(options))
    values["seed"] = seed
    for name in RECORDED_PATHS:
        if values.get(name):
            values[name] = os.path.abspath(values[name])
    return {name: value for name, value in values.items() if name not in NOT_RECORDED}


def recorded_command(png: str) -> str | None:
    """The command line recorded in a PNG that cnn-vis wrote, or None."""
    with open_input(png, "image", "--replay") as file:
        try:
            with Image.open(file) as image:
                return getattr(image, "text", {}).get(COMMAND_KEY)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None   # not a PNG that cnn-vis wrote: the caller says so


def recorded_argv(png: str) -> list[str]:
    """The options of the command line recorded in `png` (a PNG that cnn-vis wrote)."""
    command = recorded_command(png)
    if command is None:
        raise UserError(f"--replay {png}: the image holds no cnn-vis command (cnn-vis records "
                        "it in the PNGs it writes); give a PNG that cnn-vis made.")
    try:
        if "\0" in command:
            raise ValueError("a NUL byte")
        return shlex.split(command)[1:]
    except ValueError as error:
        raise UserError(f"--replay {png}: the command recorded in it cannot be read ({error}); "
                        "it was not written by cnn-vis, or was edited: give a PNG that cnn-vis "
                        "made.") from None
