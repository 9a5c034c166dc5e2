"""Moving pictures between frames: the zoom sequence's camera move and a dream carried along
a video's motion by optical flow, on float32 (H, W, 3) arrays; and a video's frames turned
upright.

OpenCV does the resampling and the flow (DIS: Kroeger et al., "Fast Optical Flow using
Dense Inverse Search", ECCV 2016). Pixels that come in from outside the frame are
reflected (OpenCV's BORDER_REFLECT_101, which does not repeat the edge pixel).
"""
from __future__ import annotations

import cv2
import numpy as np


def camera_move(image: np.ndarray, zoom: float, rotate: float,
                pan: tuple[float, float]) -> np.ndarray:
    """`image` (H, W, C) scaled by `zoom` and rotated by `rotate` degrees (anticlockwise)
    about its centre, then moved by pan = (dx, dy) pixels (right, down); bicubic."""
    height, width = image.shape[:2]
    centre = ((width - 1) / 2, (height - 1) / 2)
    matrix = cv2.getRotationMatrix2D(centre, rotate, zoom)   # (2, 3): output <- input
    matrix[:, 2] += pan
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT_101)


def flow_estimator() -> cv2.DISOpticalFlow:
    """OpenCV's DIS optical flow with its "medium" preset: robust to the large, textured
    motions of real footage, and small beside a frame's dreaming (both flows of a 640x360
    frame in about 0.1 s on a 2-core CPU)."""
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def carry_along_flow(values: np.ndarray, previous_grey: np.ndarray, current_grey: np.ndarray,
                     estimator: cv2.DISOpticalFlow,
                     interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
    """`values` (H, W, C) of the previous frame moved to where the current frame has them,
    with zero where the current frame shows something the previous one did not; and where
    it shows what the previous one did (bool, H x W).

    The flow from the current frame back to the previous one says where each pixel
    comes from. A pixel is occluded (it gets zero) when its source lies outside the
    frame, or when the forward flow from that source does not lead back to it
    (Sundaram, Brox and Keutzer's consistency check, ECCV 2010).
    """
    backward = estimator.calc(current_grey, previous_grey, None)   # (H, W, 2): current -> previous
    forward = estimator.calc(previous_grey, current_grey, None)    # previous -> current
    height, width = current_grey.shape
    columns, rows = np.meshgrid(np.arange(width, dtype=np.float32),
                                np.arange(height, dtype=np.float32))
    source_x, source_y = columns + backward[..., 0], rows + backward[..., 1]
    carried = cv2.remap(values, source_x, source_y, interpolation,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    forward_at_source = cv2.remap(forward, source_x, source_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    round_trip = np.sum((backward + forward_at_source) ** 2, axis=-1)
    tolerance = 0.01 * (np.sum(backward ** 2, axis=-1) + np.sum(forward_at_source ** 2, axis=-1)) + 0.5
    inside = (source_x >= 0) & (source_x <= width - 1) & (source_y >= 0) & (source_y <= height - 1)
    visible = inside & (round_trip <= tolerance)
    return carried * visible[..., None], visible


def grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) of uint8 RGB (H, W, 3), what the flow is computed on."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def upright(rgb: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """A decoded frame as a player shows it: turned a quarter turn at a time and mirrored as
    its display matrix says, which maps a pixel (x, y) to (a x + c y, b x + d y) (another
    angle is taken as the nearest quarter turn)."""
    if matrix is None:
        return rgb
    a, b, _, c, d = (int(value) for value in matrix[:5])
    if abs(a) + abs(d) >= abs(b) + abs(c):   # x stays x: at most mirrored
        out = rgb[:, ::-1] if a < 0 else rgb
        out = out[::-1] if d < 0 else out
    else:                                    # x becomes y: a quarter turn
        out = rgb.transpose(1, 0, 2)
        out = out[::-1] if b < 0 else out
        out = out[:, ::-1] if c < 0 else out
    return out if out is rgb else np.ascontiguousarray(out)
