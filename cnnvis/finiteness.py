"""The optimiser's watch on the image: the last finite image, and the step that lost it.

On a CPU every step is checked (reading one flag costs nothing there). On a GPU reading a
flag waits for all the work queued before it, so the check stays on the device: each step
keeps the image where it is still finite (`torch.where`, no copy to the host), records the
first non-finite step, and the flag is read only when the caller asks (report steps and
the last step of a size). The run then stops as on a CPU, with the same last finite image;
only the steps between the loss and the next read are done in vain.

The last finite image is one buffer per size, written in place at every step.
"""
from __future__ import annotations

import torch


class LastFinite:
    """Follows one size's steps; `after_step` gives the first non-finite step, for the
    caller to read (with whatever else it reads), and `check` reads it."""

    def __init__(self, image: torch.Tensor, on_device: bool | None = None):
        """`on_device`: keep the check on the device (the default where `image` is not on
        the CPU)."""
        self.on_device = image.device.type != "cpu" if on_device is None else on_device
        self.kept = image.clone()                                # the last finite image
        if self.on_device:
            self.finite = torch.ones((), dtype=torch.bool, device=image.device)
            self.first_bad = torch.zeros((), dtype=torch.long, device=image.device)

    def before_step(self, image: torch.Tensor) -> None:
        if not self.on_device:
            self.kept.copy_(image)

    def after_step(self, image: torch.Tensor, step: int) -> torch.Tensor:
        """Follow `step`, just done; nothing is read. The first step after which the image
        was not finite (with `kept` the image before it), or 0 while it has stayed finite:
        a 0-dim integer tensor on the image's device. On a CPU it says only whether this
        step lost it, to be read at every step."""
        finite = torch.isfinite(image).all()
        if not self.on_device:
            return torch.where(finite, 0, step)
        self.first_bad.masked_fill_(self.finite & ~finite, step)
        self.finite &= finite
        torch.where(self.finite, image, self.kept, out=self.kept)
        return self.first_bad

    def check(self, image: torch.Tensor, step: int, read: bool) -> int | None:
        """`after_step`, read on a CPU and where `read`: None while the image has stayed
        finite (as far as has been read); else the first step after which it was not."""
        first_bad = self.after_step(image, step)
        if read or not self.on_device:
            return int(first_bad) or None
        return None
