"""Ctrl-C and SIGTERM held back while a file is written, so that no signal leaves half a
picture: the library's workflows write every PNG, frame and sidecar inside
`signals_deferred`.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
