"""Dreamed videos in chunks (cnnvis.chunks): the layout of chunks and cross-fades, the same
frames here and in local workers, resuming from any frame, and bad input. On the tiny
network (16x16 input, conv2); the seams' coherence on a real network is
tests/test_coherence.py's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnvis
from cnnvis.cli import main
from cnnvis.frames import FrameStore
from tests.cli_contract import refused
from tests.media import frames_encoded, moving_square_frames, read_video, write_video
from tests.test_large_jobs import _kill_a_local_worker, _kill_a_ray_worker

OPTIONS = dict(target_layer="conv2", num_steps=3, output_iter=1000, chunk_frames=5,
               warmup_frames=2)


@pytest.fixture
def spec(model_files) -> cnnvis.ModelSpec:
    deploy, weights = model_files
    return cnnvis.ModelSpec(deploy_txt=deploy, caffe_model=weights, device="cpu")


@pytest.fixture(scope="module")
def clip() -> list[tuple[int, np.ndarray]]:
    return list(enumerate(moving_square_frames(13, (20, 40), speed=2, side=8), 3))


def made(frames) -> dict:
    """Pixels by (number, chunk) of the raw frames, (number, None) of the frames shown."""
    return {(frame.number, frame.chunk if frame.raw else None): frame.rgb for frame in frames}


def test_chunks_keep_their_frames_and_cross_fade_their_warm_ups(spec, clip):
    """13 frames (numbered 3 to 15) in chunks of 5 with 2 warm-up frames: chunk 1 keeps 3-7,
    chunk 2 dreams 6-12 and keeps 8-12, chunk 3 dreams 11-15; frames 6, 7, 11 and 12 are
    cross-fades of two chunks' raw frames, with smoothstep weights 1/4 and 3/4."""
    frames = made(cnnvis.dream_video_chunks(clip, spec, seed=4, **OPTIONS))
    raw = sorted(key for key in frames if key[1] is not None)
    assert raw == [(6, 1), (6, 2), (7, 1), (7, 2), (11, 2), (11, 3), (12, 2), (12, 3)]
    assert sorted(number for number, chunk in frames if chunk is None) == list(range(3, 16))
    for number, (ending, starting), weight in ((6, (1, 2), 0.25), (7, (1, 2), 0.75),
                                               (11, (2, 3), 0.25), (12, (2, 3), 0.75)):
        expected = np.rint((1 - weight) * frames[number, ending].astype(np.float32)
                           + weight * frames[number, starting].astype(np.float32))
        assert np.array_equal(frames[number, None], expected.astype(np.uint8))
    # Chunk 1 is the video dreamed in one piece, up to its last frame.
    whole = [frame.rgb for frame in cnnvis.dream_video(clip[:5], spec.load(), seed=4,
                                                       target_layer="conv2", num_steps=3,
                                                       output_iter=1000)]
    for number, rgb in zip(range(3, 8), whole):
        assert np.array_equal(frames.get((number, 1), frames.get((number, None))), rgb)
    # Chunk 2 begins as a video dreamed from its first frame on: frame n has the seed
    # seed + n - 1 wherever it is dreamed.
    alone = [frame.rgb for frame in cnnvis.dream_video(clip[3:5], spec.load(), seed=4,
                                                       target_layer="conv2", num_steps=3,
                                                       output_iter=1000)]
    assert np.array_equal(alone[0], frames[6, 2]) and np.array_equal(alone[1], frames[7, 2])


def test_chunks_are_the_same_here_in_workers_and_resumed_from_any_frame(spec, clip):
    here = made(cnnvis.dream_video_chunks(clip, spec, seed=4, **OPTIONS))
    in_workers = made(cnnvis.dream_video_chunks(clip, spec, seed=4, workers=2, **OPTIONS))
    assert here.keys() == in_workers.keys()
    assert all(np.array_equal(here[key], in_workers[key]) for key in here)
    # Resumed with some raw frames and some shown ones kept: the rest is made, the same.
    stored = {key: here[key] for key in ((4, None), (5, None), (6, 1), (6, 2), (7, 2), (9, None),
                                         (11, 3))}
    resumed = list(cnnvis.dream_video_chunks(clip, spec, seed=4, stored=lambda n, c: stored.get((n, c)),
                                             **OPTIONS))
    # Chunk 1 has no frame 3: it is made again, and its frames after; chunk 2 continues from
    # its stored 6, 7 (8 was not kept: from 8 on it is made); chunk 3 from its stored 11.
    again = made(frame for frame in resumed if not frame.made)
    assert sorted(again) == [(6, 2), (7, 2), (11, 3)]
    assert made(resumed).keys() == here.keys()
    for key, rgb in made(resumed).items():
        assert np.array_equal(rgb, here[key]), key
    # Resumed with every frame stored, all come back and none is made again.
    whole = list(cnnvis.dream_video_chunks(clip, spec, seed=4, stored=lambda n, c: here[n, c],
                                           **OPTIONS))
    assert made(whole).keys() == here.keys()
    # (A cross-fade is made again from its two stored frames: it may not be in the folder.)
    assert [frame.number for frame in whole if frame.made] == [6, 7, 11, 12]
    assert all(frame.chunk == 0 for frame in whole if frame.made)


def test_chunks_of_a_real_network_are_the_same_here_as_in_workers_whatever_the_threads():
    """On efficientnet_lite0 a frame made with 1 thread and with 2 differs (PyTorch's sums,
    carried into the picture by RMSProp); each chunk's task runs on one thread."""
    frames = list(enumerate(moving_square_frames(5, (224, 232), speed=3, side=60), 1))
    options = dict(target_layer="stage5/block3", num_steps=3, output_iter=1000, chunk_frames=3,
                   warmup_frames=1, seed=0)
    spec = cnnvis.ModelSpec("efficientnet_lite0", device="cpu")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here = made(cnnvis.dream_video_chunks(frames, spec, **options))
        assert torch.get_num_threads() == 2   # as it was
    finally:
        torch.set_num_threads(threads)
    in_workers = made(cnnvis.dream_video_chunks(frames, spec, workers=2, **options))
    assert here.keys() == in_workers.keys() and len(here) == 7
    assert all(np.array_equal(here[key], in_workers[key]) for key in here)


def test_frames_in_order_gives_the_shown_frames_in_order_whatever_order_they_come_in():
    rgb = np.zeros((2, 2, 3), np.uint8)
    came = [cnnvis.ChunkFrame(number, chunk, rgb, raw) for number, chunk, raw in
            ((6, 2, True), (7, 2, False), (4, 1, False), (6, 1, True), (6, 0, False), (5, 1, False))]
    assert [frame.number for frame in cnnvis.frames_in_order(came, first=4)] == [4, 5, 6, 7]


def test_frames_out_of_order_are_refused(spec, clip):
    with pytest.raises(ValueError, match="frame 6 came where frame 5 was due"):
        list(cnnvis.dream_video_chunks(clip[:2] + clip[3:], spec, seed=0, **OPTIONS))


def test_dream_video_says_where_chunks_are_made(spec, clip):
    with pytest.raises(TypeError, match="cnnvis.dream_video_chunks makes it"):
        next(iter(cnnvis.dream_video(clip, spec.load(), chunk_frames=5)))


# ----------------------------------------------------------------------- the command line

FAST = ["--num_steps", "3", "--iter_behavior", "", "--seed", "0"]


@pytest.fixture
def video(tmp_path) -> Path:
    """13 frames of a textured square moving 2 px a frame, with sound."""
    return write_video(tmp_path / "square.mp4", moving_square_frames(13, (32, 48), speed=2, side=8))


def frame_pixels(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.array(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def test_a_video_in_chunks_is_the_same_here_in_workers_and_on_ray_even_when_a_worker_dies(
        tiny_model, video, tmp_path, monkeypatch):
    """Each chunked run kills a worker (SIGKILL, as the OOM killer does) when the first frame
    comes back: its task runs again. One chunk (--workers alone: chunks of 48) is the video
    dreamed in one piece."""
    argv = tiny_model + FAST + ["--input_video", str(video)]
    assert main(argv + ["--output_file", str(tmp_path / "whole.mp4")]) == 0
    assert main(argv + ["--workers", "2", "--output_file", str(tmp_path / "one.mp4")]) == 0
    whole = frame_pixels(tmp_path / "whole_frames")
    assert list(whole) == [f"{n:06d}.png" for n in range(1, 14)]
    assert all(np.array_equal(whole[name], rgb)
               for name, rgb in frame_pixels(tmp_path / "one_frames").items())
    chunked = argv + ["--chunk_frames", "5", "--warmup_frames", "2"]
    assert main(chunked + ["--output_file", str(tmp_path / "here.mp4")]) == 0
    here = frame_pixels(tmp_path / "here_frames")
    # Chunks keep 1-5, 6-10 and 11-13; 4, 5, 9 and 10 are cross-fades of two chunks' own.
    assert sorted(name for name in here if "chunk" in name) == [
        f"{n:06d}_chunk{c}.png" for n, c in ((4, 1), (4, 2), (5, 1), (5, 2), (9, 2), (9, 3),
                                             (10, 2), (10, 3))]
    assert np.array_equal(here["000003.png"], whole["000003.png"])
    assert not np.array_equal(here["000006.png"], whole["000006.png"])
    for name, run_in, kill in (("workers", ["--workers", "2"], _kill_a_local_worker),
                               ("ray", ["--ray", "local", "--workers", "2"], _kill_a_ray_worker)):
        killed = []
        save = FrameStore.save
        monkeypatch.setattr(FrameStore, "save", lambda *args: save(*args) or killed
                            or killed.extend(kill()))
        assert main(chunked + run_in + ["--output_file", str(tmp_path / f"{name}.mp4")]) == 0
        monkeypatch.undo()
        assert killed, name
        there = frame_pixels(tmp_path / f"{name}_frames")
        assert there.keys() == here.keys()
        assert all(np.array_equal(here[key], there[key]) for key in here), name
        assert [np.array_equal(a, b) for a, b in zip(read_video(tmp_path / "here.mp4")[0],
                                                    read_video(tmp_path / f"{name}.mp4")[0],
                                                    strict=True)] == [True] * 13


def test_an_interrupted_video_in_chunks_keeps_its_frames_and_resumes_to_the_same(
        tiny_model, video, tmp_path, monkeypatch, capsys):
    argv = tiny_model + FAST + ["--input_video", str(video), "--chunk_frames", "5",
                                "--warmup_frames", "2", "--workers", "2"]
    encoded = frames_encoded(monkeypatch)
    assert main(argv + ["--output_file", str(tmp_path / "whole.mp4")]) == 0
    saved = []
    save = FrameStore.save

    def stop_at_the_ninth(store, number, rgb, chunk=None):   # as Ctrl-C would, before it
        if len(saved) == 8:
            raise KeyboardInterrupt
        save(store, number, rgb, chunk)
        saved.append(number)

    with monkeypatch.context() as patch:
        patch.setattr(FrameStore, "save", stop_at_the_ninth)
        assert main(argv + ["--output_file", str(tmp_path / "parts.mp4")]) == 130
    err = capsys.readouterr().err
    kept = frame_pixels(tmp_path / "parts_frames")
    assert len(kept) == 8 and "interrupted" in err and "--resume" in err
    # The video holds the finished frames up to the first one missing, in order.
    shown = [name for name in kept if "chunk" not in name]
    in_order = next(n for n in range(1, 15) if f"{n:06d}.png" not in shown) - 1
    assert len(read_video(tmp_path / "parts.mp4")[0]) == in_order
    assert main(argv + ["--output_file", str(tmp_path / "parts.mp4"), "--resume"]) == 0
    whole = frame_pixels(tmp_path / "whole_frames")
    resumed = frame_pixels(tmp_path / "parts_frames")
    assert resumed.keys() == whole.keys()
    assert all(np.array_equal(whole[key], resumed[key]) for key in whole)
    # Resumed once more, with every frame in the folder: the same video, nothing made.
    assert main(argv + ["--output_file", str(tmp_path / "parts.mp4"), "--resume"]) == 0
    assert "wrote" in capsys.readouterr().err
    # The resumed videos are made of the uninterrupted one's frames, in order.
    uninterrupted, interrupted, resumed_video, again = encoded.values()
    assert len(uninterrupted) == 13 and interrupted == uninterrupted[:in_order]
    assert resumed_video == uninterrupted and again == uninterrupted
    assert len(read_video(tmp_path / "parts.mp4")[0]) == 13


@pytest.mark.parametrize("extra, key_words", [
    (["--chunk_frames", "4", "--warmup_frames", "6"],
     ["--chunk_frames 4 is shorter than --warmup_frames 6", "at least 6"]),
    (["--chunk_frames", "4", "--warmup_frames", "-1"], ["--warmup_frames -1 must be at least 0"]),
    (["--chunk_frames", "0"], ["--chunk_frames 0 must be at least 1"]),
    (["--warmup_frames", "3"], ["--warmup_frames", "--chunk_frames N", "drop --warmup_frames"]),
])
def test_bad_chunks_are_refused(tiny_model, video, output, capsys, extra, key_words):
    refused(tiny_model + FAST + ["--input_video", str(video), "--output_file",
                                 str(output.with_suffix(".mp4"))] + extra,
            capsys, output, *key_words)


@pytest.mark.parametrize("extra", [["--workers", "2"], ["--ray", "local"]])
def test_a_zoom_sequence_on_workers_is_refused(tiny_model, output, capsys, extra):
    refused(tiny_model + FAST + ["--frames", "3", "--output_file", str(output.with_suffix(".mp4"))]
            + extra, capsys, output, f"{extra[0]} runs the chunks of a dreamed video",
            "one after the other", f"drop {extra[0]}")


def test_chunks_of_a_zoom_sequence_are_refused(tiny_model, output, capsys):
    refused(tiny_model + FAST + ["--frames", "3", "--chunk_frames", "5", "--output_file",
                                 str(output.with_suffix(".mp4"))],
            capsys, output, "--chunk_frames is an option of dreamed videos")
