"""The command line's words: argparse options made from the option table, with the 2015
spellings, and --replay's expansion into the recorded command.

`parse` turns argv into the keywords of the library's workflows (`cnnvis.workflows`);
a recorded command is parsed the same way, so a replay is the command it records.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from cnnvis.errors import UserError
from cnnvis.own_model import is_own_model
from cnnvis.recording import option_flags, recorded_argv
from cnnvis.settings import GROUPS, OPTION_CLASSES, VIDEO_SUFFIXES, option_names, option_settings

logger = logging.getLogger("cnnvis")

# What --replay never takes from a PNG: where the run writes (the replaying user says, or a
# new file here), where it runs, and the model tools (a download among them).
NEVER_REPLAYED = frozenset(option_names(replayed=False) + option_names(applies="tool")
                           + ["output_file"])
# What reaches outside the picture, so is taken from a PNG only when the user trusts it.
TRUSTED_ONLY = tuple(name for name in option_names(path=True) if name not in NEVER_REPLAYED)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not a usage dump
        raise UserError(f"{message}{_did_you_mean(message)} (see --help).")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not None, and not a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _options():
    """(field, setting, flags) of every option, in --help's order."""
    for options in OPTION_CLASSES:
        for field, setting in option_settings(options):
            yield field, setting, [f"--{field.name}", *setting.aliases]


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The options of `cnnvis.settings`, with the 2015 spellings, in --help's groups; without
    `defaults`, a namespace holds only the options that argv gives."""
    parser = _Parser(
        prog="cnn_vis.py", description="Inceptionism (DeepDream-style) images from a CNN.",
        formatter_class=_HelpFormatter,
        **({} if defaults else {"argument_default": argparse.SUPPRESS}))
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field, setting, flags in _options():
        group = groups[setting.group]
        if setting.kind is bool:
            group.add_argument(*flags, dest=field.name, action="store_true", help=setting.help,
                               **({} if defaults else {"default": argparse.SUPPRESS}))
            continue
        metavar = setting.metavar or (
            "{" + ",".join(str(c) for c in setting.choices) + "}" if setting.choices else None)
        group.add_argument(*flags, dest=field.name, metavar=metavar,
                           default=field.default if defaults else argparse.SUPPRESS,
                           type=functools.partial(setting.parse, flags[0]), help=setting.help)
    return parser


def parse(argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    """The options that argv gives, by name, and the argv they came from (with --replay
    expanded into the recorded command, the options given beside it last)."""
    argv = list(argv)
    replay = build_parser().parse_args(_negative_values_attached(argv)).replay
    if replay:
        argv = replayed_argv(replay, argv)
    return {**given_options(argv), "replay": replay}, argv


def given_options(argv: Sequence[str]) -> dict[str, object]:
    """The options that `argv` gives (others keep their defaults, or a recipe's), checked."""
    tokens = _negative_values_attached(list(argv))
    build_parser().parse_args(tokens)   # --help, and every check, with the defaults shown
    return vars(build_parser(defaults=False).parse_args(tokens))


def replayed_argv(png: str, argv: list[str]) -> list[str]:
    """The command recorded in `png`, as safe to run as a command the user typed, then
    `argv` without its --replay option.

    A PNG comes from anywhere, so what it records is not trusted: it writes where the user
    says (`--output_file` beside --replay) or to a new file named after the PNG here, never
    over a file; it never says where the run goes (--ray, --workers) nor runs a model tool;
    and the files it names (--initial_image, --deploy_txt, ...), a --model of one's own
    (model.onnx, file.py:function, ...) and --backend caffe are
    taken only when the user repeats them or gives --trust_recorded_paths. The command and
    the files it writes are said before anything runs.
    """
    given = _without_replay(argv)
    given_names = set(vars(build_parser(defaults=False).parse_args(
        _negative_values_attached(given))))
    recorded = vars(build_parser(defaults=False).parse_args(
        _negative_values_attached(recorded_argv(png))))
    trusted = "trust_recorded_paths" in given_names
    untrusted = [name for name in recorded if name not in given_names and not trusted and (
        name in TRUSTED_ONLY or (name == "backend" and recorded[name] == "caffe")
        or (name == "model" and is_own_model(recorded[name])))]   # a file, or code
    if untrusted:
        shown = " ".join(shlex.join([f"--{name}", str(recorded[name])]) for name in untrusted)
        raise UserError(f"--replay {png}: the recorded command reads files or runs code outside "
                        f"the picture ({shown}); repeat the options you want beside --replay, or "
                        "add --trust_recorded_paths if you trust where the PNG came from.")
    kept: list[str] = []
    for name, value in recorded.items():
        if name not in NEVER_REPLAYED and name not in given_names:
            kept += option_flags(name, value)
    if "output_file" not in given_names:
        kept += ["--output_file", str(_new_output(png, recorded.get("output_file")))]
    replay_argv = kept + given
    values = vars(build_parser().parse_args(_negative_values_attached(replay_argv)))
    logger.warning(f"cnn-vis: --replay {png} runs: {shlex.join(['cnn_vis.py', *replay_argv])}; "
                   f"it writes {_written(values)}.")
    return replay_argv


def _without_replay(argv: list[str]) -> list[str]:
    rest, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--replay":
            skip = True
        elif not token.startswith("--replay="):
            rest.append(token)
    return rest


def _new_output(png: str, recorded_output: str | None) -> Path:
    """A file of the recorded output's kind, named after the replayed PNG, in the current
    folder, that is not there yet (nor its frames, atlas or list): a number is added."""
    suffix = Path(recorded_output or "").suffix.lower()
    suffix = suffix if suffix in VIDEO_SUFFIXES else ".png"
    stem = Path(png).stem
    for number in range(1, 100_000):
        candidate = Path(f"{stem}{'' if number == 1 else f'-{number}'}{suffix}")
        if not any(path.exists() or path.is_symlink() for path in _written_paths(candidate)):
            return candidate
    raise UserError(f"--replay {png}: no free file name for the result here; give one with "
                    "--output_file.")


def _written_paths(output: Path) -> list[Path]:
    return [output, output.with_suffix(".json"), output.with_name(f"{output.stem}_frames"),
            output.with_name(f"{output.stem}_atlas")]


def _written(values: dict[str, object]) -> str:
    """What a run with these option values writes, for people."""
    output = Path(str(values["output_file"]))
    if output.suffix.lower() in VIDEO_SUFFIXES or values["input_video"] or values["frames"] != 1:
        return f"{output} and its frames in {output.with_name(output.stem + '_frames')}/"
    if isinstance(values["target_neuron"], str):
        return (f"{output}, {output.with_suffix('.json')} and the pictures in "
                f"{output.with_name(output.stem + '_atlas')}/")
    return str(output)


def _did_you_mean(message: str) -> str:
    """'; did you mean --initial_image?' for argparse's 'unrecognized arguments: --intial_image'."""
    match = re.search(r"unrecognized arguments: (--[\w-]+)", message)
    if not match:
        return ""
    flags = [flag for _, _, names in _options() for flag in names]
    close = difflib.get_close_matches(match.group(1).split("=")[0], flags, n=1)
    return f"; did you mean {close[0]}?" if close else ""


_NEGATIVE_NUMBER = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _negative_values_attached(argv: list[str]) -> list[str]:
    """argv with `--option -1e-3` written `--option=-1e-3`: argparse takes a value that starts
    with '-' for an option unless it looks like a plain number ('-1', '-0.5')."""
    takes_value = {flag for _, setting, flags in _options() if setting.kind is not bool
                   for flag in flags}
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1] in takes_value and _NEGATIVE_NUMBER.match(token):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined
