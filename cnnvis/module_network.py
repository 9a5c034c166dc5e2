"""Any PyTorch `nn.Module` as a `BlobNetwork`: its named sub-modules are the blobs.

The blobs are the sub-modules' tensor outputs, in the order one forward pass at the input
size makes them (a sub-module called twice, like a shared ReLU, gives its last output).
Forward hooks on a copy of the module catch the targets' outputs, and the last of them
stops the pass with an exception of its own, so nothing past the deepest target runs.
The user's module itself is never changed: the copy is put in eval mode and float32, its
parameters stop requiring gradients, and only it gets the hooks.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from cnnvis.caffe.net import unknown_blob
from cnnvis.errors import UserError


class _TargetsReached(Exception):
    """Raised by the hook of the last target to run: the rest of the forward pass is not needed."""


class _Catch:
    """A forward hook that hands sub-module `name`'s output to the network's current run.

    A callable object rather than a closure, so that a deep copy of the network (the
    engine's) hooks into the copy's run, not the original's."""

    def __init__(self, network: "ModuleNetwork", name: str):
        self.network, self.name = network, name

    def __call__(self, module: nn.Module, inputs: tuple, output) -> None:
        self.network._caught(self.name, output)


class ModuleNetwork(nn.Module):
    """A user's `nn.Module` (copied, in eval mode, without parameter gradients) as a
    `BlobNetwork` whose blobs are its named sub-modules' outputs."""

    def __init__(self, module: nn.Module, input_size: tuple[int, int] = (224, 224)):
        super().__init__()
        self.input_size: tuple[int, int] = tuple(input_size)
        # float32, as cnn-vis' images are (the engine's precision may reduce it).
        self.module = copy.deepcopy(module).eval().requires_grad_(False).float()
        self._run_state: dict | None = None
        for name, sub_module in self.module.named_modules():
            if name:
                sub_module.register_forward_hook(_Catch(self, name))
        self._calls: dict[str, int] = {}   # how often each sub-module runs in a pass
        blobs = self._probe()
        self.blob_names: list[str] = list(blobs)

    def _probe(self) -> dict[str, torch.Tensor]:
        """Every blob of a pass at the input size, in the order the pass makes them."""
        parameter = next(self.module.parameters(), None)
        x = torch.zeros((1, 3) + self.input_size,
                        device=None if parameter is None else parameter.device)
        self._run_state = {"wanted": None, "found": {}, "calls": {}}
        try:
            with torch.no_grad():
                self.module(x)
        except Exception as error:   # the user's module, at this size: their message
            raise UserError(f"the network fails on an input of 1x3x{self.input_size[0]}x"
                            f"{self.input_size[1]} ({type(error).__name__}: {error}); give the "
                            "input size it takes (input_size=(H, W)).") from None
        finally:
            state, self._run_state = self._run_state, None
        self._calls = state["calls"]
        return state["found"]

    def _caught(self, name: str, output) -> None:
        state = self._run_state
        if state is None or not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return
        calls = state["calls"]
        calls[name] = calls.get(name, 0) + 1
        wanted = state["wanted"]
        if wanted is None:   # the probe: every output, in the order of each one's last
            state["found"].pop(name, None)
            state["found"][name] = output
            return
        if name in wanted and calls[name] == self._calls[name]:
            state["found"][name] = output
            if len(state["found"]) == len(wanted):
                raise _TargetsReached

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        return self.forward_blobs(x, [target])[target]

    def forward_blobs(self, x: torch.Tensor, targets: list[str]) -> dict[str, torch.Tensor]:
        for target in targets:
            if target not in self._calls:
                raise unknown_blob(target, self.blob_names)
        self._run_state = {"wanted": set(targets), "found": {}, "calls": {}}
        try:
            self.module(x)
        except _TargetsReached:
            pass
        finally:
            state, self._run_state = self._run_state, None
        return {target: state["found"][target] for target in targets}

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_blobs(x, self.blob_names)
