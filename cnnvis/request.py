"""What a user asked for: a run's options (the option table's three groups), the command
line it came from, and its input files, read and checked before any model loads.

The workflows (`cnnvis.picture`, `cnnvis.sequence`, `cnnvis.batch`) take a `Request`;
`Request.from_keywords` makes one from the option names, as the command line and the
Python API give them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnvis import zoo
from cnnvis.engine import keeps_freed_memory
from cnnvis.errors import UserError
from cnnvis.files import expanded, same_file
from cnnvis.imageio import load_mean_colour, load_rgb
from cnnvis.plan import grey_mask, parse_list
from cnnvis.recipes import recipe_options
from cnnvis.recording import option_argv, option_flags, recorded_text
from cnnvis.sizes import parse_size
from cnnvis.settings import (AnimationOptions, CommandOptions, DreamOptions,
                             all_options, default, options_from_keywords)


@dataclass(frozen=True)
class Outcome:
    """What a workflow made: a sentence naming what was written (for people), and the
    signal (Ctrl-C, SIGTERM) that stopped it after it saved what there was, if one did."""

    written: str
    stopped: KeyboardInterrupt | None = None


@dataclass(frozen=True)
class Request:
    """A run's options. `neurons` is --target_neuron's list when it is one (an atlas);
    `argv` the command line to record in the pictures (None: the options' own)."""

    command: CommandOptions
    dream: DreamOptions
    animation: AnimationOptions
    neurons: str | None = None
    argv: tuple[str, ...] | None = None

    @classmethod
    def from_keywords(cls, command_line: Sequence[str] | None = None, **options) -> "Request":
        """A request from option names (`cnnvis.settings`); `target_neuron` may be a list
        such as "0-15,40" or "all" (an atlas). File options have ~ and $VARIABLES expanded."""
        if options.get("recipe"):   # its options first: those given beside it apply last
            options = {**recipe_options(options["recipe"], options.get("model", default("model")),
                                        own_network=bool(options.get("deploy_txt")),
                                        # a photo, or a first size of one's own
                                        photo=bool(options.get("initial_image")
                                                   or options.get("input_video")
                                                   or "initial_size" in options)), **options}
        neurons = options.get("target_neuron")
        if isinstance(neurons, str):
            options = {**options, "target_neuron": 0}   # each job of the atlas has its own
        else:
            neurons = None
        for name in ("deploy_txt", "caffe_model"):
            if options.get(name):
                options[name] = expanded(options[name])
        command, dream, animation = options_from_keywords(options, CommandOptions, DreamOptions,
                                                          AnimationOptions)
        return cls(command, dream, animation, neurons,
                   None if command_line is None else tuple(command_line))

    @property
    def output(self) -> Path:
        return Path(self.command.output_file)

    def with_seed(self, seed: int) -> "Request":
        """The request with the seed drawn for it, recorded so that --replay repeats it."""
        argv = None if self.argv is None else (*self.argv, "--seed", str(seed))
        return dataclasses.replace(self, command=dataclasses.replace(self.command, seed=seed),
                                   argv=argv)

    def with_options(self, **animation) -> "Request":
        """The request with `animation` options decided for it (a video's chunks), recorded
        so that --replay repeats them."""
        argv = None if self.argv is None else (
            *self.argv, *(flag for name, value in animation.items() for flag in option_flags(name, value)))
        return dataclasses.replace(self, animation=dataclasses.replace(self.animation, **animation),
                                   argv=argv)

    def recorded_argv(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        neurons = [] if self.neurons is None else ["--target_neuron", self.neurons]
        return option_argv(self.command, self.dream, self.animation) + neurons

    def png_text(self, model_name: str, seed: int) -> dict[str, str]:
        """The PNG text of the pictures of this run, made with `seed`."""
        return recorded_text(model_name, seed, self.recorded_argv(), self.command.seed is not None)

    def model_spec(self, mean_bgr: tuple[float, float, float] | None,
                   device: torch.device) -> zoo.ModelSpec:
        command = self.command
        return zoo.ModelSpec(command.model, command.deploy_txt, command.caffe_model,
                             command.backend, mean_bgr, device,
                             keep_freed_memory=keeps_freed_memory(), precision=command.precision,
                             preprocessing=self._preprocessing())

    def _preprocessing(self) -> tuple[tuple[str, object], ...]:
        """The input options of a network of one's own that are given, as keywords."""
        command = self.command
        values = {"input_size": parse_size(command.input_size, (224, 224), "--input_size")
                  if command.input_size else None,
                  "channel_order": command.channel_order,
                  "mean": _per_channel(command.input_mean, "--input_mean"),
                  "std": _per_channel(command.input_std, "--input_std")}
        return tuple((name, value) for name, value in values.items() if value is not None)

    def changed(self, **facts) -> list[str]:
        """The options with these facts (e.g. applies="zoom") that are not at their default."""
        values = {**dataclasses.asdict(self.command), **dataclasses.asdict(self.dream),
                  **dataclasses.asdict(self.animation)}
        return [f.name for f, setting in all_options()
                if all(getattr(setting, fact) == value for fact, value in facts.items())
                and values[f.name] != f.default]


def _per_channel(text: str | None, flag: str) -> tuple[float, ...] | None:
    """--input_mean's or --input_std's three numbers (None where it is not given)."""
    if not text:
        return None
    values = tuple(parse_list(text, flag, float))
    if len(values) != 3:
        raise UserError(f"{flag} {text}: give three numbers joined with ',', one per channel "
                        "(in 0..1 units, in the network's channel order), e.g. 0.5,0.5,0.5.")
    return values


@dataclass(frozen=True)
class Inputs:
    """The user's files, read and checked before any model loads."""

    photo: np.ndarray | None
    guide: np.ndarray | None
    mask: np.ndarray | None
    mean_bgr: tuple[float, float, float] | None


def read_inputs(command: CommandOptions, output: Path) -> Inputs:
    sources = ((command.initial_image, "--initial_image image"), (command.replay, "--replay image"),
               (command.guide_image, "--guide_image image"), (command.mask, "--mask image"),
               (command.input_video, "--input_video"))
    for source, what in sources:
        if source and same_file(source, output):
            raise UserError(f"--output_file {output} is the {what} itself, which the result "
                            "would replace; choose another --output_file.")
    return Inputs(photo=load_rgb(command.initial_image) if command.initial_image else None,
                  guide=load_rgb(command.guide_image, "--guide_image") if command.guide_image else None,
                  mask=grey_mask(command.mask) if command.mask else None,
                  mean_bgr=load_mean_colour(command.mean_image) if command.mean_image else None)
