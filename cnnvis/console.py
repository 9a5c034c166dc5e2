"""The process around the command line: output streams that never break a run, and signals.

A finished image must never be lost to what happens around the run: a closed terminal
or a pipe whose reader went away (`| head`), a closed stderr (`2>&-`), SIGTERM from a job
scheduler or `timeout`, or Ctrl-C in the middle of writing the PNG. Only the command
line uses this module; it changes process-wide state for the duration of `main` only
(files are written with signals held back: `cnnvis.signals`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator

class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the image is saved, and the exit status is 143."""


def exit_status(stop: BaseException) -> int:
    """128 + the signal that stopped the run (SIGTERM: 143, Ctrl-C: 130)."""
    while stop is not None:
        if isinstance(stop, Terminated):
            return 128 + signal.SIGTERM
        stop = stop.__cause__ or stop.__context__
    return 128 + signal.SIGINT


class UnbreakableStream(io.TextIOBase):
    """A text stream whose writes never raise: after the first one that fails (EPIPE, a
    closed terminal), it and the file descriptor under it write to os.devnull."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._give_up()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._give_up()

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def _give_up(self) -> None:
        # Point the descriptor at os.devnull too, so that the interpreter's last flush at
        # exit finds somewhere to write instead of printing "Exception ignored".
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        self._stream = open(os.devnull, "w", encoding="utf-8")


@contextlib.contextmanager
def guarded_process() -> Iterator[None]:
    """For the duration of the command: unbreakable stdout and stderr (a missing one goes
    to os.devnull), SIGTERM raised as `Terminated`, and the library's notices (logger
    "cnnvis") printed on stderr as plain lines."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (UnbreakableStream(stream or open(os.devnull, "w", encoding="utf-8"))
                              for stream in saved)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("cnnvis")
    logger.addHandler(handler)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        yield
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        logger.removeHandler(handler)
        sys.stdout, sys.stderr = saved


def _terminate(signum, frame) -> None:
    raise Terminated()
