"""Networks of the user's own, ready for cnn-vis: an `nn.Module`, an ONNX file, the
function of a Python file the user names, or a torchvision or timm model by name.

Their images are taken as torchvision's and timm's models take them unless the file or
library says otherwise: RGB in 0..1, minus `mean`, over `std` (per channel, in the
network's channel order), which `cnnvis.model.InputConvention` expresses in 0..255 units.
A model named by a string (`is_own_model`) is what `--model` and `ModelSpec` carry to
workers: the string, never the module.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from cnnvis.engine import TorchEngine, check_precision
from cnnvis.errors import UserError
from cnnvis.model import InputConvention, VisModel
from cnnvis.module_network import ModuleNetwork
from cnnvis.network import BlobNetwork
from cnnvis.onnx_network import load_onnx_network

IMAGENET_MEAN = (0.485, 0.456, 0.406)   # torchvision's and timm's, RGB in 0..1
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = (224, 224)
LIBRARIES = {"torchvision": "pip install torchvision", "timm": "pip install timm"}


@dataclass(frozen=True)
class Preprocessing:
    """How a network of one's own takes its images (None: the file or library does not say)."""

    input_size: tuple[int, int] | None = None
    channel_order: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    labels: tuple[str, ...] | None = None

    def over(self, other: "Preprocessing") -> "Preprocessing":
        """These values, and `other`'s where these are None."""
        return Preprocessing(*[getattr(other, f.name) if getattr(self, f.name) is None
                               else getattr(self, f.name) for f in fields(self)])


DEFAULTS = Preprocessing(DEFAULT_INPUT_SIZE, "RGB", IMAGENET_MEAN, IMAGENET_STD)


def is_own_model(name: object) -> bool:
    """Whether `--model name` names a network of one's own rather than a preset."""
    text = os.fspath(name) if isinstance(name, (str, os.PathLike)) else ""
    return (text.lower().endswith(".onnx") or text.startswith(tuple(f"{k}:" for k in LIBRARIES))
            or re.fullmatch(r".+\.py:[A-Za-z_]\w*", text) is not None)


def own_model_file(name: str) -> str | None:
    """The file that `--model name` reads (an ONNX file, or the Python file); None for a
    library's model."""
    if name.lower().endswith(".onnx"):
        return name
    library, _, _ = name.partition(":")
    return None if library in LIBRARIES else name.rpartition(":")[0]


def check_own_choices(name: str, deploy_txt: object, caffe_model: object, backend: str) -> None:
    """A UserError for the Caffe options beside a network of one's own."""
    if deploy_txt is not None or caffe_model is not None:
        raise UserError(f"--model {name} is a network of its own; --deploy_txt and "
                        "--caffe_model are for Caffe models: leave them out.")
    if backend != "torch":
        raise UserError(f"--backend {backend} runs Caffe models only, and {name} is not one; "
                        "use --backend torch with it.")


def own_network(model: nn.Module | str | os.PathLike, pretrained: bool = True,
                input_size: tuple[int, int] | None = None) -> tuple[BlobNetwork, Preprocessing]:
    """The `BlobNetwork` of `model` and what its file or library says of its images;
    `pretrained` False: a library's model with random weights (no download)."""
    if isinstance(model, nn.Module):
        return ModuleNetwork(model, input_size or DEFAULT_INPUT_SIZE), Preprocessing()
    name = os.fspath(model)
    if name.lower().endswith(".onnx"):
        network = load_onnx_network(name, input_size)
        return network, onnx_preprocessing(network.metadata)
    library, _, function = name.partition(":")
    if library in LIBRARIES:
        module, said = (_torchvision if library == "torchvision" else _timm)(function, pretrained)
    else:
        module, said = _from_python_file(name), Preprocessing()
    size = input_size or said.input_size or DEFAULT_INPUT_SIZE
    return ModuleNetwork(module, size), said


def load_own_model(model: nn.Module | str | os.PathLike, *,
                   input_size: tuple[int, int] | None = None, channel_order: str | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                   labels: Sequence[str] | None = None, device: torch.device = torch.device("cpu"),
                   precision: str = "fp32",
                   mean_bgr: tuple[float, float, float] | None = None) -> VisModel:
    """`model` ready for cnn-vis (see the module docstring); the keywords replace what the
    file or library says. `mean_bgr` (--mean_image) replaces the mean colour that cnn-vis
    images are centred on, as with a preset."""
    check_precision(precision, device)
    given = Preprocessing(None, channel_order, _three(mean, "mean"), _three(std, "std"),
                          None if labels is None else tuple(labels))
    network, said = own_network(model, True, input_size)
    chosen = given.over(said).over(DEFAULTS)
    convention = input_convention(chosen.channel_order, chosen.mean, chosen.std)
    offset_bgr = convention.offset[::-1] if chosen.channel_order == "RGB" else convention.offset
    # A name for messages and cache folders: the file's, without its folders.
    name = type(model).__name__ if isinstance(model, nn.Module) else Path(os.fspath(model)).name
    return VisModel(TorchEngine(network, device, precision), name=name,
                    mean_bgr=mean_bgr or offset_bgr, convention=convention,
                    labels=None if chosen.labels is None else list(chosen.labels), device=device)


def input_convention(channel_order: str, mean: Sequence[float],
                     std: Sequence[float]) -> InputConvention:
    """The convention of images in 0..1 normalised by `mean` and `std` (network order)."""
    if channel_order not in ("RGB", "BGR"):
        raise UserError(f"channel_order {channel_order!r}: use 'RGB' or 'BGR'.")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise UserError(f"std {tuple(std)}: each channel's std must be a number above 0.")
    return InputConvention(channel_order, tuple(255.0 * m for m in mean),
                           tuple(255.0 * s for s in std))


def _three(values: Sequence[float] | None, what: str) -> tuple[float, float, float] | None:
    if values is None:
        return None
    numbers = tuple(float(v) for v in values)
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise UserError(f"{what} {values!r}: give three finite numbers, one per channel "
                        "(in 0..1 units, in the network's channel order).")
    return numbers


def onnx_preprocessing(metadata: dict[str, str]) -> Preprocessing:
    """What an ONNX file's metadata says of its images: keys `channel_order` ("RGB"/"BGR"),
    and `mean` and `std` (three numbers in 0..1 units each), where it has them."""
    metadata = {key.lower(): value for key, value in metadata.items()}
    numbers = {key: tuple(float(v) for v in re.findall(r"[-+0-9.eE]+", metadata[key]))
               for key in ("mean", "std") if key in metadata}
    order = metadata.get("channel_order", "").upper() or None
    return Preprocessing(None, order, _three(numbers.get("mean"), "the file's mean"),
                         _three(numbers.get("std"), "the file's std"))


def _library(name: str, model: str):
    try:
        return importlib.import_module(name)
    except ImportError:   # absent, or broken beside this PyTorch
        raise UserError(f"--model {name}:{model} needs the {name} package, which is not "
                        f"installed (or does not import here); install it with "
                        f"{LIBRARIES[name]}.") from None


def _unknown(library: str, name: str, names: list[str]) -> UserError:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UserError(f"{library} has no model named '{name}'.{hint}")


def _torchvision(name: str, pretrained: bool) -> tuple[nn.Module, Preprocessing]:
    """torchvision's model `name` with its default weights, and their preprocessing."""
    models = _library("torchvision", name).models
    if name not in models.list_models():
        raise _unknown("torchvision", name, list(models.list_models()))
    weights = models.get_model_weights(name).DEFAULT
    transform = weights.transforms()
    size = tuple(transform.crop_size) * (2 if len(transform.crop_size) == 1 else 1)
    categories = weights.meta.get("categories")
    return (models.get_model(name, weights=weights if pretrained else None),
            Preprocessing(size, "RGB", tuple(transform.mean), tuple(transform.std),
                          tuple(categories) if categories else None))


def _timm(name: str, pretrained: bool) -> tuple[nn.Module, Preprocessing]:
    """timm's model `name` (its pretrained weights), and its data config's preprocessing."""
    timm = _library("timm", name)
    if name not in timm.list_models():
        raise _unknown("timm", name, list(timm.list_models()))
    module = timm.create_model(name, pretrained=pretrained)
    config = timm.data.resolve_data_config({}, model=module)
    return module, Preprocessing(tuple(config["input_size"][1:]), "RGB", tuple(config["mean"]),
                                 tuple(config["std"]))


def _from_python_file(spec: str) -> nn.Module:
    """The module that function `name` of Python file `path` ("path.py:name") returns: the
    user's own code, which they named, run."""
    path, _, function = spec.rpartition(":")
    if not Path(path).is_file():
        raise UserError(f"--model {spec}: the Python file {path} does not exist; check the path.")
    module_spec = importlib.util.spec_from_file_location(f"cnnvis_model_{Path(path).stem}", path)
    code = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(code)
        make = getattr(code, function, None)
        if not callable(make):
            raise UserError(f"--model {spec}: {path} defines no function '{function}'; name "
                            "one that returns the nn.Module.")
        network = make()
    except UserError:
        raise
    except Exception as error:   # the user's code: their message, not our traceback
        raise UserError(f"--model {spec}: {type(error).__name__}: {error}") from None
    if not isinstance(network, nn.Module):
        raise UserError(f"--model {spec}: {function}() returned a {type(network).__name__}; it "
                        "must return a torch.nn.Module.")
    return network
