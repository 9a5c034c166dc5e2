"""A zoom sequence or a dreamed video to a file: frames made one at a time, each written to
the frames folder (`{stem}_frames/`) and to the video as soon as it is finished; --resume
reuses the frames that the same settings made; the input video's sound goes along.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnvis.animation import plan_sequence, video_dream_frames, zoom_frames
from cnnvis.chunks import DEFAULT_CHUNK_FRAMES, ChunkFrame, chunked_frames
from cnnvis.errors import NonFiniteImage, UserError
from cnnvis.frames import FrameStore, recorded_frames, recorded_seed
from cnnvis.ownership import check_own_folder
from cnnvis.plan import check_memory, new_seed, plan_sizes
from cnnvis.pools import runs_here
from cnnvis.recording import pixel_settings
from cnnvis.report import ConsoleObserver, describe_dream, parse_actions
from cnnvis.request import Outcome, Request, read_inputs
from cnnvis.settings import DreamOptions
from cnnvis.signals import signals_deferred
from cnnvis.video import (DEFAULT_FPS, VideoInput, VideoWriteError, check_video_output,
                          video_writer)
from cnnvis.zoo import select_device

if TYPE_CHECKING:
    import torch

# A frame, or an intermediate picture of one (`save`): 000001.png, 000001_1_50.png.
FRAME_FILE = re.compile(r"\d{6}(_\d+_\d+|_chunk\d+)?\.png")


def check_sequence(request: Request) -> None:
    """Refuse combinations of options that cannot make the sequence asked for."""
    command, animation = request.command, request.animation
    if command.input_video:
        if command.initial_image:
            raise UserError("--input_video and --initial_image both give the pictures to start "
                            "from; give one of them.")
        if animation.frames > 1:
            raise UserError("--frames makes a zoom sequence; a dreamed video has the frames of "
                            "--input_video (choose them with --start_frame and --end_frame).")
        unused = request.changed(applies="zoom")
        if unused:
            raise UserError(f"--{unused[0]} moves the camera of a zoom sequence (--frames), not "
                            "of a dreamed video; drop it.")
        if command.end_frame is not None and command.end_frame < command.start_frame:
            raise UserError(f"--end_frame {command.end_frame} comes before --start_frame "
                            f"{command.start_frame}; give an --end_frame of at least "
                            f"{command.start_frame}.")
        if "warmup_frames" in request.changed() and not _in_chunks(request):
            raise UserError("--warmup_frames is the warm-up of a video in chunks; give "
                            "--chunk_frames N (or --workers, or --ray), or drop --warmup_frames.")
    else:
        unused = request.changed(applies="video")
        if unused:
            raise UserError(f"--{unused[0]} is an option of dreamed videos; give --input_video "
                            f"VIDEO, or drop --{unused[0]}.")
        for name in request.changed(applies="jobs"):
            raise UserError(f"--{name} runs the chunks of a dreamed video (--input_video) at "
                            "once; each frame of a zoom sequence starts from the one before, "
                            f"so they are made one after the other here: drop --{name}.")


def _in_chunks(request: Request) -> bool:
    """Whether the request's video is dreamed in chunks."""
    command = request.command
    return bool(command.input_video) and (request.animation.chunk_frames is not None
                                          or not runs_here(command.workers, command.ray))


def write_sequence(request: Request, progress: Callable[[int, int], None] | None = None,
                   frame_done: Callable[[int, Path], None] | None = None) -> Outcome:
    """Make the zoom sequence (--frames) or dreamed video (--input_video) of `request` into
    its --output_file (.mp4, .webm or .gif), and each frame into `{stem}_frames/`; with the
    callbacks of `cnnvis.make`."""
    command, options, animation = request.command, request.dream, request.animation
    actions = parse_actions(command.iter_behavior)
    output = request.output
    check_sequence(request)
    check_video_output(output)
    inputs = read_inputs(command, output)
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(VideoInput(command.input_video)) if command.input_video else None
        device = select_device(command.gpu)
        spec = request.model_spec(inputs.mean_bgr, device)
        if video:
            check_frame_memory(options, video.declared_size, spec.input_size(), device)
            video.check_first_frame()
        photo_size = video.size if video else None if inputs.photo is None else inputs.photo.shape[:2]

        chunked = _in_chunks(request)
        if chunked and animation.chunk_frames is None:
            request = request.with_options(chunk_frames=DEFAULT_CHUNK_FRAMES)
            animation = request.animation
        seed = command.seed
        store_folder = output.with_name(f"{output.stem}_frames")
        recorded = recorded_frames(store_folder) if command.resume else {}
        if seed is None:
            seed = recorded_seed(recorded)
            seed = new_seed() if seed is None else seed
            request = request.with_seed(seed)
        plan = plan_sequence({**dataclasses.asdict(options), **dataclasses.asdict(animation)},
                             photo_size=photo_size,
                             input_size=spec.input_size(), device=device, seed=seed,
                             guide=inputs.guide, mask=inputs.mask, depth=command.output_depth)
        # Chunks in workers or on Ray load the model there; here it names the model.
        parallel = chunked and not runs_here(command.workers, command.ray)
        model = spec.load("cpu" if parallel else None)
        png_text = request.png_text(model.name, seed)
        store = FrameStore(output, command.output_depth, png_text,
                           pixel_settings(request.command, options, animation, seed=seed))
        if command.resume:
            store.check_resumable(plan.first.sizes[-1])
        store.check_writable()
        check_own_folder(store.folder, FRAME_FILE, "the frames")

        if video and video.frame_count and command.start_frame > video.frame_count:
            raise UserError(f"--start_frame {command.start_frame} is after the last frame of "
                            f"{video.path} ({video.frame_count}); give at most "
                            f"{video.frame_count}.")
        if video:
            last = command.end_frame or video.frame_count
            total = None if last is None else max(last - command.start_frame + 1, 0)
        else:
            total = animation.frames
        observer = ConsoleObserver(actions, output.with_suffix(".png"), command.output_depth,
                                   png_text, total=total,
                                   show_size=(command.show_width, command.show_height),
                                   frames_folder=store.folder)
        stored = store.stored if command.resume else None
        if chunked:
            sequence = chunked_frames(plan, spec if parallel else model,
                                      video.frames(command.start_frame, command.end_frame),
                                      workers=command.workers, ray=command.ray,
                                      ray_timeout=command.ray_timeout, stored=stored)
        else:
            keywords = dict(callback=observer.report, progress=progress, stored=stored)
            if video:
                frames = video_dream_frames(plan, model, video.frames(command.start_frame,
                                                                      command.end_frame), **keywords)
            else:
                frames = zoom_frames(plan, model, inputs.photo, **keywords)
            sequence = (ChunkFrame(frame.number, 1, frame.rgb, raw=False,
                                   made=frame.picture is not None) for frame in frames)
        if "print" in actions:
            print(describe_dream(options, command.guide_image, command.mask), file=sys.stderr)
        fps = Fraction(command.fps).limit_denominator(1001) if command.fps else (
            video.fps if video else DEFAULT_FPS)
        sound_from = float((command.start_frame - 1) / video.fps) if video else 0.0

        writer = stack.enter_context(video_writer(output, fps, video, sound_from))
        stopped: BaseException | None = None
        finished = 0   # the frames in the folder
        shown: dict[int, np.ndarray | None] = {}   # finished, not yet in the video (None: on disk)
        next_shown = command.start_frame if video else 1
        try:
            for frame in sequence:
                # A signal now waits until the frame is in the folder and in the video.
                with signals_deferred():
                    if frame.made:
                        store.save(frame.number, frame.rgb, frame.chunk if frame.raw else None)
                    if not frame.raw:
                        finished += 1
                        shown[frame.number] = frame.rgb if frame.number == next_shown else None
                    while next_shown in shown:   # the video takes its frames in order
                        rgb = shown.pop(next_shown)
                        writer.write(store.stored(next_shown) if rgb is None else rgb)
                        if frame_done is not None:
                            frame_done(next_shown, store.path(next_shown))
                        next_shown += 1
                if not frame.raw:
                    observer.frame_done(frame.number)
        except (UserError, KeyboardInterrupt, VideoWriteError) as stop:
            stopped = stop   # the finished frames make the video, up to the first gap
        finally:
            observer.close()
        unwritten: UserError | None = None
        try:
            with signals_deferred():
                stack.close()   # the video is complete and in place
        except UserError as error:   # it is not: its disk is full, say
            unwritten = error
    if unwritten is not None:
        cause = stopped if isinstance(stopped, UserError) else unwritten
        raise UserError(f"{cause}; the {finished} finished frame(s) are in {store.folder}, and "
                        f"{output} is not written: run again with --resume to make it from "
                        "them") from None
    if stopped is not None and writer.count == 0:
        raise stopped   # nothing was made: as for a single picture
    if writer.count == 0:
        raise UserError(f"{video.path} has no frames from --start_frame {command.start_frame} on"
                        f"{_decodable(video)}; give a --start_frame within the video.")
    done = (f"the {writer.count} finished frame(s) are in {store.folder} and {output}"
            if finished == writer.count else
            f"the {finished} finished frame(s) are in {store.folder}, and the first "
            f"{writer.count} of them, up to the first one not finished, in {output}")
    if isinstance(stopped, KeyboardInterrupt):
        return Outcome(f"{done} (--resume continues).", stopped)
    if isinstance(stopped, NonFiniteImage):
        raise UserError(f"{stopped}; {done}. Lower --learning_rate (or the regularisation "
                        "strengths) and run again with --resume.") from None
    if stopped is not None:
        raise UserError(f"{stopped}; {done}.") from None
    return Outcome(f"wrote {output} ({writer.count} frames; each is also in {store.folder})")


def check_frame_memory(options: DreamOptions, declared: tuple[int, int] | None,
                       input_size: tuple[int, int], device: torch.device) -> None:
    """Refuse, before a frame is decoded, a video whose frames this machine's memory cannot
    dream: the sizes planned from the frame size that the video declares. (Other problems
    of the sizes are said once frame 1 is decoded and turned upright.)"""
    if declared is None:
        return
    try:
        sizes = plan_sizes(options, declared, input_size)
    except UserError:
        return
    check_memory(sizes, device)


def _decodable(video: VideoInput) -> str:
    count = video.decoded_count
    return "" if count is None or count == video.frame_count else f" (only {count} can be decoded)"
