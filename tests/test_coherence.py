"""Dreamed video's coherence, measured on clips of known motion (cnnvis.coherence): the
default --coherence takes away most of the flicker of frames dreamed on their own, keeps
their strength, dreams uncovered background at once and moves the dream with an object."""
from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
import skimage.data

import cnnvis
from cnnvis.coherence import (coherence, known_motion_clip, seam_ratio, strength, through_codec,
                              warp_error)

SIZE = (224, 288)
FRAMES = 8
# The dream recipe's strengths at one size, 10 steps a frame.
OPTIONS = dict(target_layer="stage5/block3", num_steps=10, learning_rate=10.0, p_reg=0.0026,
               tv_reg=0.0026, alpha=2.0, calibrate=True, jitter=8, output_iter=1000)


@functools.cache
def clip(kind: str):
    patch = cv2.resize(skimage.data.chelsea()[50:250, 150:350], (80, 80))
    made = known_motion_clip(skimage.data.astronaut(), kind, frames=FRAMES, size=SIZE, patch=patch)
    return made, through_codec(made.frames)


@functools.cache
def lite0():
    return cnnvis.load_model("efficientnet_lite0", device="cpu")


@functools.cache
def dreamed(kind: str, flow: str) -> list[np.ndarray]:
    _, inputs = clip(kind)
    return [frame.rgb for frame in cnnvis.dream_video(enumerate(inputs, 1), lite0(), seed=0,
                                                      flow=flow, **OPTIONS)]


def test_the_clips_move_as_they_say():
    made, inputs = clip("pan")
    # Aligned by the known motion, frames differ by their noise only (3 grey levels of
    # Gaussian noise each: mean |difference| about 3.4); not aligned, by much more.
    assert 2.5 < warp_error(made.frames, made) < 4.5
    assert np.abs(made.frames[1].astype(float) - made.frames[0]).mean() > 10
    assert warp_error(inputs, made) < 2   # H.264 keeps less of the noise
    # A dream that moves exactly with the picture does not flicker.
    dream = np.random.default_rng(0).normal(0, 20, SIZE + (3,)).astype(np.float32)
    outputs = [inputs[0] + dream]
    for map_x, map_y in made.sources:
        dream = cv2.remap(dream, map_x, map_y, cv2.INTER_LINEAR)
        outputs.append(inputs[len(outputs)] + dream)
    still = [np.clip(frame, 0, 255) for frame in outputs]
    assert abs(coherence(still, inputs, made).flicker) < 0.15


@pytest.mark.parametrize("kind", ["pan", "zoom", "rotate", "object"])
def test_default_video_flickers_a_third_as_much_as_frames_on_their_own(kind):
    made, inputs = clip(kind)
    alone = coherence(dreamed(kind, "none"), inputs, made)
    carried = coherence(dreamed(kind, "dis"), inputs, made)
    assert carried.flicker <= 0.35 * alone.flicker, (carried, alone)
    assert carried.strength >= 0.9 * alone.strength, (carried, alone)


def test_uncovered_background_dreams_at_once_and_the_dream_moves_with_the_object():
    made, inputs = clip("object")
    outputs = dreamed("object", "dis")
    rest = strength(outputs, inputs)
    assert strength(outputs, inputs, made, "uncovered 3 frames before") >= 0.7 * rest
    on_object = coherence(outputs, inputs, made, "object").flicker
    assert on_object <= 0.35 * coherence(dreamed("object", "none"), inputs, made, "object").flicker


def test_a_seam_between_chunks_flickers_about_as_little_as_the_frames_inside_them():
    """26 frames of the pan in chunks of 16 with the default 10 warm-up frames: chunk 2's
    warm-up (frames 7 to 16) cross-fades into it, and those frames with chunk 2's
    first kept one change from frame to frame within 1.2x as much as the other frames
    (where chunk 2 started cold, without the cross-fade: 6.1x); the dream keeps most of its
    strength through the cross-fade."""
    made = known_motion_clip(skimage.data.astronaut(), "pan", frames=26, size=(224, 256))
    inputs = through_codec(made.frames)
    outputs = [frame.rgb for frame in cnnvis.frames_in_order(cnnvis.dream_video_chunks(
        enumerate(inputs, 1), lite0(), seed=0, chunk_frames=16, **OPTIONS))]
    assert len(outputs) == 26
    assert seam_ratio(outputs, made, range(6, 17)) <= 1.2
    crossfaded = strength(outputs[6:16], inputs[6:16])
    assert crossfaded >= 0.8 * strength(outputs[16:], inputs[16:])
