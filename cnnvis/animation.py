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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cnnvis.api import (ImageInput, build_objective, check_combinations, grey_mask, new_seed,
                        plan_sizes, render_checked)
from cnnvis.errors import UserError
from cnnvis.imageio import as_photo
from cnnvis.model import VisModel
from cnnvis.motion import camera_move, carry_along_flow, flow_estimator, grey
from cnnvis.optimizer import Report
from cnnvis.pixels import MAX_LEVEL, Picture, levels_to_image, resize_rgb
from cnnvis.settings import AnimationOptions, DreamOptions, check_seed, options_from_keywords

# A frame's stored pixels when it was made before (uint8 or uint16 RGB), else None.
StoredFrames = Callable[[int], "np.ndarray | None"]


@dataclass(frozen=True)
class Frame:
    """One finished frame: its number (from 1; a video's own frame number), its pixels as
    stored, and the picture when it was dreamed now (None when it was stored before)."""

    number: int
    rgb: np.ndarray              # (H, W, 3), uint8 or uint16 (depth 16)
    picture: Picture | None


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


class _FrameMaker:
    """What every frame of one sequence shares: the model, the objective (built once), the
    options of frame 1 and of the later frames, the seed, the mask and the callbacks."""

    def __init__(self, model: VisModel, options: dict, seed: int | None, guide: ImageInput,
                 mask: ImageInput, callback, progress, depth: int, stored: StoredFrames | None,
                 has_photo: bool):
        self.first, self.animation = options_from_keywords(options, DreamOptions, AnimationOptions)
        seed = check_seed(seed)
        self.seed = new_seed() if seed is None else seed
        if depth not in MAX_LEVEL:
            raise ValueError(f"depth must be 8 or 16, not {depth}")
        self.depth = depth
        self.model = model
        self.guide_rgb = None if guide is None else as_photo(guide, "--guide_image")
        self.mask_grey = None if mask is None else grey_mask(mask)
        self.callback, self.progress = callback, progress
        self.stored = stored or (lambda number: None)
        # Later frames: one size, the final one (their photo already has it).
        self.later = dataclasses.replace(
            self.first, initial_size=None, final_size=None, num_sizes=1,
            num_steps=self.animation.frame_steps or self.first.num_steps)
        # A later frame's photo is the frame before it.
        check_combinations(self.first, has_photo or self.animation.frames > 1,
                           self.guide_rgb is not None)
        self.objective = None

    def make(self, number: int, photo: np.ndarray | None, later: bool,
             start: Callable[[], torch.Tensor | None] = lambda: None) -> Frame:
        """Frame `number`: the stored one, or dreamed now from `photo` (and `start()`)."""
        rgb = self.stored(number)
        if rgb is not None:
            return Frame(number, rgb, None)
        if self.objective is None:
            self.objective = build_objective(self.model, self.first, self.guide_rgb)
        callback = self.callback and (
            lambda report: self.callback(dataclasses.replace(report, frame=number)))
        picture = render_checked(photo, self.model, self.later if later else self.first,
                                 self.seed + number - 1,
                                 mask_grey=self.mask_grey, objective=self.objective, start=start(),
                                 callback=callback, progress=self.progress)
        return Frame(number, picture.rgb(self.depth), picture)

    def final_size(self, photo_size: tuple[int, int] | None) -> tuple[int, int]:
        return plan_sizes(self.first, photo_size, self.model.input_size)[-1]


def animate(image: ImageInput, model: VisModel, *, seed: int | None = None,
            callback: Callable[[Report], None] | None = None,
            progress: Callable[[int, int], None] | None = None, guide: ImageInput = None,
            mask: ImageInput = None, depth: int = 8, stored: StoredFrames | None = None,
            **options) -> Iterator[Frame]:
    """A zoom sequence: yields `frames` frames, each as soon as it is made.

    `image`, `guide`, `mask`, `seed` and the `DreamOptions` keywords are `cnnvis.dream`'s;
    the `AnimationOptions` keywords (`frames`, `zoom`, `rotate`, `pan` as 'DX,DY',
    `frame_steps`) move the camera. Callback reports carry their frame's number.
    `depth` (8 or 16) is the depth the frames are stored at; `stored(number)` gives the
    pixels of a frame made before (to resume), or None.
    """
    maker = _FrameMaker(model, options, seed, guide, mask, callback, progress, depth, stored,
                        has_photo=image is not None)
    animation = maker.animation
    pan = parse_pan(animation.pan)
    photo = None if image is None else as_photo(image)
    previous = maker.make(1, photo, later=False)
    yield previous
    for number in range(2, animation.frames + 1):
        moved = camera_move(stored_levels(previous.rgb, depth), animation.zoom, animation.rotate,
                            pan)
        photo = np.rint(np.clip(moved, 0, 255)).astype(np.uint8)
        previous = maker.make(number, photo, later=True)
        yield previous


def dream_video(video_frames: Iterable[tuple[int, np.ndarray]], model: VisModel, *,
                seed: int | None = None, callback: Callable[[Report], None] | None = None,
                progress: Callable[[int, int], None] | None = None, guide: ImageInput = None,
                mask: ImageInput = None, depth: int = 8, stored: StoredFrames | None = None,
                **options) -> Iterator[Frame]:
    """A dreamed video: yields one frame per (number, uint8 RGB frame) of `video_frames`, each as
    soon as it is made, and reads the next input frame only then.

    Keywords as `animate`'s, with `blend` and `flow` ('dis' or 'none') of the
    `AnimationOptions` instead of the camera's. Each frame is dreamed at its own size,
    or at `final_size`.
    """
    maker = _FrameMaker(model, options, seed, guide, mask, callback, progress, depth, stored,
                        has_photo=True)
    animation = maker.animation
    estimator = flow_estimator() if animation.flow != "none" and animation.blend > 0 else None
    previous = None   # (input frame at the final size, output frame) of the frame before
    for number, photo in video_frames:
        if previous is None:
            frame = maker.make(number, as_photo(photo), later=False)
            size = frame.rgb.shape[:2]
        else:
            photo = resize_rgb(as_photo(photo), size)
            carried = estimator and (lambda: _carried_start(
                photo, *previous, animation.blend, estimator, depth, model.mean_bgr))
            frame = maker.make(number, photo, later=True, start=carried or (lambda: None))
        if frame.rgb.shape[:2] != tuple(size):
            raise UserError(f"frame {number} is {frame.rgb.shape[1]}x{frame.rgb.shape[0]} and "
                            f"frame 1 of the run {size[1]}x{size[0]}: the stored frames are not "
                            "this run's; make them anew (without --resume)")
        previous = (resize_rgb(photo, size), frame.rgb)
        yield frame


def _carried_start(photo: np.ndarray, previous_photo: np.ndarray, previous_rgb: np.ndarray,
                   blend: float, estimator, depth: int,
                   mean_bgr: tuple[float, float, float]) -> torch.Tensor:
    """The current frame plus `blend` times the previous frame's dream carried along the
    flow, as a cnn-vis image (1, 3, H, W)."""
    dream = stored_levels(previous_rgb, depth) - previous_photo
    carried = carry_along_flow(dream, grey(previous_photo), grey(photo), estimator)
    return levels_to_image(photo.astype(np.float32) + blend * carried, mean_bgr)


def stored_levels(rgb: np.ndarray, depth: int) -> np.ndarray:
    """A stored frame (uint8 or uint16 RGB at `depth` bits) as float32 in 0..255 units."""
    return rgb.astype(np.float32) * (255.0 / MAX_LEVEL[depth])
