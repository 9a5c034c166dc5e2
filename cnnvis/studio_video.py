"""The studio's moving pictures (`cnnvis.studio`): an uploaded clip dreamed frame by frame,
or a zoom into the picture tab's photo, made by `cnnvis.make` into the session's folder as
`python cnn_vis.py --input_video` (or `--frames`) makes them: the frames folder, and the
video with the clip's sound; the page shows each frame as it is finished. Stop keeps the
frames finished so far, and the video of them.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cnnvis
from cnnvis.errors import Interrupted, UserError
from cnnvis.plan import new_seed
from cnnvis.recording import option_argv
from cnnvis.settings import (AnimationOptions, CommandOptions, DreamOptions, check_seed, default,
                             options_from_keywords)
from cnnvis.studio_runs import Done, Session, Steps, Studio, in_worker, named_as_uploaded
from cnnvis.video import VideoInput

# The animation options of each kind of video that the video tab shows (the others keep
# the table's defaults).
ZOOM_OPTIONS = ("frames", "zoom", "rotate", "frame_steps")
VIDEO_OPTIONS = ("frame_steps", "coherence")

# How the command line's messages about --input_video read in the studio.
STUDIO_WORDS = {" (--input_video)": "",
                "give it with --initial_image (with --frames N for a zoom sequence)":
                    "upload it as the picture tab's photo, and choose the zoom into it"}


@dataclass(frozen=True)
class VideoUpdate:
    """What the page shows while a video is made: the frames so far (path, caption), the
    progress, and at the end the video file (None when no frame was finished)."""

    frames: list[tuple[str, str]]
    progress: str
    video: Path | None = None
    command: str | None = None


def open_video(studio: Studio, path: str | None) -> VideoInput:
    """The uploaded clip at `path`, checked as the command line checks --input_video (a
    corrupt file, a still image, frames beyond the machine's memory), and against the
    studio's limits on bytes, pixels and seconds; frame 1 decoded."""
    if path is None:
        raise UserError("no video uploaded; upload a short clip (an MP4, WebM, MOV or AVI), "
                        "or choose the zoom into the picture tab's photo.")
    studio.check_upload(path, "video")
    with named_as_uploaded(path, STUDIO_WORDS):
        video = VideoInput(path)
    with contextlib.ExitStack() as opened:
        opened.callback(video.close)
        if video.declared_size:
            studio.check_pixels(*video.declared_size[::-1], "video")
        seconds = float(video.frame_count / video.fps) if video.frame_count else 0.0
        if seconds > studio.max_seconds:
            raise UserError(f"the video lasts {seconds:.1f} s, more than "
                            f"this studio takes ({studio.max_seconds:g} s, --max_upload_seconds)"
                            "; cut it shorter first.")
        with named_as_uploaded(path, STUDIO_WORDS):
            video.check_first_frame()
        studio.check_pixels(*video.size[::-1], "video")
        opened.pop_all()
    return video


def run_video(studio: Studio, session: Session, video_path: str | None,
              photo_path: str | None, zoom: bool, model_name: str, seed: int | None,
              depth: int, values: dict[str, object],
              animation_values: dict[str, object]) -> Iterator[VideoUpdate]:
    """Dream the uploaded clip at `video_path` (or with `zoom`, a zoom sequence from the
    photo at `photo_path`, None: noise) for `session`, yielding the frames as they are
    finished; the last update holds the video (.mp4) in the session's folder."""
    options, animation = options_from_keywords({**values, **animation_values}, DreamOptions,
                                               AnimationOptions)
    seed = check_seed(seed)
    with contextlib.ExitStack() as stack:
        video = None
        if zoom:
            studio.photo(photo_path)   # checked as uploads are
        else:
            video = stack.enter_context(open_video(studio, video_path))
        model = studio.model(model_name)   # a preset of the list; loaded once, and checked
        seed = new_seed() if seed is None else seed
        number = studio.next_run()
        print(f"cnn-vis studio: run {number} (a video) for session {session.folder.name} "
              "started", flush=True)
        output = session.folder / f"video-{number}.mp4"
        name = Path(video_path if video else photo_path or "").name or None
        command = CommandOptions(model=model.name, seed=seed, output_depth=depth,
                                 output_file="dream.mp4", input_video=name if video else None,
                                 initial_image=None if video else name)
        argv = option_argv(command, options, animation)
        # The frames a clip of unknown length may give: no more than the limit's seconds.
        last = math.ceil(studio.max_seconds * video.fps) if video else None
        total = min(video.frame_count or last, last) if video else animation.frames
        source = dict(input_video=video_path, end_frame=last) if video else dict(
            initial_image=photo_path)
        keywords = {**values, **animation_values, **source, "model": model.name, "seed": seed,
                    "output_depth": depth, "output_file": str(output), "iter_behavior": "",
                    "gpu": -1 if studio.device == "cpu" else default("gpu")}

        def work(put) -> tuple[int, str | None]:
            made: list[int] = []

            def done(frame: int, png: Path) -> None:
                made.append(frame)
                put((frame, png))
            try:
                outcome = cnnvis.make(command_line=argv, progress=Steps(session),
                                      frame_done=done, **keywords)
            except Interrupted:   # before the first frame was finished
                return 0, None
            except UserError as error:   # the frames finished before it make the video
                if not made:
                    raise
                # Its own files by their names, as the page shows them.
                return len(made), str(error).replace(f"{session.folder}/", "")
            return len(made), (f"stopped after {len(made)} of {total} frames"
                               if outcome.stopped else None)

        started, shown = time.monotonic(), []
        with contextlib.closing(in_worker(work, f"studio-run-{number}", session.stop)) as items:
            for item in items:
                if isinstance(item, tuple):
                    frame, png = item
                    shown.append((str(png), f"frame {frame}"))
                if not isinstance(item, Done):
                    yield VideoUpdate(list(shown), _progress(len(shown), total, started))
                    continue
                count, ended = item.value
    if count == 0:
        raise UserError("the run was stopped before its first frame was finished; run it "
                        "again.")
    note = ended or f"{count} frames"
    yield VideoUpdate(shown, f"{note}, in {time.monotonic() - started:.0f} s", output,
                      " ".join(["python cnn_vis.py", *argv]))


def _progress(finished: int, total: int | None, started: float) -> str:
    if finished == 0:
        return f"making frame 1 of {total}"
    left = (time.monotonic() - started) / finished * (total - finished)
    return f"{finished} of {total} frames, about {left:.0f} s left"
