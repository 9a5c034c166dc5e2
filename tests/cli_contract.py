"""The command line's contract for a refusal, shared by the tests of bad input."""
from __future__ import annotations

from pathlib import Path

from cnnvis.cli import main

PREVIOUS_OUTPUT = b"an earlier result that no failed run may touch"


def refused(argv: list[str], capsys, output: Path, *key_words: str) -> str:
    """Run the CLI and check the issue's contract for a refusal; returns the message.

    Exit status 2; stderr is exactly one `cnn-vis: error:` line holding every key word and
    no traceback; the earlier output (if any) is byte-identical and no file appeared or
    vanished in its directory (no temporary file left behind).
    """
    existed = output.exists()
    before = sorted(output.parent.iterdir()) if output.parent.exists() else None
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnn-vis: error: "), err
    for word in key_words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert (sorted(output.parent.iterdir()) if output.parent.exists() else None) == before
    assert output.read_bytes() == PREVIOUS_OUTPUT if existed else not output.exists()
    return lines[0]
