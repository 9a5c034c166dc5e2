"""Moving pictures: zoom sequences and dreamed videos, made and handed over one frame at
a time (so that memory does not grow with their length).

Frame 1 is dreamed as a single picture is (the whole size schedule). Every later frame
is dreamed for `frame_steps` steps at the final size, from a start made of the frame
before it *as stored* (8 or 16 bits, `depth`): a run resumed from stored frames then
continues exactly as an uninterrupted one.

- Zoom sequence (`animate`): the previous frame, moved by the camera (`zoom`, `rotate`,
  `pan`), is the next frame's photo: its start and what the p-norm pulls towards.
- Dreamed video (`dream_video`): each input frame is the photo. The previous frame's
  dream (its output minus its input) follows the motion to the current frame along
  optical flow, is dropped where the flow finds occlusions, and `blend` times it is
  added to the current frame to make its start (docs/algorithm.md, "Animations").
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from cnnvis.errors import UserError
from cnnvis.imageio import ImageInput, as_photo
from cnnvis.model import VisModel
from cnnvis.motion import camera_move, carry_along_flow, flow_estimator, grey
from cnnvis.optimizer import Report
from cnnvis.pixels import MAX_LEVEL, Picture, levels_to_image, png_bytes, resize_rgb
from cnnvis.plan import (Plan, build_objective, check_combinations, grey_mask, new_seed,
                         plan_picture, run_plan)
from cnnvis.plan import check_model
from cnnvis.settings import (AnimationOptions, DreamOptions, check_seed, default,
                             options_from_keywords)

# A frame's stored pixels when it was made before (uint8 or uint16 RGB), else None.
StoredFrames = Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class Frame:
    """One finished frame: its number (from 1; a video's own frame number), its pixels as
    stored, and the picture when it was dreamed now (None when it was stored before)."""

    number: int
    rgb: np.ndarray              # (H, W, 3), uint8 or uint16 (depth 16)
    picture: Picture | None

    def _repr_png_(self) -> bytes:
        """The frame itself where a notebook shows the result of a cell."""
        return png_bytes(self.rgb)


def parse_pan(text: str) -> tuple[float, float]:
    """(dx, dy) of --pan 'DX,DY'."""
    try:
        dx, dy = (float(part) for part in text.split(","))
        if np.isfinite([dx, dy]).all():
            return dx, dy
    except ValueError:
        pass
    raise UserError(f"--pan '{text}' is not DX,DY; give two numbers of pixels per frame joined "
                    "with ',', e.g. 2,-1.")


@dataclass(frozen=True)
class SequencePlan:
    """A sequence, checked: frame 1's plan (its photo given frame by frame), the options of
    the later frames, the camera or the flow, the guide (uint8 RGB or None), the seed of
    frame 1 (frame n gets seed + n - 1) and the depth the frames are stored at."""

    first: Plan
    later: DreamOptions
    animation: AnimationOptions
    guide_rgb: np.ndarray | None
    depth: int


def plan_sequence(options: dict, *, photo_size: tuple[int, int] | None,
                  input_size: tuple[int, int], device: torch.device, seed: int | None = None,
                  guide: ImageInput = None, mask: ImageInput = None,
                  depth: int = default("output_depth")) -> SequencePlan:
    """Check a sequence's `options` (the `DreamOptions` and `AnimationOptions` keywords)
    together and plan frame 1 for a photo of `photo_size` (None: noise), on a network of
    `input_size`, before any model loads."""
    first, animation = options_from_keywords(options, DreamOptions, AnimationOptions)
    seed = check_seed(seed)
    if depth not in MAX_LEVEL:
        raise ValueError(f"depth must be 8 or 16, not {depth}")
    guide_rgb = None if guide is None else as_photo(guide, "--guide_image")
    mask_grey = None if mask is None else grey_mask(mask)
    if animation.chunk_frames is not None and animation.chunk_frames < animation.warmup_frames:
        raise UserError(f"--chunk_frames {animation.chunk_frames} is shorter than --warmup_frames "
                        f"{animation.warmup_frames}: a chunk's warm-up would reach back past "
                        f"the chunk before; give --chunk_frames of at least "
                        f"{animation.warmup_frames}, or fewer --warmup_frames.")
    # A later frame's photo is the frame before it.
    check_combinations(first, photo_size is not None or animation.frames > 1,
                       guide_rgb is not None)
    plan = plan_picture(first, None, mask_grey, input_size, device,
                        new_seed() if seed is None else seed, photo_size=photo_size)
    # Later frames: one size, the final one (their photo already has it).
    later = dataclasses.replace(first, initial_size=None, final_size=None, num_sizes=1,
                                num_steps=animation.frame_steps or first.num_steps)
    return SequencePlan(plan, later, animation, guide_rgb, depth)


@dataclass(frozen=True)
class Start:
    """Where a frame's dream begins (None: its photo), and each pixel's step scale (None: 1)."""

    image: torch.Tensor | None = None        # (1, 3, H, W), cnn-vis units
    step_scale: torch.Tensor | None = None   # (H, W)
    anchor: np.ndarray | None = None         # what the p-norm pulls towards (None: the photo)


class _FrameMaker:
    """What every frame of one sequence shares: the plan, the model, the objective (built
    once), the later frames' plan (made once) and the callbacks."""

    def __init__(self, plan: SequencePlan, model: VisModel, callback, progress,
                 stored: StoredFrames | None):
        self.plan, self.model = plan, model
        self.callback, self.progress = callback, progress
        self.stored = stored or (lambda number: None)
        # Built now, so that an unknown layer is said before anything runs.
        self.objective = build_objective(model, plan.first.options, plan.guide_rgb)
        self.later_plan = None

    def make(self, number: int, photo: np.ndarray | None, later: bool,
             start: Callable[[], Start] = Start) -> Frame:
        """Frame `number`: the stored one, or dreamed now from `photo` (and `start()`)."""
        rgb = self.stored(number)
        if rgb is not None:
            return Frame(number, rgb, None)
        plan = self.plan
        if not later:
            frame_plan = plan.first
        else:
            if self.later_plan is None:   # every later photo has the final size
                self.later_plan = plan_picture(plan.later, photo, plan.first.mask,
                                               self.model.input_size, self.model.device,
                                               plan.first.seed)
            frame_plan = self.later_plan
        callback = self.callback and (
            lambda report: self.callback(dataclasses.replace(report, frame=number)))
        begin = start()
        picture = run_plan(dataclasses.replace(frame_plan, photo=photo,
                                               seed=plan.first.seed + number - 1),
                           self.model, self.objective, start=begin.image,
                           step_scale=begin.step_scale, anchor=begin.anchor, callback=callback,
                           progress=self.progress)
        return Frame(number, picture.rgb(plan.depth), picture)


def animate(image: ImageInput, model: VisModel, *, seed: int | None = None,
            callback: Callable[[Report], None] | None = None,
            progress: Callable[[int, int], None] | None = None, guide: ImageInput = None,
            mask: ImageInput = None, depth: int = default("output_depth"),
            stored: StoredFrames | None = None, **options) -> Iterator[Frame]:
    """A zoom sequence: yields `frames` frames, each as soon as it is made.

    `image`, `guide`, `mask`, `seed` and the `DreamOptions` keywords are `cnnvis.dream`'s;
    the `AnimationOptions` keywords (`frames`, `zoom`, `rotate`, `pan` as 'DX,DY',
    `frame_steps`) move the camera. Callback reports carry their frame's number.
    `depth` (8 or 16) is the depth the frames are stored at; `stored(number)` gives the
    pixels of a frame made before (to resume), or None.
    """
    check_model(model)
    photo = None if image is None else as_photo(image)
    plan = plan_sequence(options, photo_size=None if photo is None else photo.shape[:2],
                         input_size=model.input_size, device=model.device, seed=seed,
                         guide=guide, mask=mask, depth=depth)
    return zoom_frames(plan, model, photo, callback=callback, progress=progress, stored=stored)


def zoom_frames(plan: SequencePlan, model: VisModel, photo: np.ndarray | None, *,
                callback: Callable[[Report], None] | None = None,
                progress: Callable[[int, int], None] | None = None,
                stored: StoredFrames | None = None) -> Iterator[Frame]:
    """`animate` of a planned sequence (`plan_sequence`) from `photo` (uint8 RGB or None)."""
    pan = parse_pan(plan.animation.pan)
    maker = _FrameMaker(plan, model, callback, progress, stored)
    return _zoom(maker, photo, pan)


def _zoom(maker: _FrameMaker, photo: np.ndarray | None,
          pan: tuple[float, float]) -> Iterator[Frame]:
    plan = maker.plan
    animation = plan.animation
    previous = maker.make(1, photo, later=False)
    yield previous
    first_colour = stored_levels(previous.rgb, plan.depth).mean((0, 1))
    for number in range(2, animation.frames + 1):
        moved = camera_move(stored_levels(previous.rgb, plan.depth), animation.zoom,
                            animation.rotate, pan)
        if animation.colour_hold:   # the mean colour drifts back towards frame 1's
            moved += animation.colour_hold * (first_colour - moved.mean((0, 1)))
        photo = np.rint(np.clip(moved, 0, 255)).astype(np.uint8)
        previous = maker.make(number, photo, later=True)
        yield previous


def dream_video(video_frames: Iterable[tuple[int, np.ndarray]], model: VisModel, *,
                seed: int | None = None, callback: Callable[[Report], None] | None = None,
                progress: Callable[[int, int], None] | None = None, guide: ImageInput = None,
                mask: ImageInput = None, depth: int = default("output_depth"),
                stored: StoredFrames | None = None, **options) -> Iterator[Frame]:
    """A dreamed video: yields one frame per (number, uint8 RGB frame) of `video_frames`, each as
    soon as it is made, and reads the next input frame only then.

    Keywords as `animate`'s, with `blend` and `flow` ('dis' or 'none') of the
    `AnimationOptions` instead of the camera's. Each frame is dreamed at its own size,
    or at `final_size`.
    """
    check_model(model)
    if options.get("chunk_frames") is not None:
        raise TypeError("chunk_frames cuts a video into chunks: cnnvis.dream_video_chunks "
                        "makes it")
    planned = plan_video(video_frames, options, input_size=model.input_size,
                         device=model.device, seed=seed, guide=guide, mask=mask, depth=depth)
    if planned is None:
        return iter(())
    plan, video_frames = planned
    return video_dream_frames(plan, model, video_frames, callback=callback, progress=progress,
                              stored=stored)


def plan_video(video_frames: Iterable[tuple[int, np.ndarray]], options: dict, *,
               input_size: tuple[int, int], device: torch.device, seed: int | None,
               guide: ImageInput, mask: ImageInput, depth: int
               ) -> tuple[SequencePlan, Iterator[tuple[int, np.ndarray]]] | None:
    """`plan_sequence` for a video of its first frame's size, and the video's frames, that
    one included (None: the video has no frames)."""
    video_frames = iter(video_frames)
    first = next(video_frames, None)
    if first is None:
        return None
    plan = plan_sequence(options, photo_size=as_photo(first[1]).shape[:2], input_size=input_size,
                         device=device, seed=seed, guide=guide, mask=mask, depth=depth)
    return plan, itertools.chain([first], video_frames)


def video_dream_frames(plan: SequencePlan, model: VisModel,
                       video_frames: Iterable[tuple[int, np.ndarray]], *,
                       callback: Callable[[Report], None] | None = None,
                       progress: Callable[[int, int], None] | None = None,
                       stored: StoredFrames | None = None) -> Iterator[Frame]:
    """`dream_video` of a planned sequence (`plan_sequence`)."""
    maker = _FrameMaker(plan, model, callback, progress, stored)
    return _video(maker, video_frames)


def _video(maker: _FrameMaker, video_frames: Iterable[tuple[int, np.ndarray]]) -> Iterator[Frame]:
    plan, model = maker.plan, maker.model
    animation, depth = plan.animation, plan.depth
    carry = animation.flow != "none" and animation.blend > 0
    previous = None   # (input frame at the final size, output frame) of the frame before
    for number, photo in video_frames:
        if previous is None:
            frame = maker.make(number, as_photo(photo), later=False)
            size = frame.rgb.shape[:2]
        else:
            photo = resize_rgb(as_photo(photo), size)
            # A new estimator for each frame: DIS keeps state from one call to the next on
            # frames under 32 pixels high, and a frame's dream depends only on the one before.
            carried = carry and (lambda: _carried_start(
                photo, *previous, animation, flow_estimator(), depth, model.mean_bgr))
            frame = maker.make(number, photo, later=True, start=carried or Start)
        if frame.rgb.shape[:2] != tuple(size):
            raise UserError(f"frame {number} is {frame.rgb.shape[1]}x{frame.rgb.shape[0]} and "
                            f"frame 1 of the run {size[1]}x{size[0]}: the stored frames are not "
                            "this run's; make them anew (without --resume)")
        previous = (resize_rgb(photo, size), frame.rgb)
        yield frame


def _carried_start(photo: np.ndarray, previous_photo: np.ndarray, previous_rgb: np.ndarray,
                   animation: AnimationOptions, estimator, depth: int,
                   mean_bgr: tuple[float, float, float]) -> Start:
    """The current frame plus the previous frame's dream carried along the flow (`blend`
    times it; whole with --coherence), and with --coherence the steps damped where the
    carried dream is seen."""
    dream = stored_levels(previous_rgb, depth) - previous_photo
    # With --coherence the dream is carried frame after frame: bicubic, which blurs it less.
    carried, visible = carry_along_flow(dream, grey(previous_photo), grey(photo), estimator,
                                        cv2.INTER_CUBIC if animation.coherence else cv2.INTER_LINEAR)
    if animation.coherence == 0:
        return Start(levels_to_image(photo.astype(np.float32) + animation.blend * carried,
                                     mean_bgr))
    scale = np.where(visible, 1 - animation.coherence, 1).astype(np.float32)
    start = photo.astype(np.float32) + carried
    return Start(levels_to_image(start, mean_bgr), torch.from_numpy(scale),
                 np.rint(np.clip(start, 0, 255)).astype(np.uint8))


def stored_levels(rgb: np.ndarray, depth: int) -> np.ndarray:
    """A stored frame (uint8 or uint16 RGB at `depth` bits) as float32 in 0..255 units."""
    return rgb.astype(np.float32) * (255.0 / MAX_LEVEL[depth])
