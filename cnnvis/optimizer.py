"""The optimisation loop: sizes, then steps, then checkerboard groups, then regions.

Everything here follows docs/algorithm.md exactly (update order, RMSProp per region,
schedules, resets between sizes). The loop does no I/O and no display: progress and
diagnostics go to two callbacks, one after every step and one every `output_iter` steps.

Ready for a GPU: the loop reads values back from the device (a wait for all the work
queued) only through `read_to_host`, once on a report step (the step's diagnostics, summed
on the device, and the finiteness flag together), and otherwise only where the finiteness
watch needs its flag (`cnnvis.finiteness`). The windows' index tensors are built once per
size, not at every step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnvis.errors import NonFiniteImage
from cnnvis.finiteness import LastFinite
from cnnvis.model import VisModel
from cnnvis.objectives import Objective
from cnnvis.pixels import Picture, resize_grey, resize_rgb, rgb_to_image
from cnnvis.regularizers import p_norm, total_variation
from cnnvis.settings import DreamOptions
from cnnvis.tiling import (Region, checkerboard_groups, coverage_counts,
                            reachable_positions, shifted_positions)

RMSPROP_EPSILON = 1e-8


def read_to_host(values: torch.Tensor) -> list[float] | float | int:
    """The loop's one way of reading values back from the device (`tolist`)."""
    return values.tolist()


class StepStats:
    """Diagnostics of one step, summed over its regions (gathered only on report steps).

    The sums stay on the device as float64 scalars, added one term at a time in the order
    the regions come: to the bit the sums of Python floats that were read one by one.
    `totals` stacks them, and the step sizes' mean and median, for a single read.
    """

    LOSSES = ("objective", "p", "tv")
    GRADIENTS = ("cnn", "p", "p_aux", "tv")

    def __init__(self, device: torch.device):
        zero = torch.zeros((), dtype=torch.float64, device=device)
        self.losses = {name: zero.clone() for name in self.LOSSES}
        self.gradient_sums = {name: zero.clone() for name in self.GRADIENTS}
        self.regions = 0
        self.step_sizes: list[torch.Tensor] = []

    def add_loss(self, name: str, value: torch.Tensor) -> None:
        self.losses[name] += value.double()

    def add(self, name: str, gradient: torch.Tensor) -> None:
        self.gradient_sums[name] += gradient.abs().mean().double()

    def totals(self) -> torch.Tensor:
        """(9,) float64: the losses, the gradient sums, then the step sizes' mean and median."""
        steps = torch.cat(self.step_sizes)
        return torch.stack([*self.losses.values(), *self.gradient_sums.values(),
                            steps.mean().double(), steps.median().double()])


@dataclass(frozen=True)
class Report:
    """What the callback gets every `output_iter` steps.

    `picture` holds the image being optimised, not a copy: take `picture.pil()` (or
    clone `picture.image`) to keep it beyond the callback.
    """

    size_index: int            # from 1
    num_sizes: int
    step: int                  # from 1 within the size
    picture: Picture
    objective: float
    p_loss: float
    tv_loss: float
    mean_gradients: dict[str, float]   # mean |gradient| of each term, averaged over regions
    step_mean: float
    step_median: float
    frame: int | None = None           # the frame's number in a zoom sequence or video


class Dream:
    """One run of the optimiser. `image` is always the latest (finite) image, so a caller
    can save it after an interruption.

    `objective` names the blobs to amplify (resolved by the caller, `cnnvis.api`);
    `progress(size_index, step)` is called after every step, `callback(report)` every
    `options.output_iter` steps. `seed` draws the jitter's offsets.
    """

    def __init__(self, model: VisModel, options: DreamOptions, sizes: list[tuple[int, int]],
                 objective: Objective, callback: Callable[[Report], None] | None = None,
                 progress: Callable[[int, int], None] | None = None, seed: int = 0):
        self.model = model
        self.options = options
        self.sizes = sizes
        self.objective = objective
        self.callback = callback
        self.progress = progress
        self.jitter_generator = torch.Generator().manual_seed(seed)
        self.image: torch.Tensor | None = None

    def run(self, initial: torch.Tensor, anchor_rgb: np.ndarray | None,
            mask_grey: np.ndarray | None = None, in_place: bool = False,
            step_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Optimise from `initial` (1, 3, H, W) at the first size; `anchor_rgb` is the user's
        photo (uint8 RGB) that the main p-norm pulls towards, or None (pull towards 0).
        `mask_grey` (uint8, H x W) scales each pixel's step by its grey level / 255; where
        it is 0 the pixels keep their start (the photo, or the noise resized). With
        `in_place`, `initial` itself becomes the image (no copy: one image less in memory);
        otherwise the caller's stays as it was. `step_scale` (H, W), for a run of one size
        that continues a dream (a video's later frames, --coherence), multiplies each
        pixel's step, and the RMSProp caches start from the first squared gradient instead
        of 0 (no first steps 1/sqrt(1 - decay_rate) times larger than the rest)."""
        self.image = initial.to(self.model.device, copy=not in_place)
        start = self.image.clone() if mask_grey is not None and anchor_rgb is None else None
        for size_index, size in enumerate(self.sizes, start=1):
            if size_index > 1:
                # Resize in float with this exact resampler (reproducibility across implementations).
                self.image = F.interpolate(self.image, size=size, mode="bicubic", align_corners=False)
            anchor = None if anchor_rgb is None else rgb_to_image(
                resize_rgb(anchor_rgb, size), self.model.mean_bgr).to(self.model.device)
            mask = None
            if mask_grey is not None:
                mask = torch.from_numpy(resize_grey(mask_grey, size) / 255.0).to(self.image)  # (H, W)
                if start is not None and size_index > 1:
                    start = F.interpolate(start, size=size, mode="bicubic", align_corners=False)
                self.image = torch.where(mask == 0, anchor if start is None else start, self.image)
            if step_scale is not None:
                mask = step_scale.to(self.image) if mask is None else mask * step_scale.to(mask)
            self._optimise_size(size_index, anchor, mask, continued=step_scale is not None)
        return self.image

    def _optimise_size(self, size_index: int, anchor: torch.Tensor | None,
                       mask: torch.Tensor | None, continued: bool = False) -> None:
        s = self.options
        height, width = self.image.shape[-2:]
        tile = self.model.input_size
        groups = checkerboard_groups(height, width, *tile)
        rates = None
        if s.use_pixel_learning_rates:
            counts = coverage_counts(height, width, *tile)
            rates = torch.from_numpy(1.0 / counts).to(self.image)   # (H, W)
        # RMSProp state, learning rate and TV strength start afresh at every size.
        caches = RMSPropCaches(height, width, tile, s.jitter, self.image.device)
        windows = RegionWindows(height, width, caches, self.image.device)
        learning_rate, tv_reg = s.learning_rate, s.tv_reg
        watch = LastFinite(self.image)
        for step in range(1, s.num_steps + 1):
            stats = (StepStats(self.image.device) if self.callback and step % s.output_iter == 0
                     else None)
            watch.before_step(self.image)
            shift = self._jitter_shift()
            for group in groups:
                self._update_group(group, [windows.at(region, shift) for region in group],
                                   anchor, caches, rates, mask, learning_rate, tv_reg, stats,
                                   warm=continued and step == 1)
            first_bad = watch.after_step(self.image, step)   # 0 while finite; not read yet
            report = None
            if stats is not None:   # the step's one read: its diagnostics and the flag together
                values = read_to_host(torch.cat([stats.totals(), first_bad.double().view(1)]))
                bad_step = int(values.pop())
                report = self._report(size_index, step, stats, values)
            elif not watch.on_device or step % s.output_iter == 0 or step == s.num_steps:
                bad_step = read_to_host(first_bad)
            else:
                bad_step = 0
            if bad_step:
                self.image = watch.kept
                raise NonFiniteImage(f"the image became non-finite at step {bad_step} of size "
                                     f"{size_index}")
            if step % s.tv_reg_step_iter == 0:
                tv_reg += s.tv_reg_step
            if step % s.learning_rate_decay_iter == 0:
                learning_rate *= s.learning_rate_decay_factor
            if self.progress is not None:
                self.progress(size_index, step)
            if report is not None and self.callback is not None:
                self.callback(report)

    def _jitter_shift(self) -> tuple[int, int]:
        """This step's roll (dy, dx) of the image, each uniform in [-jitter, jitter]."""
        if self.options.jitter == 0:
            return 0, 0
        dy, dx = torch.randint(-self.options.jitter, self.options.jitter + 1, (2,),
                               generator=self.jitter_generator).tolist()
        return dy, dx

    def _update_group(self, group: list[Region], windows: list[tuple[Window, Window]],
                      anchor, caches, rates, mask, learning_rate: float, tv_reg: float,
                      stats: StepStats | None, warm: bool = False) -> None:
        """CNN gradients of all regions on the image as it is now, then each region's update
        in order. The regions lie on the image rolled by this step's shift; it is read where
        they land (each region's `windows`: in the image, in its cache layer) instead of
        being rolled."""
        cnn_gradients = self._cnn_gradients([window for window, _ in windows], stats)
        for region, (window, cache_window), cnn_gradient in zip(group, windows, cnn_gradients):
            pixels = window.read(self.image[0])                          # (3, h, w)
            gradient = cnn_gradient + self._regulariser_gradient(
                pixels, None if anchor is None else window.read(anchor[0]), tv_reg, stats)
            cache = cache_window.read(caches.layers[region.parity])      # (3, h, w)
            if warm:
                cache.copy_(gradient * gradient)
            else:
                cache.mul_(self.options.decay_rate).addcmul_(gradient, gradient,
                                                              value=1 - self.options.decay_rate)
            cache_window.write_back(caches.layers[region.parity], cache)
            step = -learning_rate * gradient / torch.sqrt(cache + RMSPROP_EPSILON)
            if rates is not None:
                step = step * rates[region.slices]
            if mask is not None:
                step = step * window.read(mask)
            pixels += step
            window.write_back(self.image[0], pixels)
            if stats is not None:
                stats.add("cnn", cnn_gradient)
                stats.regions += 1
                stats.step_sizes.append(step.abs().flatten())

    def _cnn_gradients(self, windows: list[Window], stats: StepStats | None) -> list[torch.Tensor]:
        gradients = []
        for start in range(0, len(windows), self.options.batch_size):
            batch = windows[start:start + self.options.batch_size]
            tiles = torch.stack([window.read(self.image[0]) for window in batch])  # (B, 3, h, w)
            loss, gradient = self.model.objective_gradient(tiles, self.objective)
            if self.options.calibrate:   # every tile pulls with mean strength 1 (--calibrate)
                gradient = gradient / gradient.abs().mean((1, 2, 3), keepdim=True).clamp_min(1e-30)
            gradients.extend(gradient.unbind(0))
            if stats is not None:
                stats.add_loss("objective", -loss)
        return gradients

    def _regulariser_gradient(self, pixels: torch.Tensor, anchor: torch.Tensor | None,
                              tv_reg: float, stats: StepStats | None) -> torch.Tensor:
        """p_reg*dP(x - x0) + p_reg_aux*dP(x) + tv_reg*dTV(x/scale)/scale; zero-weight terms are skipped."""
        s = self.options
        terms = [
            ("p", s.p_reg, lambda: p_norm(pixels if anchor is None else pixels - anchor,
                                          s.alpha, s.p_scale)),
            ("p_aux", s.p_reg_aux, lambda: p_norm(pixels, s.alpha_aux, s.p_scale_aux)),
            ("tv", tv_reg, lambda: total_variation(pixels, s.beta, s.tv_grad_operator,
                                                   s.tv_reg_scale)),
        ]
        total = torch.zeros_like(pixels)
        for name, weight, regulariser in terms:
            if weight == 0:
                continue
            value, gradient = regulariser()
            gradient = weight * gradient
            total += gradient
            if stats is not None:
                stats.add_loss("tv" if name == "tv" else "p", value.double() * weight)
                stats.add(name, gradient)
        return total

    def _report(self, size_index: int, step: int, stats: StepStats,
                totals: list[float]) -> Report:
        """The report of `stats`, whose `totals` have been read."""
        objective, p_loss, tv_loss, *gradient_sums, step_mean, step_median = totals
        return Report(
            size_index=size_index, num_sizes=len(self.sizes), step=step,
            picture=Picture(self.image, self.model.mean_bgr, self.options.rescale_image),
            objective=objective, p_loss=p_loss, tv_loss=tv_loss,
            mean_gradients={name: total / stats.regions
                            for name, total in zip(StepStats.GRADIENTS, gradient_sums)},
            step_mean=step_mean, step_median=step_median)


@dataclass(frozen=True)
class Window:
    """Where one region's pixels lie in a tensor (..., H, W): two slices, read as a view that
    the update changes in place, or (where the jitter's roll wraps the region around the
    image's edge) two index tensors, read as a copy and written back."""

    rows: slice | torch.Tensor
    cols: slice | torch.Tensor

    @classmethod
    def of(cls, rows: AxisPositions, cols: AxisPositions) -> "Window":
        """The window of these positions: slices where both are consecutive."""
        if rows.slice is not None and cols.slice is not None:
            return cls(rows.slice, cols.slice)
        return cls(rows.tensor, cols.tensor)

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[self._index()]

    def write_back(self, tensor: torch.Tensor, values: torch.Tensor) -> None:
        """Store `values`, read from `tensor` and changed since (a view needs nothing)."""
        if not isinstance(self.rows, slice):
            tensor[self._index()] = values

    def _index(self) -> tuple:
        if isinstance(self.rows, slice):
            return ..., self.rows, self.cols
        return ..., self.rows[:, None], self.cols


class RMSPropCaches:
    """Each region's RMSProp cache: the running mean of its squared gradients.

    A cache lives in image coordinates, so that it moves with the pixels under --jitter, in
    the layer of its region's (row, col) parity: no two regions of a layer overlap. A layer
    holds only the rows and columns that a region of its parity reaches at some shift: the
    four layers together about one image in memory instead of four.
    """

    def __init__(self, height: int, width: int, tile: tuple[int, int], jitter: int,
                 device: torch.device):
        # For rows, then columns, and each parity: each position's index in a layer, or -1.
        self.positions = [[_compact_indices(reachable_positions(length, tile_length, parity,
                                                                jitter))
                           for parity in (0, 1)]
                          for length, tile_length in ((height, tile[0]), (width, tile[1]))]
        rows, cols = self.positions
        self.layers = [torch.zeros((3, int((r >= 0).sum()), int((c >= 0).sum())), device=device)
                       for r in rows for c in cols]   # in the order of Region.parity


class AxisPositions:
    """Positions along one axis: a slice where they are consecutive, and (made when first
    needed) the same positions as an index tensor on the device."""

    def __init__(self, positions: slice | np.ndarray, device: torch.device):
        self.slice = positions if isinstance(positions, slice) else None
        self._positions, self._device = positions, device
        self._tensor: torch.Tensor | None = None

    @property
    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            p = self._positions
            # non_blocking: a GPU copies the few indices without waiting for the work queued.
            self._tensor = (torch.arange(p.start, p.stop, device=self._device)
                            if isinstance(p, slice)
                            else torch.from_numpy(p).to(self._device, non_blocking=True))
        return self._tensor


class RegionWindows:
    """Each region's windows at a jitter shift: where it lies in the image, and in its layer
    of the RMSProp caches. Made once per size: each axis' positions at each shift (index
    tensors where they wrap around the image's edge) are kept once made, so that a step
    sends no indices to the device once its shift has come before."""

    def __init__(self, height: int, width: int, caches: RMSPropCaches, device: torch.device):
        self.lengths = (height, width)
        self.caches = caches
        self.device = device
        self._axes: dict[tuple[int, int, int, int, int], tuple[AxisPositions, AxisPositions]] = {}

    def at(self, region: Region, shift: tuple[int, int]) -> tuple[Window, Window]:
        """(image window, cache window) of `region` on the image rolled by `shift`."""
        rows = self._axis(0, region.y, region.height, shift[0], region.row % 2)
        cols = self._axis(1, region.x, region.width, shift[1], region.col % 2)
        return Window.of(rows[0], cols[0]), Window.of(rows[1], cols[1])

    def _axis(self, axis: int, start: int, length: int, shift: int,
              parity: int) -> tuple[AxisPositions, AxisPositions]:
        key = (axis, start, length, shift, parity)
        if key not in self._axes:
            positions = shifted_positions(start, length, shift, self.lengths[axis])
            in_layer = _in_layer(positions, self.caches.positions[axis][parity])
            self._axes[key] = (AxisPositions(positions, self.device),
                               AxisPositions(in_layer, self.device))
        return self._axes[key]


def _compact_indices(reachable: np.ndarray) -> np.ndarray:
    return np.where(reachable, np.cumsum(reachable) - 1, -1)


def _in_layer(positions: slice | np.ndarray, layer_index: np.ndarray) -> slice | np.ndarray:
    """Image positions (consecutive when a slice, all reachable) as indices into a layer."""
    if isinstance(positions, slice):
        first = int(layer_index[positions.start])
        return slice(first, first + positions.stop - positions.start)
    return layer_index[positions]
