"""The command line: every option of the 2015 README, and the recipe that runs them.

The only module that knows argparse, and a client of the public API (`cnnvis.load_model`,
`cnnvis.render`). `main` checks everything that can be checked cheaply (files, sizes,
options) before the model loads or any optimisation starts, then dreams and saves.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import shlex
import sys
import traceback
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from cnnvis import api, zoo
from cnnvis.caffe import CaffeNet, read_prototxt
from cnnvis.caffe.net import network_input
from cnnvis.console import exit_status, guarded_process, signals_deferred
from cnnvis.engine import keep_freed_memory
from cnnvis.errors import Interrupted, NonFiniteImage, UserError
from cnnvis.files import open_input, same_file
from cnnvis.imageio import check_writable_output, load_mean_colour, load_rgb, save_png
from cnnvis.model import VisModel
from cnnvis.pixels import Picture
from cnnvis.report import ConsoleObserver
from cnnvis.settings import ACTIONS, GROUPS, CommandOptions, DreamOptions, option_settings

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR = 2, 1
NOT_ENOUGH_MEMORY = ("error: this machine has not enough memory for the run; use smaller sizes "
                     "(--initial_size, --final_size) or a smaller --batch_size.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        raise UserError(f"{message} (see --help).")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not None, and not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The options of `cnnvis.settings`, with the 2015 spellings, in --help's groups."""
    parser = _Parser(
        prog="cnn_vis.py", description="Inceptionism (DeepDream-style) images from a CNN.",
        formatter_class=_HelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for options in (CommandOptions, DreamOptions):
        for field, setting in option_settings(options):
            flags = [f"--{field.name}", *setting.aliases]
            group = groups[setting.group]
            if setting.kind is bool:
                group.add_argument(*flags, dest=field.name, action="store_true", help=setting.help)
                continue
            metavar = setting.metavar or (
                "{" + ",".join(str(c) for c in setting.choices) + "}" if setting.choices else None)
            group.add_argument(*flags, dest=field.name, default=field.default, metavar=metavar,
                               type=functools.partial(setting.parse, flags[0]), help=setting.help)
    return parser


def parse_arguments(argv: list[str]) -> tuple[CommandOptions, DreamOptions, list[str]]:
    """The command's options, the dream's options, and the argv they came from (with
    --replay expanded into the recorded command)."""
    namespace = build_parser().parse_args(_negative_values_attached(argv))
    replay = namespace.replay
    if replay:
        argv = replay_argv(replay, argv)
        namespace = build_parser().parse_args(_negative_values_attached(argv))
    values = {**vars(namespace), "replay": replay}
    return (CommandOptions(**{f.name: values[f.name] for f in dataclasses.fields(CommandOptions)}),
            DreamOptions(**{f.name: values[f.name] for f in dataclasses.fields(DreamOptions)}),
            argv)


_NEGATIVE_NUMBER = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _negative_values_attached(argv: list[str]) -> list[str]:
    """argv with `--option -1e-3` written `--option=-1e-3`: argparse takes a value that starts
    with '-' for an option unless it looks like a plain number ('-1', '-0.5')."""
    takes_value = {flag for options in (CommandOptions, DreamOptions)
                   for field, setting in option_settings(options) if setting.kind is not bool
                   for flag in (f"--{field.name}", *setting.aliases)}
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in takes_value and _NEGATIVE_NUMBER.match(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def replay_argv(png: str, argv: list[str]) -> list[str]:
    """The command recorded in `png`, then `argv` without its --replay option."""
    command = recorded_command(png)
    if command is None:
        raise UserError(f"--replay {png}: the image holds no cnn-vis command (cnn-vis records "
                        "it in the PNGs it writes); give a PNG that cnn-vis made.")
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--replay":
            skip = True
        elif not token.startswith("--replay="):
            rest.append(token)
    return shlex.split(command)[1:] + rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("CNN_VIS_DEBUG") == "1"
    with guarded_process():
        try:
            command, options, argv = parse_arguments(argv)
            return run(command, options, argv)
        except UserError as error:
            return _fail(f"error: {error}", debug)
        except KeyboardInterrupt as stop:
            print("cnn-vis: interrupted.", file=sys.stderr)
            return exit_status(stop)
        except MemoryError:
            return _fail(NOT_ENOUGH_MEMORY, debug)
        except OSError as error:   # the operating system refused something not checked before
            where = f" '{error.filename}'" if error.filename else ""
            return _fail(f"error: the operating system refused{where}: {error.strerror or error}; "
                         "check the path, the free disk space and the permissions.", debug)
        except Exception as error:  # noqa: BLE001 - the last line of defence: no traceback for users
            if _out_of_memory(error):
                return _fail(NOT_ENOUGH_MEMORY, debug)
            _fail(f"internal error: {type(error).__name__}: {error}. This is a bug; please report "
                  "it with the output of the same command with --debug.", debug)
            return EXIT_INTERNAL_ERROR


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"cnn-vis: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _out_of_memory(error: Exception) -> bool:
    """PyTorch's allocators report a failed allocation as a RuntimeError (torch.OutOfMemoryError
    on CUDA)."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("can't allocate memory" in text
                                             or "out of memory" in text))


def run(command: CommandOptions, options: DreamOptions, argv: list[str]) -> int:
    """Dispatch: a model tool, or the dream itself."""
    expand = lambda path: path and os.path.expanduser(os.path.expandvars(path))  # noqa: E731
    command = dataclasses.replace(command, deploy_txt=expand(command.deploy_txt),
                                  caffe_model=expand(command.caffe_model))
    if command.list_models:
        print_models()
        return 0
    if command.download:
        path = zoo.download(zoo.preset(command.download))
        print(f"{command.download}: {path or 'weights come with the installed Python package'}")
        return 0
    if command.list_layers:
        print_layers(command)
        return 0
    if command.classify:
        print_classes(command)
        return 0
    return dream(command, options, argv)


# --------------------------------------------------------------------------- the dream


def dream(command: CommandOptions, options: DreamOptions, argv: list[str]) -> int:
    """Check the inputs, load the model, dream, save. The recipe of cnn-vis."""
    actions = parse_actions(command.iter_behavior)
    output = Path(command.output_file)
    check_writable_output(output)
    for source, option in ((command.initial_image, "--initial_image"), (command.replay, "--replay"),
                           (command.guide_image, "--guide_image"), (command.mask, "--mask")):
        if source and same_file(source, output):
            raise UserError(f"--output_file {output} is the {option} image itself, which the "
                            "result would replace; choose another --output_file.")
    photo = load_rgb(command.initial_image) if command.initial_image else None
    guide = load_rgb(command.guide_image, "--guide_image") if command.guide_image else None
    mask = api.grey_mask(command.mask) if command.mask else None
    mean_bgr = load_mean_colour(command.mean_image) if command.mean_image else None
    api.check_combinations(options, photo is not None, guide is not None)
    # The network's input size is known before its weights load: check the sizes first.
    input_size = (network_input(read_prototxt(command.deploy_txt))[1][1:] if command.deploy_txt
                  else zoo.preset(command.model).input_size)
    sizes = api.plan_sizes(options, None if photo is None else photo.shape[:2], input_size)
    if mask is not None:
        api.check_mask(mask, sizes[-1])
    device = select_device(command.gpu)
    api.check_memory(sizes, device)
    model = load_model(command, mean_bgr, device)

    seed = command.seed if command.seed is not None else api.new_seed()
    png_text = {"Software": "cnn-vis", "cnn-vis:model": model.name, "cnn-vis:seed": str(seed),
                "cnn-vis:command": shlex.join(["cnn_vis.py", *argv] + (
                    [] if command.seed is not None else ["--seed", str(seed)]))}
    observer = ConsoleObserver(actions, output, command.output_depth, png_text,
                               total_steps=len(sizes) * options.num_steps,
                               show_size=(command.show_width, command.show_height))

    if "print" in actions:
        print(describe_dream(command, options), file=sys.stderr)

    def save(picture: Picture) -> None:
        with signals_deferred():   # a signal now waits for the file to be complete
            save_png(output, picture.rgb(command.output_depth), png_text)

    try:
        try:
            picture = api.render(photo, model, seed=seed, callback=observer.report,
                                 progress=observer.step_done, guide=guide, mask=mask,
                                 **dataclasses.asdict(options))
        finally:
            observer.close()
    except NonFiniteImage as error:
        save(error.picture)
        raise UserError(f"{error}; the last finite image is saved as {output}. Lower "
                        "--learning_rate (or the regularisation strengths --p_reg, --tv_reg, "
                        "their exponents --alpha, --beta, or the weights --l1_weight, "
                        "--l2_weight) and run again.") from None
    except Interrupted as interruption:
        if interruption.picture is None:
            raise
        save(interruption.picture)
        print(f"\ncnn-vis: interrupted; the current image is saved as {output}.", file=sys.stderr)
        return exit_status(interruption)
    try:
        save(picture)
    except KeyboardInterrupt as stop:   # it came while the image was written, which finished
        print(f"\ncnn-vis: interrupted; the finished image is saved as {output}.", file=sys.stderr)
        return exit_status(stop)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def describe_dream(command: CommandOptions, options: DreamOptions) -> str:
    """The print line that opens a run: what is amplified, and the controls beyond 2015."""
    layers = options.target_layer or "the model's default layer"
    parts = [f"{options.image_type} of {layers}"]
    for text, given in ((f"weights {options.layer_weights}", options.layer_weights),
                        (f"channels {options.channels}", options.channels),
                        (f"guide {command.guide_image}", command.guide_image),
                        (f"mask {command.mask}", command.mask),
                        (f"jitter {options.jitter} px", options.jitter),
                        ("the photo's colours kept", options.preserve_colors)):
        if given:
            parts.append(text)
    return "cnn-vis: " + "; ".join(parts)


def parse_actions(text: str) -> list[str]:
    actions = [a for a in text.split("+") if a]
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise UserError(f"--iter_behavior '{text}' has unknown action(s) {', '.join(unknown)}; "
                        f"join any of {', '.join(ACTIONS)} with '+', e.g. save+print.")
    return actions


def recorded_command(png: str) -> str | None:
    """The command line recorded in a PNG that cnn-vis wrote, or None."""
    with open_input(png, "image", "--replay") as file:
        try:
            with Image.open(file) as image:
                return getattr(image, "text", {}).get("cnn-vis:command")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None   # not a PNG that cnn-vis wrote: the caller says so


def select_device(gpu: int) -> torch.device:
    """CUDA device `gpu` (or Apple's MPS) when present; otherwise the CPU, said once."""
    if gpu < 0:
        return torch.device("cpu")
    if torch.cuda.is_available() and gpu < torch.cuda.device_count():
        return torch.device("cuda", gpu)
    if gpu == 0 and torch.backends.mps.is_available():
        return torch.device("mps")
    found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no GPU"
    print(f"cnn-vis: --gpu {gpu}: {found} here; running on the CPU (--gpu -1 to silence this).",
          file=sys.stderr)
    return torch.device("cpu")


def load_model(command: CommandOptions, mean_bgr=None, device: torch.device | None = None) -> VisModel:
    device = device or select_device(command.gpu)
    if device.type == "cpu" and command.backend == "torch":
        keep_freed_memory()
    return api.load_model(command.model, deploy_txt=command.deploy_txt,
                          caffe_model=command.caffe_model, device=device,
                          backend=command.backend, mean_bgr=mean_bgr,
                          precision=command.precision)


# --------------------------------------------------------------------------- model tools


def print_models() -> None:
    print(f"{'name':22} {'trained on':40} {'weights':8} source")
    for model in zoo.PRESETS.values():
        source = model.weights.url if model.weights else "Python package (installed with cnn-vis)"
        present = "present" if zoo.weights_present(model) else "missing"
        print(f"{model.name:22} {model.training_data:40} {present:8} {source}")


def print_layers(command: CommandOptions) -> None:
    network = (CaffeNet(read_prototxt(command.deploy_txt), None).eval() if command.deploy_txt
               else zoo.architecture(zoo.preset(command.model)))
    with torch.no_grad():
        blobs = network.blobs(torch.zeros((1, 3) + tuple(network.input_size)))
    for name, value in blobs.items():
        print(f"{name:40} {' x '.join(str(d) for d in value.shape[1:])}")


def print_classes(command: CommandOptions) -> None:
    photo = load_rgb(command.classify)
    mean_bgr = load_mean_colour(command.mean_image) if command.mean_image else None
    for index, value, label in load_model(command, mean_bgr).classify(photo):
        print(f"{index:5d} {value:10.4f} {label}")
