"""The command line's words: argparse options made from the option table, with the 2015
spellings, and --replay's expansion into the recorded command.

`parse` turns argv into the keywords of the library's workflows (`cnnvis.workflows`);
a recorded command is parsed the same way, so a replay is the command it records.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import re
from collections.abc import Sequence

from cnnvis.errors import UserError
from cnnvis.recording import replay_argv
from cnnvis.settings import GROUPS, OPTION_CLASSES, option_settings


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


def build_parser() -> argparse.ArgumentParser:
    """The options of `cnnvis.settings`, with the 2015 spellings, in --help's groups."""
    parser = _Parser(
        prog="cnn_vis.py", description="Inceptionism (DeepDream-style) images from a CNN.",
        formatter_class=_HelpFormatter)
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for field, setting, flags in _options():
        group = groups[setting.group]
        if setting.kind is bool:
            group.add_argument(*flags, dest=field.name, action="store_true", help=setting.help)
            continue
        metavar = setting.metavar or (
            "{" + ",".join(str(c) for c in setting.choices) + "}" if setting.choices else None)
        group.add_argument(*flags, dest=field.name, default=field.default, metavar=metavar,
                           type=functools.partial(setting.parse, flags[0]), help=setting.help)
    return parser


def parse(argv: Sequence[str]) -> tuple[dict[str, object], list[str]]:
    """The value of every option (by name), and the argv they came from (with --replay
    expanded into the recorded command, the options given beside it last)."""
    argv = list(argv)
    namespace = build_parser().parse_args(_negative_values_attached(argv))
    replay = namespace.replay
    if replay:
        argv = replay_argv(replay, argv)
        namespace = build_parser().parse_args(_negative_values_attached(argv))
    return {**vars(namespace), "replay": replay}, argv


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
