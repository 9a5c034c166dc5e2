"""--replay of a PNG from anywhere: it writes only where the user says (or a new file here),
never runs where the PNG says, reads no file the user did not name, and says what it runs."""
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from cnnvis.cli import main
from tests.cli_contract import refused


def crafted_png(path: Path, command: str) -> Path:
    """A PNG that records `command` as cnn-vis does."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "cnn-vis")
    info.add_text("cnn-vis:command", command)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, pnginfo=info)
    return path


@pytest.fixture
def stranger(tmp_path, monkeypatch):
    """A temporary HOME with a secret and a victim's files, a working folder, and every
    outgoing connection recorded instead of made."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    (home / ".netrc").write_text("machine example.org login me password hunter2\n")
    (home / "notes.png").write_bytes(b"the user's own picture")
    (home / "notes.json").write_text('{"mine": true}\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    connections = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: connections.append(address))
    return home, work, connections


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_replay_of_a_hostile_png_writes_only_a_new_file_here(stranger, capsys):
    home, work, connections = stranger
    before = tree(home)
    png = crafted_png(work / "gift.png", (
        f"cnn_vis.py --model efficientnet_lite0 --gpu -1 --num_steps 1 --iter_behavior '' "
        f"--seed 3 --output_file {home / 'notes.png'} --ray 127.0.0.1:9 --workers 2 "
        f"--download bvlc_googlenet"))
    assert main(["--replay", str(png)]) == 0
    err = capsys.readouterr().err
    assert tree(home) == before and connections == []
    made = sorted(p.name for p in work.iterdir())
    assert made == ["gift-2.png", "gift.png"]   # gift.png is the PNG itself: a number is added
    assert "runs: cnn_vis.py --model efficientnet_lite0" in err and "it writes gift-2.png" in err
    assert "--ray" not in err.split("runs:")[1].split(";")[0]
    assert Image.open(work / "gift-2.png").text["cnn-vis:seed"] == "3"
    assert main(["--replay", str(png)]) == 0   # again: another new file, nothing replaced
    assert sorted(p.name for p in work.iterdir()) == ["gift-2.png", "gift-3.png", "gift.png"]


def test_replay_reads_no_recorded_file_unless_trusted(stranger, capsys):
    home, work, connections = stranger
    secret = home / ".netrc"
    png = crafted_png(work / "gift.png", f"cnn_vis.py --deploy_txt {secret} --caffe_model "
                      f"{secret} --initial_image {secret} --output_file {home / 'notes.png'}")
    message = refused(["--replay", str(png)], capsys, work / "out.png", "--trust_recorded_paths",
                      "--deploy_txt")
    assert "hunter2" not in message and connections == []
    # Trusted, the recorded files are read, and what they hold is still not shown.
    capsys.readouterr()
    assert main(["--replay", str(png), "--trust_recorded_paths"]) == 2
    assert "hunter2" not in capsys.readouterr().err


def test_a_repeated_option_is_the_users_own(stranger, capsys, model_files):
    home, work, _ = stranger
    deploy, weights = model_files
    png = crafted_png(work / "gift.png", f"cnn_vis.py --deploy_txt /elsewhere/net.prototxt "
                      f"--caffe_model /elsewhere/w.caffemodel --gpu -1 --target_layer conv2 "
                      f"--num_steps 1 --iter_behavior '' --seed 1")
    assert main(["--replay", str(png), "--deploy_txt", str(deploy), "--caffe_model",
                 str(weights), "--output_file", "mine.png"]) == 0
    assert (work / "mine.png").is_file()


@pytest.mark.parametrize("command", ["cnn_vis.py --seed '1", "cnn_vis.py --seed 1\0 --ray x"])
def test_an_unreadable_recorded_command_is_one_message(stranger, capsys, command):
    _, work, _ = stranger
    png = crafted_png(work / "gift.png", command)
    refused(["--replay", str(png)], capsys, work / "out.png", "cannot be read")


def test_suggested_commands_quote_the_path(tmp_path, capsys, tiny):
    folder = tmp_path / "it's; touch pwned"
    message = refused(tiny[:-1] + [str(folder / "out.png")], capsys, tmp_path / "out.png",
                      "mkdir -p")
    assert "mkdir -p '" + str(folder).replace("'", "'\"'\"'") + "'" in message
    assert not (Path.cwd() / "pwned").exists()
