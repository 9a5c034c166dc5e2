"""Checking and planning a run, once, before any work: the options together, the sizes
and the memory they need, the objective, the start image; then the run itself.

Every entry point (`cnnvis.dream`, the sequences, the large jobs, the command line's
workflows) checks a run's options together with `check_combinations`, plans each
input's sizes with `plan_picture` and builds the objective with `build_objective`, once
per run, and then calls `run_plan` for each picture.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
from PIL import Image

from cnnvis.errors import Interrupted, NonFiniteImage, UserError
from cnnvis.imageio import as_photo
from cnnvis.model import VisModel
from cnnvis.objectives import Objective, amplify_layer, amplify_neuron, guided, weighted
from cnnvis.optimizer import Dream, Report
from cnnvis.pixels import Picture, resize_rgb, rgb_to_image, with_colours_of
from cnnvis.settings import DreamOptions
from cnnvis.sizes import check_min_size, parse_size, size_sequence
from cnnvis.zoo import ModelSpec

logger = logging.getLogger("cnnvis")


@dataclass(frozen=True)
class Plan:
    """One picture's run, checked: its options, its photo (uint8 RGB, or None for noise),
    its mask (uint8 grey, or None), the size schedule and the seed."""

    options: DreamOptions
    photo: np.ndarray | None
    mask: np.ndarray | None
    sizes: list[tuple[int, int]]
    seed: int


def plan_picture(options: DreamOptions, photo: np.ndarray | None, mask: np.ndarray | None,
                 input_size: tuple[int, int], device: torch.device, seed: int,
                 photo_size: tuple[int, int] | None = None) -> Plan:
    """The plan of one picture: its sizes, checked against the network's input (known before
    the weights load), the mask and this machine's memory. `photo_size` stands for the
    photo's size where the photo is not read yet (a video's frames)."""
    if photo is not None:
        photo_size = photo.shape[:2]
    sizes = plan_sizes(options, photo_size, input_size)
    if mask is not None:
        check_mask(mask, sizes[-1])
    check_memory(sizes, device)
    return Plan(options, photo, mask, sizes, seed)


def run_plan(plan: Plan, model: VisModel, objective: Objective, *,
             start: torch.Tensor | None = None, step_scale: torch.Tensor | None = None,
             anchor: np.ndarray | None = None,
             callback: Callable[[Report], None] | None = None,
             progress: Callable[[int, int], None] | None = None) -> Picture:
    """Dream the planned picture with `objective` (from `build_objective`).

    `start` (1, 3, H, W) at the first size replaces the photo as the image the run begins
    from, and is optimised in place; the photo stays what the p-norm pulls towards.
    `step_scale` (H, W), for a run of one size, multiplies each pixel's step, and `anchor`
    (uint8 RGB) replaces the photo as what the p-norm pulls towards.
    A run stopped by Ctrl-C raises `Interrupted`, and one whose image stops being finite
    `NonFiniteImage`; both carry the last good picture as `.picture`.
    """
    options, photo = plan.options, plan.photo
    if start is not None:
        initial = start
    elif photo is not None:
        initial = rgb_to_image(resize_rgb(photo, plan.sizes[0]), model.mean_bgr)
    else:
        initial = noise_image(plan.sizes[0], options.initialization_scale,
                              options.initialization_blur, plan.seed)
    run = Dream(model, options, plan.sizes, objective, callback=callback, progress=progress,
                seed=plan.seed)

    def picture(image: torch.Tensor | None) -> Picture | None:
        if image is None:
            return None
        if options.preserve_colors:
            image = with_colours_of(image, model.mean_bgr, photo)
        return Picture(image, model.mean_bgr, options.rescale_image, plan.seed)

    try:
        return picture(run.run(initial, photo if anchor is None else anchor, plan.mask,
                               in_place=True, step_scale=step_scale))
    except NonFiniteImage as error:
        error.picture = picture(run.image)
        raise
    except KeyboardInterrupt as stop:
        raise Interrupted(picture(run.image)) from stop


def check_model(model, specs: bool = False) -> None:
    """A TypeError, saying what to pass, unless `model` is a loaded `cnnvis.VisModel` (or,
    with `specs`, a `cnnvis.ModelSpec`, which workers and Ray load themselves)."""
    if isinstance(model, (VisModel, ModelSpec) if specs else VisModel):
        return
    wanted = "a cnnvis.VisModel or a cnnvis.ModelSpec" if specs else "a cnnvis.VisModel"
    name = model if isinstance(model, str) else "efficientnet_lite0"
    given = f"the str {model!r}" if isinstance(model, str) else type(model).__name__
    raise TypeError(f"model must be {wanted}, not {given}: pass the result of "
                    f"cnnvis.load_model({name!r})" +
                    (f", or cnnvis.ModelSpec({name!r}) for workers and Ray" if specs else ""))


def new_seed() -> int:
    """A fresh seed, for runs not given one (it is recorded, so the run can be repeated)."""
    return secrets.randbelow(2 ** 31)


def grey_mask(mask: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """A mask as uint8 grey (H, W): a file, a PIL image, or a uint8 array (H, W) or (H, W, 3)."""
    if isinstance(mask, np.ndarray) and mask.ndim == 2:
        if mask.dtype != np.uint8:
            raise ValueError(f"expected a uint8 mask, got {mask.dtype}")
        if mask.size == 0:
            raise UserError(f"--mask: the image has no pixels (height {mask.shape[0]}, width "
                            f"{mask.shape[1]}); give an image of at least 1x1 pixels.")
        return mask
    rgb = as_photo(mask, "--mask")
    return np.array(Image.fromarray(rgb).convert("L"))


def check_mask(mask: np.ndarray, size: tuple[int, int]) -> None:
    """Refuse a mask whose aspect ratio is not the image's (within 1%): it would be distorted."""
    mask_ratio, image_ratio = mask.shape[1] / mask.shape[0], size[1] / size[0]
    if abs(mask_ratio / image_ratio - 1) > 0.01:
        raise UserError(f"--mask is {mask.shape[1]}x{mask.shape[0]} (width x height), an aspect "
                        f"ratio of {mask_ratio:.3f}, but the image is {size[1]}x{size[0]} "
                        f"({image_ratio:.3f}); give a mask of the image's proportions (it is "
                        "resized to every size).")


def parse_list(text: str, option: str, kind: type) -> list:
    """The values of a comma-separated option; for int, ranges such as 0-15 are allowed."""
    values = []
    for item in text.split(","):
        item = item.strip()
        try:
            if kind is int and "-" in item[1:]:
                first, last = (int(end) for end in item.split("-", 1))
                if last < first or last - first > 100_000:
                    raise ValueError
                values.extend(range(first, last + 1))
            else:
                value = kind(item)
                if kind is float and not math.isfinite(value):
                    raise ValueError
                values.append(value)
        except ValueError:
            example = "0-15,40" if kind is int else "1,-0.5"
            raise UserError(f"{option} '{text}': '{item}' is not "
                            f"{'a channel number or range' if kind is int else 'a finite number'}; "
                            f"give a comma-separated list such as {example}.") from None
    return values


def check_combinations(options: DreamOptions, photo: bool, guide: bool) -> None:
    """Refuse combinations of options that cannot work, before any model is loaded."""
    layers = _layer_names(options)
    if options.layer_weights is not None:
        weights = parse_list(options.layer_weights, "--layer_weights", float)
        if len(weights) != len(layers):
            raise UserError(f"--layer_weights gives {len(weights)} weight(s) for {len(layers)} "
                            "target layer(s); give one weight per --target_layer.")
    for option, given in (("--channels", options.channels is not None), ("--guide_image", guide)):
        if given and len(layers) > 1:
            raise UserError(f"{option} works on a single target layer, and --target_layer names "
                            f"{len(layers)}; name one.")
    if options.channels is not None:
        parse_list(options.channels, "--channels", int)
        if options.image_type != "amplify_layer":
            raise UserError("--channels selects channels for amplify_layer; with "
                            "amplify_neuron use --target_neuron.")
    if options.preserve_colors and not photo:
        raise UserError("--preserve_colors keeps the colours of the photo, and there is none; "
                        "give --initial_image.")
    # A p-norm exponent below 1 pulling towards the photo has an infinite gradient where the
    # image equals the photo, as it does at the start.
    if photo and options.p_reg > 0 and options.alpha < 1:
        raise UserError(f"--alpha {options.alpha} with a photo: below 1 the p-norm's gradient is "
                        "infinite where the image equals the photo, as it does at the start; "
                        "use --alpha 1 or more, or --p_reg 0.")


def _layer_names(options: DreamOptions) -> list[str | None]:
    if not options.target_layer:
        return [None]   # the model's default
    names = [name.strip() for name in options.target_layer.split(",")]
    if not all(names):
        raise UserError(f"--target_layer '{options.target_layer}' has an empty name; join blob "
                        "names with ',' (see --list_layers).")
    return names


def plan_sizes(options: DreamOptions, photo_size: tuple[int, int] | None,
               input_size: tuple[int, int]) -> list[tuple[int, int]]:
    """The size sequence; the base size is the network input for noise, the photo's size otherwise."""
    base = input_size if photo_size is None else tuple(photo_size)
    sizes = size_sequence(parse_size(options.initial_size, base, "--initial_size"),
                          parse_size(options.final_size, base, "--final_size"),
                          options.num_sizes, options.resize_type)
    check_min_size(sizes, input_size, base)
    return sizes


# Memory per pixel of the largest size, measured (benchmarks/bench.py, one step at 8K and the
# PNG written: 2.5 GB, 0.3 GB of it before the optimisation) and rounded up: the image, its copy
# from before the step, the RMSProp caches (about one image), the photo it is pulled towards,
# the CNN gradients of a checkerboard group, and the picture made when it is saved.
BYTES_PER_PIXEL = 80
BASE_BYTES = 2 ** 30   # the model, PyTorch and the tiles in flight


def check_memory(sizes: list[tuple[int, int]], device: torch.device) -> None:
    """Refuse, before any work, a CPU run whose largest size this machine's memory cannot hold."""
    if device.type != "cpu":
        return
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return   # not a POSIX system that says
    height, width = max(sizes, key=lambda size: size[0] * size[1])
    needed = BASE_BYTES + BYTES_PER_PIXEL * height * width
    if needed > physical:
        raise UserError(f"size {height}x{width} needs about {needed / 2 ** 30:.0f} GB of memory, "
                        f"and this machine has {physical / 2 ** 30:.0f} GB; use a smaller "
                        "--final_size (or --initial_size), or a machine with more memory.")


def build_objective(model: VisModel, options: DreamOptions,
                    guide: np.ndarray | None = None) -> Objective:
    """What to amplify, blob by blob: the target layers (GoogLeNet names translated for
    presets that offer it, with a notice; the model's default when none is named) with
    their weights, channels or guide, checked against the network."""
    targets = [resolve_target(model, name) for name in _layer_names(options)]
    weights = ([1.0] * len(targets) if options.layer_weights is None
               else parse_list(options.layer_weights, "--layer_weights", float))
    objective: Objective = {}
    for target, weight in zip(targets, weights):
        if target in objective:
            raise UserError(f"--target_layer names '{target}' twice; name each layer once.")
        count = model.check_target(target)[1]   # the blob's channels
        if options.image_type == "amplify_neuron":
            if options.target_neuron >= count:
                raise UserError(f"--target_neuron {options.target_neuron} is outside blob "
                                f"'{target}', which has {count} channels; use 0 to {count - 1}.")
            blob_objective = amplify_neuron(options.target_neuron)
        elif guide is not None:
            guide_image = rgb_to_image(resize_rgb(guide, model.input_size), model.mean_bgr)
            blob_objective = guided(model.blob(guide_image, target))
        else:
            channels = None if options.channels is None else parse_list(
                options.channels, "--channels", int)
            outside = [c for c in channels or [] if not 0 <= c < count]
            if outside:
                raise UserError(f"--channels {options.channels}: channel {outside[0]} is outside "
                                f"blob '{target}', which has {count} channels (0 to {count - 1}).")
            blob_objective = amplify_layer(options.l1_weight, options.l2_weight,
                                           options.grad_clip, channels)
        objective[target] = weighted(weight, blob_objective)
    return objective


def resolve_target(model: VisModel, target: str | None) -> str:
    """A target blob: `target` (a GoogLeNet name translated for presets that offer it, with
    a notice) or the model's default."""
    target = target or model.default_layer
    if target is None:
        raise UserError(f"{model.name} has no default target layer; name one with "
                        "--target_layer (see --list_layers).")
    translate = model.googlenet_counterpart
    if target not in model.blob_names and translate and translate(target):
        logger.warning(f"cnn-vis: {model.name} has no blob '{target}'; using its GoogLeNet "
                       f"counterpart '{translate(target)}'.")
        target = translate(target)
    return target


def noise_image(size: tuple[int, int], scale: float, blur: float, seed: int) -> torch.Tensor:
    """Gaussian white noise (1, 3, H, W) of std `scale`, blurred over the two spatial axes only."""
    generator = torch.Generator().manual_seed(seed)
    # In place, and the filter's float32 result as it is: an 8K image is 400 MB a copy.
    noise = torch.randn((1, 3) + tuple(size), generator=generator).mul_(scale)
    if blur > 0:
        noise = torch.from_numpy(scipy.ndimage.gaussian_filter(
            noise.numpy(), sigma=(0, 0, blur, blur)))
    return noise
