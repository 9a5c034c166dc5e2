"""The Python API's pictures in memory: load a model, dream a picture.

    import cnnvis
    model = cnnvis.load_model("efficientnet_lite0")
    image = cnnvis.dream("photo.jpg", model, seed=0, num_steps=50, tv_reg=0.05)
    image.save("dream.png")

The workflows that write files (`cnnvis.write_picture`, `write_sequence`, `write_jobs`)
and the command line are built on the same planning (`cnnvis.plan`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from cnnvis import own_model, zoo
from cnnvis.errors import UserError
from cnnvis.imageio import ImageInput, as_photo
from cnnvis.model import VisModel
from cnnvis.optimizer import Report
from cnnvis.pixels import Picture
from cnnvis.recipes import recipe_options
from cnnvis.plan import (build_objective, check_combinations, check_model, grey_mask, new_seed,
                         plan_picture, run_plan)
from cnnvis.settings import DreamOptions, check_seed, default


def load_model(name: str | Path | torch.nn.Module = default("model"), *,
               deploy_txt: str | Path | None = None, caffe_model: str | Path | None = None,
               device: torch.device | str | None = None, backend: str = default("backend"),
               mean_bgr: tuple[float, float, float] | None = None,
               precision: str = default("precision"),
               input_size: tuple[int, int] | None = None, channel_order: str | None = None,
               mean: tuple[float, float, float] | None = None,
               std: tuple[float, float, float] | None = None,
               labels: list[str] | None = None) -> VisModel:
    """A network ready to dream with: a preset by `name` (see `cnnvis.zoo.PRESETS`), or Caffe
    files (`deploy_txt`, `caffe_model`) that replace the preset's; or a network of one's own:
    an `nn.Module`, an ONNX file ("model.onnx"), "file.py:function", "torchvision:NAME" or
    "timm:NAME".

    `device`: None for the GPU when there is one, else the CPU; or "cpu", "cuda:N", "mps"
    (one this machine lacks is a UserError naming those it has). `backend`: "torch", or
    "caffe" for real Caffe (pycaffe). `mean_bgr` replaces the model's mean colour.
    `precision`: "fp32", or "bf16" (CUDA, or a CPU with AVX-512 BF16) or "fp16" (CUDA) for
    faster, less exact network work; the image and the optimiser stay float32.
    Missing preset weights are downloaded into the cache ($CNN_VIS_HOME).

    For a network of one's own, its images are RGB in 0..1 minus `mean` over `std` (both
    per channel, in the network's `channel_order`; default ImageNet's, as torchvision and
    timm take them) at `input_size` (height, width; default 224x224), unless its file or
    library says otherwise; `labels` name its last layer's outputs (`cnnvis.own_model`).
    """
    if isinstance(name, torch.nn.Module) or own_model.is_own_model(name):
        own_model.check_own_choices(type(name).__name__ if isinstance(name, torch.nn.Module)
                                    else str(name), deploy_txt, caffe_model, backend)
        return own_model.load_own_model(
            name, input_size=input_size, channel_order=channel_order, mean=mean, std=std,
            labels=labels, precision=precision, mean_bgr=mean_bgr,
            device=zoo.default_device() if device is None else zoo.torch_device(device))
    given = [k for k, v in (("input_size", input_size), ("channel_order", channel_order),
                            ("mean", mean), ("std", std), ("labels", labels)) if v is not None]
    if given:
        raise UserError(f"{', '.join(given)}: for a network of one's own (an nn.Module, or "
                        f"model.onnx); preset {name!r} has its own.")
    return zoo.ModelSpec(name, deploy_txt, caffe_model, backend, mean_bgr, device,
                         precision=precision).load()


def dream(image: ImageInput, model: VisModel, *, seed: int | None = None,
          callback: Callable[[Report], None] | None = None,
          progress: Callable[[int, int], None] | bool | None = None, **options) -> Image.Image:
    """Dream on `image` with `model`; returns the picture as an 8-bit RGB PIL image.

    `image`: a file path, a PIL image, a uint8 RGB array (H, W, 3), or None to start from
    noise at the network's input size. `options`: the command line's option names with its
    defaults (`target_layer=`, `num_steps=`, `initial_size=`, `tv_reg=`, ...; see
    `cnnvis.DreamOptions`). `callback(report)` runs every `output_iter` steps with the
    step, size, losses and the current picture; `progress(size_index, step)` after every
    step, or `progress=True` for a progress bar (tqdm's, a widget in a notebook). `recipe=`
    names a recipe (--recipe; options given beside it apply over it). `guide=` and `mask=`
    take images as `image` does (the command line's
    --guide_image and --mask; a mask may also be a uint8 array H x W). The same seed and
    options give the same pixels as the command line.
    """
    return render(image, model, seed=seed, callback=callback, progress=progress, **options).pil()


def render(image: ImageInput, model: VisModel, *, seed: int | None = None,
           callback: Callable[[Report], None] | None = None,
           progress: Callable[[int, int], None] | bool | None = None,
           guide: ImageInput = None, mask: ImageInput = None, recipe: str | None = None,
           **options) -> Picture:
    """`dream`, returning a `Picture`: the float image itself (for 16-bit prints or further
    work) and the seed that made it. `recipe` (see `cnnvis.recipes`) sets its options
    first; the `options` given apply over them.

    A run stopped by Ctrl-C raises `Interrupted`, and one whose image stops being finite
    `NonFiniteImage`; both carry the last good picture as `.picture`.
    """
    check_model(model)
    if recipe is not None:
        picture_options = {f.name for f in dataclasses.fields(DreamOptions)}
        options = {**{name: value for name, value in recipe_options(
            recipe, model.name, photo=image is not None or "initial_size" in options).items()
            if name in picture_options}, **options}
    settings = DreamOptions.from_keywords(options)
    seed = check_seed(seed)
    photo = None if image is None else as_photo(image)
    guide_rgb = None if guide is None else as_photo(guide, "--guide_image")
    mask_grey = None if mask is None else grey_mask(mask)
    check_combinations(settings, photo is not None, guide_rgb is not None)
    plan = plan_picture(settings, photo, mask_grey, model.input_size, model.device,
                        new_seed() if seed is None else seed)
    objective = build_objective(model, settings, guide_rgb)
    if progress is not True:
        return run_plan(plan, model, objective, callback=callback, progress=progress or None)
    # A bar that knows its total, drawn as a widget in a notebook and as text elsewhere.
    from tqdm.auto import tqdm
    with tqdm(total=len(plan.sizes) * settings.num_steps, unit="step") as bar:
        return run_plan(plan, model, objective, callback=callback,
                        progress=lambda size_index, step: bar.update(1))
