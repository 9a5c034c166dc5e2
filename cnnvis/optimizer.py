"""The optimisation loop: sizes, then steps, then checkerboard groups, then regions.

Everything here follows ALGORITHM.md exactly (update order, RMSProp per region,
schedules, resets between sizes). The loop does no I/O and no display: progress and
diagnostics go to an `Observer` (see `cnnvis.report`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cnnvis.imageio import resize_rgb, rgb_to_image
from cnnvis.model import VisModel
from cnnvis.objectives import Objective, amplify_layer, amplify_neuron
from cnnvis.regularizers import p_norm, total_variation
from cnnvis.tiling import Region, checkerboard_groups, coverage_counts

RMSPROP_EPSILON = 1e-8


@dataclass(frozen=True)
class DreamSettings:
    """Every setting of the optimisation (the README's options, already validated)."""

    sizes: tuple[tuple[int, int], ...]
    image_type: str = "amplify_layer"          # or "amplify_neuron"
    target_layer: str = "inception_4d/3x3_reduce"
    target_neuron: int = 0
    num_steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1.0
    learning_rate_decay_iter: int = 100
    learning_rate_decay_factor: float = 1.0
    decay_rate: float = 0.95
    use_pixel_learning_rates: bool = False
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    grad_clip: float = 5.0
    alpha: float = 6.0
    p_reg: float = 1e-4
    p_scale: float = 1.0
    alpha_aux: float = 6.0
    p_reg_aux: float = 0.0
    p_scale_aux: float = 1.0
    beta: float = 2.0
    tv_reg: float = 0.5
    tv_reg_scale: float = 1.0
    tv_reg_step: float = 0.0
    tv_reg_step_iter: int = 50
    tv_grad_operator: str = "naive"
    output_iter: int = 50

    def objective(self) -> Objective:
        if self.image_type == "amplify_neuron":
            return amplify_neuron(self.target_neuron)
        return amplify_layer(self.l1_weight, self.l2_weight, self.grad_clip)


@dataclass
class StepStats:
    """Diagnostics of one step, summed over its regions (gathered only on report steps)."""

    losses: dict[str, float] = field(default_factory=lambda: {"objective": 0.0, "p": 0.0, "tv": 0.0})
    gradient_sums: dict[str, float] = field(default_factory=lambda: {
        "cnn": 0.0, "p": 0.0, "p_aux": 0.0, "tv": 0.0})
    regions: int = 0
    step_sizes: list[torch.Tensor] = field(default_factory=list)

    def add(self, name: str, gradient: torch.Tensor) -> None:
        self.gradient_sums[name] += float(gradient.abs().mean())


@dataclass(frozen=True)
class Report:
    """What an observer gets every `output_iter` steps."""

    size_index: int            # from 1
    num_sizes: int
    step: int                  # from 1 within the size
    image: torch.Tensor        # (1, 3, H, W), BGR minus the mean colour
    objective: float
    p_loss: float
    tv_loss: float
    mean_gradients: dict[str, float]   # mean |gradient| of each term, averaged over regions
    step_mean: float
    step_median: float


class Observer(Protocol):
    def step_done(self, size_index: int, step: int) -> None: ...
    def report(self, report: Report) -> None: ...


class NonFiniteError(Exception):
    """The image stopped being finite; `Dream.image` holds the last finite one."""

    def __init__(self, size_index: int, step: int):
        super().__init__(f"the image became non-finite at step {step} of size {size_index}")
        self.size_index, self.step = size_index, step


class Dream:
    """One run of the optimiser. `image` is always the latest (finite) image, so a caller
    can save it after an interruption."""

    def __init__(self, model: VisModel, settings: DreamSettings, observer: Observer):
        self.model = model
        self.settings = settings
        self.observer = observer
        self.objective = settings.objective()
        self.image: torch.Tensor | None = None

    def run(self, initial: torch.Tensor, anchor_rgb: np.ndarray | None) -> torch.Tensor:
        """Optimise from `initial` (1, 3, H, W) at the first size; `anchor_rgb` is the user's
        photo (uint8 RGB) that the main p-norm pulls towards, or None (pull towards 0)."""
        self.image = initial.to(self.model.device, copy=True)  # updated in place; the caller keeps theirs
        for size_index, size in enumerate(self.settings.sizes, start=1):
            if size_index > 1:
                # Resize in float with this exact resampler (reproducibility across implementations).
                self.image = F.interpolate(self.image, size=size, mode="bicubic", align_corners=False)
            anchor = None if anchor_rgb is None else rgb_to_image(
                resize_rgb(anchor_rgb, size), self.model.mean_bgr).to(self.model.device)
            self._optimise_size(size_index, anchor)
        return self.image

    def _optimise_size(self, size_index: int, anchor: torch.Tensor | None) -> None:
        s = self.settings
        height, width = self.image.shape[-2:]
        tile = self.model.input_size
        groups = checkerboard_groups(height, width, *tile)
        rates = None
        if s.use_pixel_learning_rates:
            counts = coverage_counts(height, width, *tile)
            rates = torch.from_numpy(1.0 / counts).to(self.image)   # (H, W)
        # RMSProp state, learning rate and TV strength start afresh at every size.
        caches = {region: torch.zeros((3,) + tile, device=self.image.device)
                  for group in groups for region in group}
        learning_rate, tv_reg = s.learning_rate, s.tv_reg
        for step in range(1, s.num_steps + 1):
            stats = StepStats() if step % s.output_iter == 0 else None
            previous = self.image.clone()
            for group in groups:
                self._update_group(group, anchor, caches, rates, learning_rate, tv_reg, stats)
            if not bool(torch.isfinite(self.image).all()):
                self.image = previous
                raise NonFiniteError(size_index, step)
            if step % s.tv_reg_step_iter == 0:
                tv_reg += s.tv_reg_step
            if step % s.learning_rate_decay_iter == 0:
                learning_rate *= s.learning_rate_decay_factor
            self.observer.step_done(size_index, step)
            if stats is not None:
                self.observer.report(self._report(size_index, step, stats))

    def _update_group(self, group: list[Region], anchor, caches, rates, learning_rate: float,
                      tv_reg: float, stats: StepStats | None) -> None:
        """CNN gradients of all regions on the image as it is now, then each region's update in order."""
        cnn_gradients = self._cnn_gradients(group, stats)
        for region, cnn_gradient in zip(group, cnn_gradients):
            pixels = self.image[0][region.slices]                       # (3, h, w) view
            gradient = cnn_gradient + self._regulariser_gradient(
                pixels, None if anchor is None else anchor[0][region.slices], tv_reg, stats)
            cache = caches[region]
            cache.mul_(self.settings.decay_rate).addcmul_(gradient, gradient,
                                                          value=1 - self.settings.decay_rate)
            step = -learning_rate * gradient / torch.sqrt(cache + RMSPROP_EPSILON)
            if rates is not None:
                step = step * rates[region.slices]
            pixels += step
            if stats is not None:
                stats.add("cnn", cnn_gradient)
                stats.regions += 1
                stats.step_sizes.append(step.abs().flatten())

    def _cnn_gradients(self, group: list[Region], stats: StepStats | None) -> list[torch.Tensor]:
        gradients = []
        for start in range(0, len(group), self.settings.batch_size):
            batch = group[start:start + self.settings.batch_size]
            tiles = torch.stack([self.image[0][region.slices] for region in batch])  # (B, 3, h, w)
            loss, gradient = self.model.objective_gradient(
                tiles, self.settings.target_layer, self.objective)
            gradients.extend(gradient.unbind(0))
            if stats is not None:
                stats.losses["objective"] -= float(loss)
        return gradients

    def _regulariser_gradient(self, pixels: torch.Tensor, anchor: torch.Tensor | None,
                              tv_reg: float, stats: StepStats | None) -> torch.Tensor:
        """p_reg*dP(x - x0) + p_reg_aux*dP(x) + tv_reg*dTV(x/scale)/scale; zero-weight terms are skipped."""
        s = self.settings
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
                stats.losses["tv" if name == "tv" else "p"] += weight * float(value)
                stats.add(name, gradient)
        return total

    def _report(self, size_index: int, step: int, stats: StepStats) -> Report:
        steps = torch.cat(stats.step_sizes)
        return Report(
            size_index=size_index, num_sizes=len(self.settings.sizes), step=step,
            image=self.image, objective=stats.losses["objective"], p_loss=stats.losses["p"],
            tv_loss=stats.losses["tv"],
            mean_gradients={k: v / stats.regions for k, v in stats.gradient_sums.items()},
            step_mean=float(steps.mean()), step_median=float(steps.median()))
