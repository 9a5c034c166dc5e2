"""The model zoo: named presets, where their weights come from, and loading them.

A preset is data (a frozen dataclass): architecture, weight files with their URLs and
checksums, mean colour, input convention, default target layer and class labels.
Weights that are not present are downloaded on first use into the cache directory
(`cnnvis.download`). Explicit `--deploy_txt`/`--caffe_model` files override a preset's.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch

from cnnvis.caffe import CaffeNet, read_caffemodel, read_prototxt
from cnnvis.caffe.net import network_input
from cnnvis.download import cache_dir, fetch, unpack_tar
from cnnvis.efficientnet import (EFFICIENTNET_LITE0_DEFAULT_LAYER, EfficientNetLite0,
                                 googlenet_counterpart, load_efficientnet_lite0)
from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.googlenet import googlenet_deploy
from cnnvis.engine import TorchEngine, check_precision
from cnnvis.model import InputConvention, VisModel
from cnnvis.network import BlobNetwork
from cnnvis.own_model import check_own_choices, is_own_model, load_own_model, own_network
from cnnvis.pycaffe_engine import load_caffe_engine
from cnnvis.settings import BACKENDS, default

logger = logging.getLogger("cnnvis")

IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)  # Caffe's ILSVRC-2012 mean


@dataclass(frozen=True)
class WeightFile:
    """A downloadable weights file; `archive` names a .tar.gz that holds it instead."""

    filename: str
    url: str
    sha1: str | None = None
    sha256: str | None = None
    archive: str | None = None           # file name of the tarball in the cache
    archive_member: str | None = None    # path of the weights inside the tarball


@dataclass(frozen=True)
class ModelPreset:
    name: str
    training_data: str
    input_size: tuple[int, int]
    mean_bgr: tuple[float, float, float]
    default_layer: str
    labels_file: str | None              # class names, in cnnvis/data
    num_classes: int
    weights: WeightFile | None = None    # a Caffe model's downloadable weights
    # A network defined in PyTorch: makes it, with its pretrained weights when asked.
    pytorch_network: Callable[[bool], BlobNetwork] | None = None
    convention: InputConvention = InputConvention()
    # For non-GoogLeNet models: the blob corresponding to a GoogLeNet blob name, if any.
    googlenet_counterpart: Callable[[str], str | None] | None = None
    caffe_root_files: tuple[str, str] | None = None  # 2015 locations under $CAFFE_ROOT
    # What amplifying a layer looks like, by the first blob name it applies to (in network
    # order), written from the layer gallery (--layer_gallery).
    looks_like: tuple[tuple[str, str], ...] = ()


PRESETS: dict[str, ModelPreset] = {p.name: p for p in [
    ModelPreset(
        name="bvlc_googlenet", training_data="ImageNet (ILSVRC-2012), 1000 classes",
        input_size=(224, 224), mean_bgr=IMAGENET_MEAN_BGR,
        default_layer="inception_4d/3x3_reduce", labels_file="imagenet_labels.txt", num_classes=1000,
        weights=WeightFile("bvlc_googlenet.caffemodel",
                           "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
                           sha1="405fc5acd08a3bb12de8ee5e23a96bec22f08204"),
        caffe_root_files=("models/bvlc_googlenet/deploy.prototxt",
                          "models/bvlc_googlenet/bvlc_googlenet.caffemodel")),
    ModelPreset(
        name="googlenet_places205", training_data="MIT Places205, 205 scene classes",
        input_size=(224, 224), mean_bgr=(105.417, 113.753, 116.047),
        default_layer="inception_4b/3x3_reduce", labels_file=None, num_classes=205,
        weights=WeightFile("googlenet_places205.caffemodel",
                           "http://places.csail.mit.edu/model/googlenet_places205.tar.gz",
                           archive="googlenet_places205.tar.gz",
                           archive_member="googlelet_places205_train_iter_2400000.caffemodel"),
        caffe_root_files=("models/googlenet_places/deploy_places205.protxt",
                          "models/googlenet_places/googlelet_places205_train_iter_2400000.caffemodel")),
    ModelPreset(
        name="googlenet_places365", training_data="MIT Places365, 365 scene classes",
        input_size=(224, 224), mean_bgr=(104.051, 112.514, 116.676),
        default_layer="inception_4d/3x3_reduce", labels_file="places365_labels.txt", num_classes=365,
        weights=WeightFile(
            "googlenet_places365.caffemodel",
            "http://places2.csail.mit.edu/models_places365/googlenet_places365.caffemodel")),
    ModelPreset(
        name="efficientnet_lite0", training_data="ImageNet (ILSVRC-2012), 1000 classes",
        input_size=(224, 224), mean_bgr=(103.939, 116.779, 123.68),
        default_layer=EFFICIENTNET_LITE0_DEFAULT_LAYER, labels_file="imagenet_labels.txt",
        num_classes=1000,
        pytorch_network=lambda pretrained: (load_efficientnet_lite0() if pretrained
                                            else EfficientNetLite0()),
        convention=InputConvention(channel_order="RGB", offset=(127.0, 127.0, 127.0), scale=128.0),
        googlenet_counterpart=googlenet_counterpart,
        looks_like=(("stem", "fine grain and colour noise"), ("stage2/block1", "woven textures"),
                    ("stage4/block1", "swirls and scales"),
                    ("stage5/block1", "swirls, the first eyes"),
                    ("stage6/block1", "eyes and animal faces"),
                    ("pool", "no spatial extent (not in the gallery)"))),
]}
DEFAULT_MODEL = default("model")


def looks_like(model: ModelPreset, layers: list[str]) -> dict[str, str]:
    """Each of `layers` (a preset's blobs, in network order) with what amplifying it looks like,
    where the preset says."""
    notes, note = {}, ""
    marks = dict(model.looks_like)
    for layer in layers:
        note = marks.get(layer, note)
        notes[layer] = note
    return notes


def preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        own = ("; a network of one's own is FILE.onnx, FILE.py:FUNCTION, torchvision:NAME or "
               "timm:NAME" if ":" in name or "." in name else "")
        raise UserError(f"unknown model '{name}'; --model takes one of: {', '.join(PRESETS)} "
                        f"(--list_models describes them){own}.")
    return PRESETS[name]


def labels(model: ModelPreset) -> list[str] | None:
    if model.labels_file is None:
        return None
    text = resources.files("cnnvis.data").joinpath(model.labels_file).read_text(encoding="utf-8")
    return text.splitlines()


def _caffe_root_files(model: ModelPreset) -> tuple[Path, Path] | None:
    """The 2015 tool's files under $CAFFE_ROOT, when they are all there (old commands keep working)."""
    root = os.environ.get("CAFFE_ROOT")
    if not root or model.caffe_root_files is None:
        return None
    files = tuple(Path(root).expanduser() / f for f in model.caffe_root_files)
    return files if all(f.is_file() for f in files) else None


def weights_path(model: ModelPreset) -> Path | None:
    """Where the preset's weights live (in the cache), or None for package-provided weights."""
    if model.weights is None:
        return None
    return cache_dir() / model.weights.filename


def weights_present(model: ModelPreset) -> bool:
    path = weights_path(model)
    return path is None or path.exists() or _caffe_root_files(model) is not None


OFFLINE_MODEL = "efficientnet_lite0"   # its weights come with a Python package


def download(model: ModelPreset, progress: bool = True) -> Path | None:
    """Make sure the preset's weights are in the cache (downloading them if needed)."""
    path = weights_path(model)
    if path is None or path.exists():
        return path
    try:
        return _fetch_weights(model, path, progress)
    except UserError as error:
        raise UserError(f"{model.name}'s weights: {str(error).rstrip('.')}. Or dream now with the "
                        f"model that needs no download: --model {OFFLINE_MODEL}, e.g. python "
                        f"cnn_vis.py --model {OFFLINE_MODEL} --initial_image photo.jpg") from None


def _fetch_weights(model: ModelPreset, path: Path, progress: bool) -> Path:
    source = model.weights
    if source.archive is None:
        return fetch(source.url, path, sha1=source.sha1, sha256=source.sha256, progress=progress)
    archive = fetch(source.url, cache_dir() / source.archive, sha1=source.sha1,
                    sha256=source.sha256, progress=progress)
    unpack_tar(archive, path.parent, {source.archive_member: path.name})
    archive.unlink()  # only the weights are needed; the rest of the tarball goes
    return path


def architecture(model: ModelPreset, seed: int = 0) -> BlobNetwork:
    """The preset's network with random weights (for --list_layers and benchmarks): no download."""
    if model.pytorch_network is not None:
        return model.pytorch_network(False)
    return CaffeNet(googlenet_deploy(model.num_classes), None, seed=seed).eval()


def load_model(name: str = DEFAULT_MODEL, deploy_txt: str | None = None,
               caffe_model: str | None = None, mean_bgr: tuple[float, float, float] | None = None,
               device: torch.device = torch.device("cpu"), backend: str = default("backend"),
               precision: str = default("precision")) -> VisModel:
    """The network of preset `name`, or of explicit Caffe files, ready for cnn-vis.

    `deploy_txt`/`caffe_model` replace the preset's architecture/weights; `mean_bgr`
    (from --mean_image) replaces its mean colour. Missing preset weights are downloaded.
    `backend` is the engine: "torch" (PyTorch) or "caffe" (real Caffe, Caffe models only).
    `precision` is the PyTorch engine's number type (`cnnvis.engine.check_precision`).
    """
    model = check_choices(name, deploy_txt, caffe_model, backend, precision, device)
    own_network = deploy_txt is not None   # the preset's blob names may not apply to it
    if model.pytorch_network is not None and deploy_txt is None and caffe_model is None:
        engine = TorchEngine(model.pytorch_network(True), device, precision)
    else:
        old_files = _caffe_root_files(model)
        deploy_txt = deploy_txt or (old_files[0] if old_files else None)
        if caffe_model is None:   # the preset's (check_choices: it has some)
            caffe_model = old_files[1] if old_files else download(model)
        if backend == "caffe":
            engine = load_caffe_engine(deploy_txt or googlenet_deploy(model.num_classes),
                                       caffe_model, device)
        else:
            net = read_prototxt(deploy_txt) if deploy_txt else googlenet_deploy(model.num_classes)
            engine = TorchEngine(CaffeNet(net, read_caffemodel(caffe_model)).eval(), device,
                                 precision)
    return VisModel(engine, name=model.name, mean_bgr=mean_bgr or model.mean_bgr,
                    convention=model.convention, labels=labels(model), device=device,
                    default_layer=model.default_layer,
                    googlenet_counterpart=None if own_network else model.googlenet_counterpart)


def check_choices(name: str, deploy_txt: str | None, caffe_model: str | None, backend: str,
                  precision: str, device: torch.device | None) -> ModelPreset:
    """The preset of `load_model`'s arguments, once they are checked together (before any
    file is read); `device` None: not known here (a Ray cluster's), so not checked."""
    model = preset(name)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; --backend takes one of: {', '.join(BACKENDS)}.")
    if backend == "caffe" and precision != "fp32":
        raise UserError(f"--precision {precision}: --backend caffe computes in fp32 only; use "
                        "--precision fp32 with it, or --backend torch.")
    # On CUDA every precision runs: where the device is not known, only the name is checked.
    check_precision(precision, torch.device("cuda") if device is None else device)
    if model.pytorch_network is not None and deploy_txt is None and caffe_model is None:
        if backend == "caffe":
            raise UserError(f"--backend caffe runs Caffe models only, and {model.name} is a "
                            "PyTorch network; use --backend torch with it, or a Caffe model "
                            f"(--model {DEFAULT_MODEL}, or --deploy_txt with --caffe_model).")
    elif caffe_model is None and model.weights is None:
        raise UserError(f"--deploy_txt {deploy_txt} needs its weights too: "
                        "pass the .caffemodel with --caffe_model.")
    return model


@dataclass(frozen=True)
class ModelSpec:
    """A model named but not loaded: the arguments of `cnnvis.load_model` (`name` a preset,
    or a network of one's own by its name: `cnnvis.own_model.is_own_model`). Workers are sent
    one and each loads its own model once; the workflows check a run against it (input
    size, layers) before any weights load. `keep_freed_memory`: each worker process makes
    `cnnvis.keep_freed_memory`'s malloc setting (loading here never does)."""

    name: str = DEFAULT_MODEL
    deploy_txt: str | os.PathLike | None = None
    caffe_model: str | os.PathLike | None = None
    backend: str = default("backend")
    mean_bgr: tuple[float, float, float] | None = None
    device: str | torch.device | None = None   # None: the GPU if there is one, else the CPU
    keep_freed_memory: bool = False
    precision: str = default("precision")
    # A network of one's own: (keyword, value) pairs of `cnnvis.own_model.load_own_model`
    # (input_size, channel_order, mean, std) that replace what its file or library says.
    preprocessing: tuple[tuple[str, object], ...] = ()

    def load(self, device: str | torch.device | None = None) -> VisModel:
        """The model, on `device` (default: the spec's)."""
        device = resolved_device(device or self.device)
        if is_own_model(self.name):
            check_own_choices(self.name, self.deploy_txt, self.caffe_model, self.backend)
            return load_own_model(self.name, device=device, precision=self.precision,
                                  mean_bgr=self.mean_bgr, **dict(self.preprocessing))
        self._check_no_preprocessing()
        return load_model(self.name, _text(self.deploy_txt), _text(self.caffe_model),
                          self.mean_bgr, device, self.backend, self.precision)

    def check(self, device: bool = True) -> None:
        """What `load` would refuse, found without loading any weights: the preset, the
        backend and precision, the files (the network definition is read, the weights file
        opened) and, with `device` (not for a Ray cluster's workers), the device. A network
        of one's own is built (random weights for a library's)."""
        if is_own_model(self.name):
            check_own_choices(self.name, self.deploy_txt, self.caffe_model, self.backend)
            check_precision(self.precision, resolved_device(self.device) if device
                            else torch.device("cuda"))
            self.input_size()
            return
        self._check_no_preprocessing()
        check_choices(self.name, self.deploy_txt, self.caffe_model, self.backend,
                      self.precision, resolved_device(self.device) if device else None)
        self.input_size()
        if self.caffe_model is not None:
            with open_input(self.caffe_model, "weights file (caffemodel)", "--caffe_model"):
                pass

    def input_size(self) -> tuple[int, int]:
        """The network's input (height, width), from its files alone (no weights)."""
        if is_own_model(self.name):
            return tuple(self.architecture().input_size)
        if self.deploy_txt is not None:
            return tuple(network_input(read_prototxt(str(self.deploy_txt)))[1][1:])
        return preset(self.name).input_size

    def architecture(self) -> BlobNetwork:
        """The network with random weights (no download): its layers and shapes."""
        if is_own_model(self.name):
            return own_network(self.name, pretrained=False,
                               input_size=dict(self.preprocessing).get("input_size"))[0]
        if self.deploy_txt is not None:
            return CaffeNet(read_prototxt(str(self.deploy_txt)), None).eval()
        return architecture(preset(self.name))


    def _check_no_preprocessing(self) -> None:
        if self.preprocessing:
            given = ", ".join(f"--{'input_' if name in ('mean', 'std') else ''}{name}"
                              for name, _ in self.preprocessing)
            raise UserError(f"{given}: for a network of one's own (--model model.onnx, "
                            f"file.py:function, torchvision:NAME, timm:NAME); {self.name} has "
                            "its own input.")


def _text(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(path)


def default_device() -> torch.device:
    """The first CUDA GPU, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolved_device(device: str | torch.device | int | None) -> torch.device:
    """`device` as a torch.device; None: the GPU if there is one, else the CPU."""
    return default_device() if device is None else torch_device(device)


def torch_device(device: str | torch.device | int) -> torch.device:
    """`device` ('cpu', 'cuda', 'cuda:1', 'mps', a torch.device) as a torch.device that this
    machine has; a UserError naming the devices it has otherwise."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"device {str(device)!r} is not a device name PyTorch knows; use "
                        f"{_devices_here()}.") from None
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (gpus == 0 or (parsed.index or 0) >= gpus):
        found = (f"this machine has {gpus} CUDA device(s)" if gpus else
                 "this machine has no CUDA GPU" if torch.backends.cuda.is_built() else
                 "this PyTorch is built without CUDA")
        raise UserError(f"device '{parsed}': {found}; use {_devices_here()}.")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device 'mps': this machine has no Apple GPU (MPS); use {_devices_here()}.")
    return parsed


def _devices_here() -> str:
    """The devices of this machine, as a choice: "'cpu'", or "one of 'cpu', 'cuda:0'"."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ["'cpu'"] + [f"'cuda:{k}'" for k in range(gpus)]
    names += ["'mps'"] * torch.backends.mps.is_available()
    return names[0] if len(names) == 1 else "one of " + ", ".join(names)


def select_device(gpu: int) -> torch.device:
    """--gpu's device: CUDA device `gpu` (or Apple's MPS) when present; otherwise the CPU,
    said once."""
    if gpu < 0:
        return torch.device("cpu")
    if torch.cuda.is_available() and gpu < torch.cuda.device_count():
        return torch.device("cuda", gpu)
    if gpu == 0 and torch.backends.mps.is_available():
        return torch.device("mps")
    found = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no GPU"
    logger.warning(f"cnn-vis: --gpu {gpu}: {found} here; running on the CPU (--gpu -1 to "
                   "silence this).")
    return torch.device("cpu")
