"""Nothing lost 3: media that lie (cut short, a still in a video's name, a phone's turn, a
declared size beyond the memory), stored pictures whose metadata was edited, a signal or
a full disk in the middle of a sequence, and recursive patterns.

The media are made here with PyAV (tests/media.py) and dreamed with the tiny network."""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import cnnvis.video
from cnnvis.cli import main
from cnnvis.frames import FrameStore
from cnnvis.video import VideoInput
from tests.cli_contract import PREVIOUS_OUTPUT, refused
from tests.media import (avi_declaring, cut_short, moving_square_frames, read_video,
                         write_video)

FAST = ["--num_steps", "2", "--iter_behavior", ""]


def frame_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob("*.png"))


def no_temporary_files(folder: Path) -> bool:
    return not [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- media honesty

def test_a_video_cut_short_gives_its_frames_and_says_so(tiny_model, tmp_path, capsys):
    video = cut_short(write_video(tmp_path / "cut.mp4", moving_square_frames(20, (32, 48), 1),
                                  faststart=True), keep=9)
    out = tmp_path / "dream.mp4"
    assert main(tiny_model + FAST + ["--input_video", str(video), "--output_file", str(out),
                                     "--frame_steps", "1"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "declares" in line]
    assert len(warnings) == 1 and "20 frames" in warnings[0] and "only 9" in warnings[0], err
    assert "Traceback" not in err and "wrote" in err
    assert len(read_video(out)[0]) == 9
    assert frame_names(tmp_path / "dream_frames") == [f"{n:06d}.png" for n in range(1, 10)]


def still_bytes(kind: str) -> bytes:
    rgb = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    if kind == "mjpeg-in-mp4":   # one MJPEG frame in a real MP4 container
        file = io.BytesIO()
        with av.open(file, "w", format="mp4") as container:
            stream = container.add_stream("mjpeg", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuvj420p"
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return file.getvalue()
    file = io.BytesIO()
    Image.fromarray(rgb).save(file, format=kind)
    return file.getvalue()


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "GIF", "WEBP", "mjpeg-in-mp4"])
def test_a_still_image_named_mp4_is_refused_as_a_still(tiny, output, tmp_path, capsys, kind):
    still = tmp_path / "photo.mp4"
    still.write_bytes(still_bytes(kind))
    refused(tiny + ["--input_video", str(still), "--output_file", str(tmp_path / "v.mp4")],
            capsys, output, "is a still image", "--initial_image")
    assert not list(tmp_path.glob("*_frames"))


def test_an_animated_gif_is_a_video(tiny_model, tmp_path):
    frames = [Image.fromarray(rgb) for rgb in moving_square_frames(3, (24, 32), 2, side=8)]
    gif = tmp_path / "moving.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "dream.gif"
    assert main(tiny_model + FAST + ["--input_video", str(gif), "--output_file", str(out)]) == 0
    assert Image.open(out).n_frames == 3


@pytest.mark.parametrize("rotation, turns", [(-90, -1), (90, 1), (180, 2)])
def test_a_phone_video_is_dreamed_upright(tiny_model, tmp_path, rotation, turns):
    """The display matrix's turn is applied as the frames are decoded, as a player does.
    With a learning rate of 0 and no blend, every frame is its input frame."""
    frames = moving_square_frames(3, (32, 48), speed=3, side=12)
    frames[0][:6, :10] = 255           # a mark in the stored top-left corner
    video = write_video(tmp_path / "phone.mp4", frames, rotation=rotation)
    plain = read_video(write_video(tmp_path / "plain.mp4", frames))[0]   # as stored, decoded
    out = tmp_path / "dream.mp4"
    assert main(tiny_model + FAST + ["--input_video", str(video), "--output_file", str(out),
                                     "--learning_rate", "0", "--blend", "0", "--seed", "0"]) == 0
    for number, decoded in enumerate(plain, start=1):
        stored = np.array(Image.open(tmp_path / "dream_frames" / f"{number:06d}.png"))
        np.testing.assert_array_equal(stored, np.rot90(decoded, turns))
    side = (48, 32) if turns % 2 else (32, 48)
    assert read_video(out)[0][0].shape[:2] == side


def test_the_memory_is_checked_on_the_declared_size_before_decoding(tiny, output, tmp_path,
                                                                     capsys, monkeypatch):
    video = avi_declaring(tmp_path / "big.avi", (6000, 6000))   # its frames are 16x16
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2 * 2 ** 30 // 4096}   # a 2 GB machine
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])

    def no_decoding(self):
        raise AssertionError("a frame was decoded before the memory was checked")

    monkeypatch.setattr(VideoInput, "_decoded", no_decoding)
    refused(tiny + ["--input_video", str(video), "--output_file", str(tmp_path / "v.mp4")],
            capsys, output, "6000x6000", "needs about", "this machine has 2 GB")


def test_an_absurd_declared_size_is_refused_at_once(tiny, output, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cnnvis.video, "MAX_PIXELS", 2 ** 20)   # FFmpeg itself refuses 2^28
    video = avi_declaring(tmp_path / "huge.avi", (2000, 1000))
    monkeypatch.setattr(VideoInput, "_decoded", None)   # never called
    refused(tiny + ["--input_video", str(video), "--output_file", str(tmp_path / "v.mp4")],
            capsys, output, "declares frames of 1000x2000 pixels", f"at most {2 ** 20}")


def test_a_size_beyond_what_ffmpeg_decodes_is_one_line(tiny, output, tmp_path, capsys):
    video = avi_declaring(tmp_path / "huge.avi", (16384, 16384))   # FFmpeg reads it as 0x0
    refused(tiny + ["--input_video", str(video), "--output_file", str(tmp_path / "v.mp4")],
            capsys, output, "cannot read video", "huge.avi")


# ----------------------------------------------------------------------------- edited metadata

def rewrite_png(path: Path, rgb: np.ndarray | None = None, **changes: str) -> None:
    """`path` again, with `rgb` for its pixels where given and its text chunks changed."""
    with Image.open(path) as image:
        text = dict(image.text)
        pixels = np.array(image) if rgb is None else rgb
    info = PngImagePlugin.PngInfo()
    for key, value in {**text, **changes}.items():
        info.add_text(key, value)
    Image.fromarray(pixels).save(path, pnginfo=info)


def edited_settings(path: Path, edit: str) -> str:
    with Image.open(path) as image:
        settings = json.loads(image.text["cnn-vis:settings"])
    if edit == "list":
        return json.dumps(list(settings.items()))
    if edit == "no seed":
        return json.dumps({k: v for k, v in settings.items() if k != "seed"})
    if edit == "seed as text":
        return json.dumps({**settings, "seed": str(settings["seed"])})
    if edit == "deep":
        return "[" * 100000 + "]" * 100000
    return '{"seed": 1'   # not JSON


@pytest.mark.parametrize("edit, key_words", [
    ("list", ["not a cnn-vis record"]), ("invalid JSON", ["not a cnn-vis record"]),
    ("deep", ["not a cnn-vis record"]), ("no seed", ["--seed (not given) there"]),
    ("seed as text", ['--seed "', '" there'])])
def test_resume_reads_edited_frame_metadata_as_another_command(tiny_model, tmp_path, capsys,
                                                               edit, key_words):
    out = tmp_path / "zoom.mp4"
    argv = tiny_model + FAST + ["--frames", "2", "--zoom", "1.05", "--output_file", str(out)]
    assert main(argv) == 0   # a seed of its own, recorded in the frames
    first = tmp_path / "zoom_frames" / "000001.png"
    rewrite_png(first, **{"cnn-vis:settings": edited_settings(first, edit)})
    capsys.readouterr()
    out.write_bytes(PREVIOUS_OUTPUT)
    refused(argv + ["--resume"], capsys, out, "--resume", "000001.png",
            "was made by another command", "drop --resume", *key_words)


def test_resume_refuses_a_stored_frame_of_another_size(tiny_model, tmp_path, capsys):
    out = tmp_path / "zoom.mp4"
    argv = tiny_model + FAST + ["--seed", "3", "--frames", "3", "--output_file", str(out)]
    assert main(argv[:-4] + ["--frames", "2"] + argv[-2:]) == 0
    second = tmp_path / "zoom_frames" / "000002.png"
    rewrite_png(second, np.zeros((20, 24, 3), np.uint8))   # its metadata copied over
    capsys.readouterr()
    out.write_bytes(PREVIOUS_OUTPUT)
    refused(argv + ["--resume"], capsys, out, "--resume", "000002.png", "made by another command",
            "it is 24x20 pixels, this run's frames 16x16")


@pytest.mark.parametrize("edit", ["list", "no seed", "seed as text", "invalid JSON", "nan"])
def test_a_job_picture_with_edited_metadata_is_made_again(tiny_model, tmp_path, capsys, edit):
    argv = tiny_model + FAST + ["--image_type", "amplify_neuron", "--target_neuron", "0-2",
                                "--output_file", str(tmp_path / "out.png")]
    assert main(argv) == 0
    folder = tmp_path / "out_atlas" / "conv2"
    first = folder / "0000.png"
    made = first.read_bytes()
    if edit == "nan":
        rewrite_png(first, **{"cnn-vis:objective": "nan"})
    else:
        rewrite_png(first, **{"cnn-vis:settings": edited_settings(first, edit)})
    capsys.readouterr()
    assert main(argv) == 0   # without --seed: the others' seed is taken
    assert "2 of the 3 pictures are in" in capsys.readouterr().err
    assert first.read_bytes() == made


# ----------------------------------------------------------------------------- signals

@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_frame_finished_before_a_signal_is_in_the_video(tiny_model, tmp_path, monkeypatch,
                                                          capsys, suffix):
    """SIGTERM the moment frame 2's PNG is in the folder: the frame is in the video too."""
    save = FrameStore.save

    def save_and_signal(store, number, rgb, chunk=None):
        save(store, number, rgb, chunk)
        if number == 2:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(FrameStore, "save", save_and_signal)
    out = tmp_path / f"zoom{suffix}"
    assert main(tiny_model + FAST + ["--frames", "5", "--zoom", "1.05", "--initial_size",
                                     "24x32", "--output_file", str(out)]) == 143
    assert "the 2 finished frame(s)" in capsys.readouterr().err
    assert frame_names(tmp_path / "zoom_frames") == ["000001.png", "000002.png"]
    count = Image.open(out).n_frames if suffix == ".gif" else len(read_video(out)[0])
    assert count == 2
    assert no_temporary_files(tmp_path)


# ----------------------------------------------------------------------------- a full disk

class FullDisk:
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int):
        self._file, self._room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.mark.parametrize("room, frames", [(0, 60), (2000, 4)], ids=["during", "at-the-end"])
def test_a_full_disk_during_a_zoom_is_one_line_and_keeps_the_frames(tiny, tmp_path, capfd,
                                                                    monkeypatch, output, room,
                                                                    frames):
    """capfd: what PyAV prints of exceptions it drops goes straight to file descriptor 2."""
    atomic_write = cnnvis.video.atomic_write

    @contextlib.contextmanager
    def filling(path):
        with atomic_write(path) as file:
            yield FullDisk(file, room)

    monkeypatch.setattr(cnnvis.video, "atomic_write", filling)
    out = tmp_path / "zoom" / "zoom.mp4"   # its frames folder appears beside it, not beside `output`
    out.parent.mkdir()
    message = refused(tiny + ["--frames", str(frames), "--zoom", "1.05", "--initial_size",
                              "48x64", "--output_file", str(out)], capfd, output,
                      "cannot write", "zoom.mp4", "No space left on device", "finished frame(s)",
                      "--resume")
    made = frame_names(out.parent / "zoom_frames")
    assert f"the {len(made)} finished frame(s) are in" in message
    assert 0 < len(made) < frames if room == 0 else len(made) == frames
    for name in made:
        assert Image.open(out.parent / "zoom_frames" / name).size == (64, 48)
    assert not out.exists() and no_temporary_files(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs (needs root), unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs",
                                            str(disk)], capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_really_full_disk_during_a_zoom(tiny_model, small_disk, capfd):
    out = small_disk / "zoom.mp4"
    status = main(tiny_model + FAST + ["--seed", "0", "--frames", "30", "--zoom", "1.05",
                                       "--initial_size", "120x160", "--output_file", str(out)])
    err = capfd.readouterr().err
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err
    frames = frame_names(small_disk / "zoom_frames")
    assert frames and f"the {len(frames)} finished frame(s) are in" in err
    for name in frames:
        Image.open(small_disk / "zoom_frames" / name).load()   # whole
    if out.exists():
        assert len(read_video(out)[0]) == len(frames)
    assert no_temporary_files(small_disk)


# ----------------------------------------------------------------------------- patterns

def test_a_recursive_pattern_finds_images_in_subfolders(tiny, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("src/a.png", "src/one/b.png", "src/one/two/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    folder = tmp_path / "dreams"
    argv = tiny[:-1] + [str(folder) + os.sep, "--initial_image", str(tmp_path / "src/**/*.png")]
    assert main(argv) == 0
    assert sorted(path.name for path in folder.glob("*.png")) == ["a.png", "b.png", "c.png"]
