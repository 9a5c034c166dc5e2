"""How one option of the table (`cnnvis.settings`) is spelt, parsed from the command line
and checked: its `Setting`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cnnvis.errors import UserError


@dataclass(frozen=True)
class Setting:
    """How one option is spelt, parsed from the command line and checked.

    `kind` is bool (a flag), int, float or str. Numbers are checked against `minimum`
    (`above`: strictly) and `maximum` (`below`: strictly); a str against `choices` when there are some.
    """

    kind: type
    help: str
    group: str
    aliases: tuple[str, ...] = ()      # other spellings, e.g. the 2015 script's names
    minimum: float | None = None
    above: bool = False
    maximum: float | None = None
    below: bool = False
    choices: tuple | None = None
    metavar: str | None = None
    several: bool = False   # on the command line also a list, one job per value (cnnvis.jobs)
    # Whether the value decides a picture's pixels: recorded with each frame and job picture,
    # and compared when --resume (or a large job made again) reuses them.
    recorded: bool = True
    # Whether --replay takes it from a recorded command (what runs where, not what is made,
    # is the replaying user's choice).
    replayed: bool = True
    path: bool = False      # a file or folder: recorded as an absolute path
    applies: str = "any"    # the runs it is for: one of settings.APPLIES

    def parse(self, flag: str, text: str) -> Any:
        """The value of command-line `text`, checked; a UserError naming `flag` otherwise.

        An option that takes `several` values gives the text itself when it is not a
        single number: the list is read, and checked, where its jobs are made.
        """
        if self.several and not text.strip().lstrip("-").isdigit():
            return text
        if self.kind in (int, float):
            try:
                value = self.kind(text)
            except ValueError:
                raise UserError(f"{flag} '{text}' is not "
                                f"{'an integer' if self.kind is int else 'a number'} (see --help).") from None
        else:
            value = self.kind(text)
        return self.check(flag, value, text)

    def check(self, flag: str, value: Any, shown: str | None = None) -> Any:
        """`value` if it is a valid value of this option; a UserError naming `flag` otherwise."""
        shown = str(value) if shown is None else shown
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"{flag} takes True or False, not {value!r}.")
            return value
        if self.kind in (int, float):
            kinds = (int,) if self.kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise UserError(f"{flag} '{shown}' is not "
                                f"{'an integer' if self.kind is int else 'a number'} (see --help).")
            if self.kind is float and not math.isfinite(value):
                raise UserError(f"{flag} '{shown}' is not a finite number (see --help).")
            if self.minimum is not None and (value <= self.minimum if self.above
                                              else value < self.minimum):
                raise UserError(f"{flag} {shown} must be {'above' if self.above else 'at least'} "
                                f"{self.minimum} (see --help).")
            if self.maximum is not None and (value >= self.maximum if self.below
                                             else value > self.maximum):
                raise UserError(f"{flag} {shown} must be {'below' if self.below else 'at most'} "
                                f"{self.maximum} (see --help).")
            return self._check_choice(flag, value, shown)
        if not isinstance(value, self.kind):
            raise UserError(f"{flag} takes a {self.kind.__name__}, not {value!r}.")
        return self._check_choice(flag, value, shown)

    def _check_choice(self, flag: str, value: Any, shown: str) -> Any:
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{flag} '{shown}' is not one of: "
                            f"{', '.join(str(c) for c in self.choices)} (see --help).")
        return value
