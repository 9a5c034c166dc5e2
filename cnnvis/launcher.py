"""`python cnn_vis.py` and the `cnn-vis` command: the command line, with Ctrl-C during the
seconds of importing PyTorch ending in one line too."""
from __future__ import annotations

import signal
import sys


def run_command_line() -> int:
    try:
        from cnnvis.cli import main
    except KeyboardInterrupt:
        print("cnn-vis: interrupted.", file=sys.stderr)
        return 128 + signal.SIGINT
    return main()
