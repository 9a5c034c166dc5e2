"""What the image is optimised for: functions of the target blobs' values.

A `BlobObjective` maps one target blob `a` (N, C, ...) to `(loss, top_gradient)`: the loss
to minimise (the negated objective, summed over the batch) and its gradient with respect
to `a`. An `Objective` names the blobs and what to do with each: every blob's top gradient
is set before one backward pass, so the pixel gradient is the sum of the blobs' (whatever
their depth; docs/algorithm.md, "Beyond 2015"). Regularisers (`cnnvis.regularizers`) share
the shape of this interface: a value and its gradient.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Callable

import torch

BlobObjective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Objective = dict[str, BlobObjective]   # blob name -> its objective, in network order


def amplify_layer(l1_weight: float, l2_weight: float, grad_clip: float,
                  channels: Sequence[int] | None = None) -> BlobObjective:
    """Inceptionism: make the activations that are already there larger.

    The top gradient is the README's -l1_weight*|a| - l2_weight*clip(a, -g, g). It is the
    gradient of loss = -sum(l1_weight * a|a|/2 + l2_weight * huber_g(a)), where huber_g is
    a^2/2 within [-g, g] and linear outside; that loss is what `print` reports (negated).
    With `channels`, only those channels count: the top gradient is 0 on the others.
    """
    def objective(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = a.abs()
        huber = torch.where(magnitude <= grad_clip, a * a / 2,
                            grad_clip * magnitude - grad_clip ** 2 / 2)
        values = l1_weight * a * magnitude / 2 + l2_weight * huber
        top = -l1_weight * magnitude - l2_weight * a.clamp(-grad_clip, grad_clip)
        if channels is None:
            return -values.sum(), top
        kept = channel_mask(a.shape[1], a.ndim, a.device)
        return -(values * kept).sum(), top * kept

    @functools.lru_cache(maxsize=4)
    def channel_mask(count: int, ndim: int, device: torch.device) -> torch.Tensor:
        """(1, C, 1, ...) True on `channels`: made once, not per batch of tiles (a host to
        device copy on a GPU)."""
        kept = torch.zeros(count, dtype=torch.bool)
        kept[list(channels)] = True
        return kept.view((1, -1) + (1,) * (ndim - 2)).to(device)
    return objective


def amplify_neuron(channel: int) -> BlobObjective:
    """Maximise one channel of the target blob, summed over its spatial positions (one unit
    for a fully connected blob): top gradient -1 there, 0 elsewhere."""
    def objective(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = torch.zeros_like(a)
        top[:, channel] = -1
        return -a[:, channel].sum(), top
    return objective


def guided(guide: torch.Tensor) -> BlobObjective:
    """Google's 2015 guided dream: each position of the blob is pulled towards the guide's
    feature vector that it already matches best (largest dot product; the first on ties).

    `guide` is the guide image's blob (1, C, ...) at the same layer. For a blob x (N, C, P
    positions) the top gradient at position p is -guide[:, argmax_q <x_p, guide_q>], the
    gradient of loss = -sum_p <x_p, guide_best(p)> with the choice held fixed.
    """
    features = guide.reshape(guide.shape[1], -1)              # (C, Q)

    def objective(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = a.reshape(a.shape[0], a.shape[1], -1)              # (N, C, P)
        matches = torch.einsum("ncp,cq->npq", x, features.to(a))
        best = matches.argmax(dim=2)                           # (N, P)
        top = -features.to(a)[:, best].permute(1, 0, 2)        # (N, C, P)
        return (x * top).sum(), top.reshape(a.shape)
    return objective


def weighted(weight: float, objective: BlobObjective) -> BlobObjective:
    """`objective` times `weight` (negative: the blob is suppressed rather than amplified)."""
    if weight == 1:
        return objective

    def scaled(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, top = objective(a)
        return weight * loss, weight * top
    return scaled
