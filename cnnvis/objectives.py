"""What the image is optimised for: functions of the target blob's values.

An objective maps the target blob `a` (N, C, ...) to `(loss, top_gradient)`: the loss to
minimise (the negated objective, summed over the batch) and its gradient with respect to
`a`, which is back-propagated to the pixels. Regularisers (`cnnvis.regularizers`) share
the shape of this interface: a value and its gradient.
"""
from __future__ import annotations

from typing import Callable

import torch

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def amplify_layer(l1_weight: float, l2_weight: float, grad_clip: float) -> Objective:
    """Inceptionism: make the activations that are already there larger.

    The top gradient is the README's -l1_weight*|a| - l2_weight*clip(a, -g, g). It is the
    gradient of loss = -sum(l1_weight * a|a|/2 + l2_weight * huber_g(a)), where huber_g is
    a^2/2 within [-g, g] and linear outside; that loss is what `print` reports (negated).
    """
    def objective(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = a.abs()
        huber = torch.where(magnitude <= grad_clip, a * a / 2,
                            grad_clip * magnitude - grad_clip ** 2 / 2)
        loss = -(l1_weight * a * magnitude / 2 + l2_weight * huber).sum()
        top = -l1_weight * magnitude - l2_weight * a.clamp(-grad_clip, grad_clip)
        return loss, top
    return objective


def amplify_neuron(channel: int) -> Objective:
    """Maximise one channel of the target blob, summed over its spatial positions (one unit
    for a fully connected blob): top gradient -1 there, 0 elsewhere."""
    def objective(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        top = torch.zeros_like(a)
        top[:, channel] = -1
        return -a[:, channel].sum(), top
    return objective
