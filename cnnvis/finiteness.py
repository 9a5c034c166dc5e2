"""The optimiser's watch on the image: the last finite image, and the step that lost it.

On a CPU every step is checked (reading one flag costs nothing there). On a GPU reading a
flag waits for all the work queued before it, so the check stays on the device: each step
keeps the image where it is still finite (`torch.where`, no copy to the host), records the
first non-finite step, and the flag is read only when the caller asks (report steps and
the last step of a size). The run then stops as on a CPU, with the same last finite image;
only the steps between the loss and the next read are done in vain.
"""
from __future__ import annotations

import torch


class LastFinite:
    """Follows one size's steps; `check` says the first non-finite step once it is read."""

    def __init__(self, image: torch.Tensor):
        self.on_device = image.device.type != "cpu"
        self.kept: torch.Tensor | None = None                    # the last finite image
        if self.on_device:
            self.kept = image.clone()
            self.finite = torch.ones((), dtype=torch.bool, device=image.device)
            self.first_bad = torch.zeros((), dtype=torch.long, device=image.device)

    def before_step(self, image: torch.Tensor) -> None:
        if not self.on_device:
            self.kept = image.clone()

    def check(self, image: torch.Tensor, step: int, read: bool) -> int | None:
        """None while the image has stayed finite (as far as has been read); else the first
        step after which it was not, with `kept` the image before that step."""
        if not self.on_device:
            return None if bool(torch.isfinite(image).all()) else step
        finite = torch.isfinite(image).all()
        self.first_bad = torch.where(self.finite & ~finite, step, self.first_bad)
        self.finite &= finite
        self.kept = torch.where(self.finite, image, self.kept)
        if read and not bool(self.finite):   # the one host sync, on report steps only
            return int(self.first_bad)
        return None
