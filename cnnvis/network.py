"""What the optimiser needs of a network, whatever its origin (Caffe files or PyTorch code)."""
from __future__ import annotations

from typing import Protocol

import torch


class BlobNetwork(Protocol):
    """A feed-forward image network whose intermediate results ("blobs") have names.

    Implemented by `cnnvis.caffe.CaffeNet` and `cnnvis.efficientnet.EfficientNetLite0`.
    Inputs are in the network's own convention (for Caffe models: BGR pixels minus
    the mean colour); the conversion from cnn-vis' image space lives in `cnnvis.model`.
    Parameters never require gradients.
    """

    input_size: tuple[int, int]   # (height, width) the network was trained on
    blob_names: list[str]         # targetable blobs, in network order (input excluded)

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        """Run only the layers that `target` depends on; x is (N, 3, H, W); returns the blob."""
        ...

    def forward_blobs(self, x: torch.Tensor, targets: list[str]) -> dict[str, torch.Tensor]:
        """Run, once, only the layers that the `targets` depend on; returns those blobs."""
        ...

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every blob of the whole network for input x, in network order."""
        ...

    def to(self, device: torch.device) -> "BlobNetwork":
        ...
