"""Zoom sequences and dreamed videos (issue 14): the camera move, the dream carried along
optical flow, video files in and out with their sound, resuming, and bad input.

The videos are made here with PyAV (tests/media.py) and dreamed with the tiny network."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

import cnnvis
from cnnvis.animation import animate, dream_video
from cnnvis.cli import main
from cnnvis.motion import camera_move, carry_along_flow, flow_estimator, grey
from tests.cli_contract import PREVIOUS_OUTPUT, refused
from tests.media import frames_encoded, moving_square_frames, read_video, write_video

LUMA_ERROR = 4
FAST = ["--num_steps", "3", "--iter_behavior", "", "--seed", "0"]


@pytest.fixture
def model(model_files):
    deploy, weights = model_files
    return cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")


@pytest.fixture
def video(tmp_path) -> Path:
    """12 frames at 10 fps of a textured square moving 3 px per frame, with a sine tone."""
    return write_video(tmp_path / "square.mp4", moving_square_frames(12, (32, 48), speed=3, side=12))


# ----------------------------------------------------------------------------- the camera

def test_camera_move_matches_scipy_affine_transform():
    """Zoom, rotation and pan about the centre, with reflected borders, against SciPy's
    own resampler (cubic splines: equal to OpenCV's cubic on a smooth picture)."""
    rows, columns = np.mgrid[0:40, 0:60].astype(np.float64)
    smooth = 128 + 60 * np.sin(rows / 7) * np.cos(columns / 9)                 # (40, 60)
    zoom, degrees, (dx, dy) = 1.15, 12.0, (3.0, -2.0)
    moved = camera_move(np.repeat(smooth[..., None], 3, axis=2).astype(np.float32), zoom, degrees,
                        (dx, dy))[..., 0]
    # Output pixel (y, x) comes from input c + R^-1 ((y, x) - c - pan) / zoom.
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])  # (y, x)
    inverse = np.linalg.inv(rotation) / zoom
    centre = np.array([19.5, 29.5])
    offset = centre - inverse @ (centre + [dy, dx])
    expected = scipy.ndimage.affine_transform(smooth, inverse, offset, order=3, mode="mirror")
    assert np.abs(moved - expected)[4:-4, 4:-4].max() < 0.5
    assert np.abs(moved - expected).mean() < 0.3


def test_each_zoom_frame_starts_from_the_previous_frame_moved(model):
    # With a learning rate of 0 the steps change nothing: each frame is its start.
    frames = list(animate(None, model, seed=3, frames=3, zoom=1.2, rotate=5, pan="2,1",
                          target_layer="conv2", num_steps=2, learning_rate=0, initial_size="24x40",
                          colour_hold=0.0))
    assert [frame.number for frame in frames] == [1, 2, 3]
    for before, after in zip(frames, frames[1:]):
        moved = camera_move(before.rgb.astype(np.float32), 1.2, 5, (2, 1))
        np.testing.assert_array_equal(after.rgb, np.rint(np.clip(moved, 0, 255)).astype(np.uint8))
    assert not np.array_equal(frames[0].rgb, frames[1].rgb)


def test_the_colour_hold_takes_each_zoom_frames_colour_drift_back(model):
    # Learning rate 0 again: each frame is the one before moved, its mean colour shifted by
    # the colour hold's share of its distance from frame 1's.
    for hold in (1.0, 0.5):
        frames = list(animate(None, model, seed=3, frames=3, zoom=1.5, rotate=20, pan="6,3",
                              target_layer="conv2", num_steps=2, learning_rate=0,
                              initial_size="24x40", colour_hold=hold))
        first = frames[0].rgb.astype(np.float32).mean((0, 1))
        for before, after in zip(frames, frames[1:]):
            moved = camera_move(before.rgb.astype(np.float32), 1.5, 20, (6, 3))
            moved += hold * (first - moved.mean((0, 1)))
            np.testing.assert_array_equal(after.rgb,
                                          np.rint(np.clip(moved, 0, 255)).astype(np.uint8))


def test_zoom_frame_one_is_the_single_picture(model):
    options = dict(seed=4, target_layer="conv2", num_steps=3)
    first = next(animate(None, model, frames=2, zoom=1.1, **options))
    np.testing.assert_array_equal(first.rgb, np.array(cnnvis.dream(None, model, **options)))


# ----------------------------------------------------------------------------- the flow

def test_dream_is_carried_along_the_motion_and_dropped_where_occluded():
    frames = moving_square_frames(2, (48, 64), speed=3)
    values = np.zeros((48, 64, 3), np.float32)
    values[14:34, 2:22] = 50    # on the square in the previous frame
    carried, _ = carry_along_flow(values, grey(frames[0]), grey(frames[1]), flow_estimator())
    on_square = carried[18:30, 9:21, 0]        # the square's inside, now 3 px further right
    assert np.abs(on_square - 50).mean() < 5
    assert np.abs(carried[:, 30:]).max() == 0   # far from the square nothing comes


def coherence(outputs: list[np.ndarray], side: int, top: int, speed: int) -> float:
    """Mean |out_t - out_{t-1} moved with the square| over the square."""
    return float(np.mean([np.abs(
        outputs[t][top:top + side, 2 + speed * t:2 + speed * t + side].astype(float)
        - outputs[t - 1][top:top + side, 2 + speed * (t - 1):2 + speed * (t - 1) + side])
        .mean() for t in range(1, len(outputs))]))


def test_flow_makes_the_dream_at_least_twice_as_steady(model):
    """A plain square moving over a plain background with faint noise in every frame (as
    from a camera): dreamed on its own, each frame grows its own pattern from its noise;
    carried along the flow, the pattern of the frame before stays."""
    height, width, side, speed = 32, 48, 16, 3
    rng = np.random.default_rng(5)
    frames = []
    for t in range(8):
        frame = np.full((height, width, 3), 100.0)
        frame[8:8 + side, 2 + speed * t:2 + speed * t + side] = 170
        frames.append(np.clip(frame + rng.normal(0, 1, frame.shape), 0, 255).astype(np.uint8))
    options = dict(seed=1, target_layer="conv2", num_steps=30, frame_steps=2, tv_reg=0, blend=1.0)
    flow, alone = ([frame.rgb for frame in dream_video(enumerate(frames, 1), model, flow=kind,
                                                       **options)] for kind in ("dis", "none"))
    steady, flickering = coherence(flow, side, 8, speed), coherence(alone, side, 8, speed)
    assert flickering >= 2 * steady, (steady, flickering)


# ----------------------------------------------------------------------------- files

def test_dreamed_video_keeps_count_size_rate_and_sound(tiny_model, video, tmp_path, capsys):
    out = tmp_path / "dream.mp4"
    assert main(tiny_model + FAST + ["--input_video", str(video), "--output_file", str(out),
                                     "--frame_steps", "1"]) == 0
    frames, rate, sound = read_video(out)
    assert len(frames) == 12 and frames[0].shape == (32, 48, 3) and rate == 10
    assert sound == pytest.approx(read_video(video)[2], abs=0.05)
    stored = sorted((tmp_path / "dream_frames").glob("*.png"))
    assert [p.name for p in stored] == [f"{n:06d}.png" for n in range(1, 13)]
    text = Image.open(stored[4]).text
    assert text["cnn-vis:frame"] == "5" and "--input_video" in text["cnn-vis:command"]
    # The video holds the frames: H.264 at a high quality keeps their luma (yuv420p halves
    # the resolution of the colours, which on this pixel noise is all the difference).
    luma = [np.array(Image.fromarray(rgb).convert("L"), dtype=float)
            for rgb in (frames[4], np.array(Image.open(stored[4])))]
    assert np.abs(luma[0] - luma[1]).mean() < LUMA_ERROR
    assert "wrote" in capsys.readouterr().err


def test_range_of_frames_and_sound_from_its_start(tiny_model, video, tmp_path):
    out = tmp_path / "part.webm"
    assert main(tiny_model + FAST + ["--input_video", str(video), "--output_file", str(out),
                                     "--start_frame", "4", "--end_frame", "9", "--fps", "5"]) == 0
    frames, rate, sound = read_video(out)
    assert len(frames) == 6 and rate == 5
    assert sound == pytest.approx(0.6, abs=0.05)   # input frames 4 to 9 last 0.6 s at 10 fps
    assert sorted(p.name for p in (tmp_path / "part_frames").iterdir())[0] == "000004.png"


def test_zoom_sequence_as_gif(tiny_model, tmp_path):
    out = tmp_path / "zoom.gif"
    assert main(tiny_model + FAST + ["--frames", "4", "--zoom", "1.05", "--initial_size", "24x32",
                                     "--output_file", str(out), "--fps", "10"]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.size == (32, 24) and gif.info["duration"] == 100


def run_interrupted(monkeypatch, argv: list[str], after: int) -> int:
    """The command, stopped by Ctrl-C as frame `after` + 1 is about to be stored."""
    from cnnvis.frames import FrameStore
    save = FrameStore.save

    def save_until(store, number, rgb, chunk=None):
        if number > after:
            raise KeyboardInterrupt
        save(store, number, rgb, chunk)

    with monkeypatch.context() as patch:
        patch.setattr(FrameStore, "save", save_until)
        return main(argv)


def test_interrupted_video_resumes_to_the_same_video(tiny_model, video, tmp_path, monkeypatch,
                                                     capsys):
    whole, parts = tmp_path / "whole.mp4", tmp_path / "parts.mp4"
    common = tiny_model + FAST + ["--input_video", str(video), "--frame_steps", "2"]
    encoded = frames_encoded(monkeypatch)
    assert main(common + ["--output_file", str(whole)]) == 0
    assert run_interrupted(monkeypatch, common + ["--output_file", str(parts)], after=5) == 130
    assert "interrupted; the 5 finished frame(s)" in capsys.readouterr().err
    assert len(read_video(parts)[0]) == 5      # the video of the finished frames
    assert len(list((tmp_path / "parts_frames").glob("*.png"))) == 5

    import cnnvis.animation
    dreamed = []
    render = cnnvis.animation.run_plan
    monkeypatch.setattr(cnnvis.animation, "run_plan",
                        lambda *args, **kw: dreamed.append(1) or render(*args, **kw))
    assert main(common + ["--output_file", str(parts), "--resume"]) == 0
    assert len(dreamed) == 7                   # frames 6 to 12 only
    for number in range(1, 13):
        name = f"{number:06d}.png"
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "whole_frames" / name)),
                                      np.array(Image.open(tmp_path / "parts_frames" / name)))
    # The resumed video is made of the uninterrupted one's frames, in order.
    uninterrupted, interrupted, resumed = encoded.values()
    assert interrupted == uninterrupted[:5] and resumed == uninterrupted
    assert len(read_video(parts)[0]) == 12


def test_resume_takes_the_seed_of_the_stored_frames(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "zoom.mp4"
    argv = tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--frames", "3",
                         "--zoom", "1.1", "--output_file", str(out)]
    assert run_interrupted(monkeypatch, argv, after=1) == 130
    seed = Image.open(tmp_path / "zoom_frames" / "000001.png").text["cnn-vis:seed"]
    assert main(argv + ["--resume"]) == 0
    assert Image.open(tmp_path / "zoom_frames" / "000003.png").text["cnn-vis:seed"] == seed


# ----------------------------------------------------------------------------- bad input

def test_resume_refuses_frames_of_another_command(tiny_model, tmp_path, capsys):
    out = tmp_path / "zoom.mp4"
    argv = tiny_model + FAST + ["--frames", "2", "--output_file", str(out)]
    assert main(argv + ["--zoom", "1.05"]) == 0
    capsys.readouterr()
    out.write_bytes(PREVIOUS_OUTPUT)   # stands for the video, which the refusal leaves alone
    message = refused(argv + ["--zoom", "1.04", "--resume"], capsys, out, "--resume",
                      "--zoom 1.05 there, 1.04 here", "drop --resume")
    assert "000001.png" in message


@pytest.mark.parametrize("arguments, key_words", [
    (["--frames", "3"], ["must end in .mp4, .webm, .gif"]),
    (["--zoom", "0", "--frames", "3", "--output_file", "{dir}/z.mp4"], ["--zoom 0", "above 0"]),
    (["--frames", "0", "--output_file", "{dir}/z.mp4"], ["--frames 0", "at least 1"]),
    (["--frames", "2", "--output_file", "{dir}/z.avi"], ["must end in .mp4, .webm, .gif"]),
    (["--zoom", "1.1"], ["--zoom is an option of zoom sequences", "--frames N"]),
    (["--pan", "1", "--frames", "2", "--output_file", "{dir}/z.mp4"], ["--pan '1'", "DX,DY"]),
    (["--blend", "0.2", "--frames", "2", "--output_file", "{dir}/z.mp4"],
     ["--blend is an option of dreamed videos"]),
    (["--input_video", "{video}", "--initial_image", "{photo}", "--output_file", "{dir}/v.mp4"],
     ["--input_video and --initial_image"]),
    (["--input_video", "{video}", "--frames", "3", "--output_file", "{dir}/v.mp4"],
     ["--frames makes a zoom sequence"]),
    (["--input_video", "{video}", "--zoom", "1.1", "--output_file", "{dir}/v.mp4"],
     ["--zoom moves the camera"]),
    (["--input_video", "{video}", "--start_frame", "5", "--end_frame", "2",
      "--output_file", "{dir}/v.mp4"], ["--end_frame 2 comes before --start_frame 5"]),
    (["--input_video", "{dir}/missing.mp4", "--output_file", "{dir}/v.mp4"], ["missing.mp4"]),
    (["--input_video", "{photo}", "--output_file", "{dir}/v.mp4"], ["is a still image"]),
    (["--input_video", "{text}", "--output_file", "{dir}/v.mp4"], ["cannot read video"]),
    (["--input_video", "{empty}", "--output_file", "{dir}/v.mp4"], ["has no video frames"]),
    (["--input_video", "{sound}", "--output_file", "{dir}/v.mp4"], ["has no video frames"]),
    (["--input_video", "{video}", "--start_frame", "13", "--output_file", "{dir}/v.mp4"],
     ["--start_frame 13 is after the last frame", "(12)"]),
    (["--input_video", "{video}", "--output_file", "{video}"], ["is the --input_video itself"]),
])
def test_bad_sequences_are_refused(arguments, key_words, tiny, video, photo, tmp_path, capsys, output):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:   # a video stream without a single frame
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    sound = tmp_path / "sound.m4a"
    with av.open(str(sound), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=8000)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                           layout="mono")
        chunk.sample_rate, chunk.pts = 8000, 0
        container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    names = dict(dir=tmp_path, video=video, photo=photo, text=text, empty=empty, sound=sound)
    argv = tiny + [argument.format(**names) for argument in arguments]
    target = Path(argv[len(argv) - 1 - argv[::-1].index("--output_file") + 1])
    before = target.read_bytes() if target.exists() else None
    refused(argv, capsys, output, *key_words)
    assert (target.read_bytes() if target.exists() else None) == before
    assert not list(tmp_path.glob("*_frames"))


def test_an_unknown_layer_is_said_before_anything_else(tiny_model, tmp_path, capsys):
    argv = tiny_model[:-1] + ["no_such_blob", "--frames", "2", "--num_steps", "1",
                              "--output_file", str(tmp_path / "zoom.gif")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_blob" in err[0], err
