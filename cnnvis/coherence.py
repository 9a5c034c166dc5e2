"""Coherence of a dreamed video, measured on clips whose motion is known.

For a clip whose motion is known (where each pixel of frame t was in frame t - 1):

- warp error: mean |f_t(p) - f_{t-1}(source(p))| over the pixels that frame t - 1 shows too,
  away from the edges, in grey levels;
- strength: mean |out_t - in_t|, how much the dream changes the frames;
- flicker: (warp error of the output - warp error of the input clip) / strength: how much
  the dream itself changes from frame to frame, for each grey level of dream;
- seam ratio: the warp error of the frames where a video in chunks goes from one chunk to
  the next (its cross-fade) against that of the frames inside the chunks.

The clips (`known_motion_clip`) are made from a photo: a pan, a zoom, a rotation, or a
patch of another photo moving over a still one; each frame gets its own sensor noise, and
`through_codec` gives them the losses of a real video encoder (H.264).
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import av
import cv2
import numpy as np

CLIP_KINDS = ("pan", "zoom", "rotate", "object")
EDGE = 8   # pixels at each edge left out of the measures (what comes in from outside)


@dataclass(frozen=True)
class KnownMotionClip:
    """Frames (uint8 RGB) and, for each frame after the first, where its pixels come from in
    the frame before (x and y maps, float32) and which of them the frame before shows
    (`seen`). `regions`: named masks per frame, where a clip has them (the moving object,
    the background uncovered 3 frames before)."""

    frames: list[np.ndarray]
    sources: list[tuple[np.ndarray, np.ndarray]]
    seen: list[np.ndarray]
    regions: dict[str, list[np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class Coherence:
    flicker: float
    warp_error: float         # of the output
    input_warp_error: float   # of the clip itself
    strength: float


def known_motion_clip(photo: np.ndarray, kind: str, frames: int = 12,
                      size: tuple[int, int] = (240, 320), noise: float = 3.0,
                      patch: np.ndarray | None = None, seed: int = 0) -> KnownMotionClip:
    """A clip of `frames` frames of `size` (height, width) cut from `photo` (uint8 RGB, larger
    than `size`): `kind` "pan" (4 px a frame to the right), "zoom" (in, 2% a frame),
    "rotate" (1 degree a frame) or "object" (`patch`, 80x80, moving 6 px a frame to the right
    over the still photo). Each frame gets Gaussian noise of `noise` grey levels."""
    if kind not in CLIP_KINDS:
        raise ValueError(f"kind must be one of {CLIP_KINDS}, not {kind!r}")
    height, width = size
    rng = np.random.default_rng(seed)
    centre = np.array([photo.shape[1] / 2, photo.shape[0] / 2])

    def camera(t: int) -> np.ndarray:   # frame coordinates -> photo coordinates (3x3)
        offset = np.eye(3)
        offset[:2, 2] = centre - np.array([width / 2, height / 2])
        if kind == "pan":
            offset[0, 2] += 4 * t - 2 * frames
        move = cv2.getRotationMatrix2D((width / 2, height / 2), -1.0 * t if kind == "rotate" else 0,
                                       1 / 1.02 ** t if kind == "zoom" else 1.0)
        return offset @ np.vstack([move, [0, 0, 1]])

    columns, rows = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    points = np.stack([columns, rows, np.ones_like(columns)], axis=-1)
    clip_frames, sources, seen = [], [], []
    object_masks, uncovered = [], []
    for t in range(frames):
        frame = cv2.warpAffine(photo, camera(t)[:2], (width, height),
                               flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        if kind == "object":
            inside = _object_mask(t, size)
            left = 20 + 6 * t
            frame[inside] = patch[:, :min(80, width - left)].reshape(-1, 3)[:inside.sum()]
            object_masks.append(inside)
        frame += rng.normal(0, noise, frame.shape)
        clip_frames.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        if t == 0:
            continue
        source = points @ (np.linalg.inv(camera(t - 1)) @ camera(t)).T
        map_x, map_y = source[..., 0].astype(np.float32), source[..., 1].astype(np.float32)
        visible = (map_x >= EDGE) & (map_x <= width - 1 - EDGE) & (map_y >= EDGE) & (map_y <= height - 1 - EDGE)
        if kind == "object":
            on_object, before = object_masks[t], object_masks[t - 1]
            map_x = np.where(on_object, map_x - 6, map_x).astype(np.float32)
            visible &= np.where(on_object, True, ~before)   # the background it uncovers is new
            behind = _object_mask(t - 3, size) & ~on_object if t >= 3 else np.zeros_like(on_object)
            uncovered.append(behind & ~object_masks[t - 1] & ~object_masks[t - 2])
        sources.append((map_x, map_y))
        seen.append(visible)
    regions = {} if kind != "object" else {"object": object_masks[1:], "uncovered 3 frames before": uncovered}
    return KnownMotionClip(clip_frames, sources, seen, regions)


def _object_mask(t: int, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    mask = np.zeros(size, dtype=bool)
    top, left = (height - 80) // 2, 20 + 6 * t
    mask[top:top + 80, max(left, 0):max(min(left + 80, width), 0)] = True
    return mask


def through_codec(frames: list[np.ndarray], crf: int = 23) -> list[np.ndarray]:
    """`frames` encoded with H.264 (libx264, yuv420p, constant rate factor `crf`) and decoded."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "fast"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def warp_error(frames: list[np.ndarray], clip: KnownMotionClip,
               region: str | None = None) -> float:
    """Mean |f_t(p) - f_{t-1}(source(p))| over the pixels frame t - 1 shows (and `region`)."""
    sums, counts = zip(*_pair_errors(frames, clip, region))
    return sum(sums) / max(sum(counts), 1)


def frame_warp_errors(frames: list[np.ndarray], clip: KnownMotionClip) -> list[float]:
    """The warp error of each frame after the first against the one before it."""
    return [errors / max(count, 1) for errors, count in _pair_errors(frames, clip, None)]


def seam_ratio(frames: list[np.ndarray], clip: KnownMotionClip, seam: range,
               settled: int = 5) -> float:
    """The mean warp error of the frames of `seam` (indices from 0) against that of the other
    frames from `settled` on (those before still settle from frame 0's dream)."""
    errors = frame_warp_errors(frames, clip)   # errors[t - 1]: frame t against frame t - 1
    at_seam = [errors[t - 1] for t in seam]
    inside = [errors[t - 1] for t in range(settled, len(frames)) if t not in seam]
    return float(np.mean(at_seam) / np.mean(inside))


def _pair_errors(frames: list[np.ndarray], clip: KnownMotionClip,
                 region: str | None) -> Iterator[tuple[float, int]]:
    """(sum of |differences|, their count) of each frame after the first."""
    for t in range(1, len(frames)):
        map_x, map_y = clip.sources[t - 1]
        previous = cv2.remap(frames[t - 1].astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
        mask = _interior(clip.seen[t - 1], region and clip.regions[region][t - 1])
        yield (float(np.abs(frames[t].astype(np.float32) - previous)[mask].sum()),
               int(mask.sum()) * 3)


def strength(outputs: list[np.ndarray], inputs: list[np.ndarray], clip: KnownMotionClip | None = None,
             region: str | None = None) -> float:
    """Mean |out_t - in_t| in grey levels, away from the edges (over `region` of `clip`)."""
    total, count = 0.0, 0
    for t in range(len(outputs)):
        mask = np.ones(outputs[t].shape[:2], dtype=bool)
        if region is not None:
            if t == 0:
                continue
            mask = clip.regions[region][t - 1].copy()
        mask = _interior(mask, None)
        total += float(np.abs(outputs[t].astype(np.float32) - inputs[t])[mask].sum())
        count += int(mask.sum()) * 3
    return total / max(count, 1)


def coherence(outputs: list[np.ndarray], inputs: list[np.ndarray], clip: KnownMotionClip,
              region: str | None = None) -> Coherence:
    """The flicker of `outputs` dreamed on `inputs` (the clip's frames after the codec)."""
    output_error, input_error = warp_error(outputs, clip, region), warp_error(inputs, clip, region)
    dream = strength(outputs, inputs)
    return Coherence((output_error - input_error) / dream, output_error, input_error, dream)


def _interior(mask: np.ndarray, region: np.ndarray | None) -> np.ndarray:
    inner = np.zeros_like(mask)
    inner[EDGE:-EDGE, EDGE:-EDGE] = mask[EDGE:-EDGE, EDGE:-EDGE]
    return inner if region is None else inner & region
