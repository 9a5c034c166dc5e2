"""`python cnn_vis.py` and the `cnn-vis` command: the command line, with Ctrl-C during the
seconds of importing PyTorch (and the moment before the command line guards itself) ending
in one line too."""
from __future__ import annotations

import signal
import sys


def run_command_line() -> int:
    try:
        from cnnvis.cli import main
        return main()
    except KeyboardInterrupt:   # before main's own handling starts (it handles every later one)
        print("cnn-vis: interrupted.", file=sys.stderr)
        return 128 + signal.SIGINT
