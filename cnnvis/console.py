"""The process around the command line: output streams that never break a run, and signals.

A finished image must never be lost to what happens around the run: a closed terminal
or a pipe whose reader went away (`| head`), a closed stderr (`2>&-`), SIGTERM from a job
scheduler or `timeout`, or Ctrl-C in the middle of writing the PNG. Only the command
line uses this module; it changes process-wide state for the duration of `main` only.
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

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_command_line() -> int:
    """`python cnn_vis.py` and the `cnn-vis` command: the command line, with Ctrl-C during
    the seconds of importing PyTorch ending in one line too."""
    try:
        from cnnvis.cli import main
    except KeyboardInterrupt:
        print("cnn-vis: interrupted.", file=sys.stderr)
        return 128 + signal.SIGINT
    return main()


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


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back while the body runs (a PNG being written); a signal that
    came meanwhile takes effect when it ends, with the file complete.

    Done with Python-level handlers rather than a signal mask: the operating system may hand
    a process-directed signal to any thread, PyTorch's workers among them, but Python runs
    its handlers in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {number: signal.signal(number, lambda signum, frame: received.append(signum))
                for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if received:   # the body finished: now the signal does what it would have done
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(received[0])
