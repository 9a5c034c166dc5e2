"""The workflows that write files, for Python and the command line alike: one picture, a
zoom sequence or dreamed video, a large job; and the model tools. Each takes the option
table's names as keywords (`cnnvis.settings`), as the command line takes them as flags:

    import cnnvis
    cnnvis.make(model="efficientnet_lite0", initial_image="photo.jpg", num_steps=50,
                output_file="dream.png", seed=0)

The same keywords give the same files, bit for bit, as the same command line;
`command_line` is the command to record in the pictures (default: the options' own).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from cnnvis import gallery, zoo
from cnnvis.arguments import parse
from cnnvis.batch import write_jobs
from cnnvis.errors import UserError
from cnnvis.files import expanded, image_files
from cnnvis.imageio import load_mean_colour, load_rgb
from cnnvis.own_model import is_own_model, own_model_file
from cnnvis.picture import write_picture
from cnnvis.recipes import RECIPES
from cnnvis.recording import option_flags
from cnnvis.request import Outcome, Request
from cnnvis.sequence import write_sequence
from cnnvis.settings import VIDEO_SUFFIXES, default


def make(*, command_line: Sequence[str] | None = None,
         progress: Callable[[int, int], None] | None = None,
         frame_done: Callable[[int, Path], None] | None = None, **options) -> Outcome:
    """Make what the options ask for: a zoom sequence or dreamed video (--frames,
    --input_video, a video --output_file), many pictures (a --target_neuron list, a folder
    or pattern of --initial_image files), or one picture.

    For a sequence made here (not in chunks), `progress(size_index, step)` is called at
    every step (raising `cnnvis.Interrupted` there stops the run as Ctrl-C does, keeping
    the finished frames), and `frame_done(number, png)` once each frame is in the folder
    and in the video."""
    request = Request.from_keywords(command_line, **options)
    command = request.command
    images = image_files(command.initial_image) if command.initial_image else None
    if (command.input_video or request.animation.frames > 1
            or request.output.suffix.lower() in VIDEO_SUFFIXES):
        _check_no_jobs(request, images, "a sequence", pools=False)   # a video's chunks use them
        return write_sequence(request, progress, frame_done)
    if progress is not None or frame_done is not None:
        raise TypeError("progress and frame_done are the callbacks of a zoom sequence or a "
                        "dreamed video; cnnvis.dream reports a picture's steps")
    _check_no_sequence(request)
    if request.neurons is not None or images is not None:
        return write_jobs(request, images)
    _check_no_jobs(request, images, "one picture")
    return write_picture(request)


def _check_no_jobs(request: Request, images: list[Path] | None, what: str,
                   pools: bool = True) -> None:
    """Refuse options of large jobs given to a command that makes `what` (and, with `pools`,
    those that say where jobs run)."""
    command = request.command
    if request.neurons is not None or images is not None:
        given = (f"--target_neuron {request.neurons}" if request.neurons is not None
                 else f"--initial_image {command.initial_image} (several images)")
        raise UserError(f"{given} makes many pictures, and this command makes {what}; give "
                        "a single neuron or image.")
    for name in request.changed(applies="jobs") if pools else ():
        raise UserError(f"--{name} runs the jobs of an atlas (--target_neuron 0-15) or of a "
                        f"folder of images (--initial_image photos/), and this command "
                        f"makes {what}; drop --{name}.")


def _check_no_sequence(request: Request) -> None:
    """Refuse options of sequences given to pictures: they would do nothing."""
    unused = [name for applies in ("zoom", "sequence", "video")
              for name in request.changed(applies=applies)]
    if unused:
        raise UserError(f"--{unused[0]} is an option of zoom sequences and dreamed videos, and "
                        "this command makes one picture; give --frames N or --input_video VIDEO "
                        "with an --output_file ending in .mp4, .webm or .gif, or drop "
                        f"--{unused[0]}.")


def replay(png: str | Path, *, command_line: Sequence[str] = (), **options) -> Outcome:
    """Run again the command recorded in a PNG that cnn-vis wrote (the same seed), with
    `options` (keywords) or `command_line` (flags) given beside it applying last."""
    flags = [*command_line]
    for name, value in options.items():
        flags += option_flags(name, value)
    values, argv = parse(["--replay", str(png), *flags])
    return make(command_line=argv, **values)


# --------------------------------------------------------------------------- model tools


def layer_gallery(model: str = default("model"), deploy_txt: str | None = None,
                  caffe_model: str | None = None, gpu: int = default("gpu")) -> Path:
    """The cached contact sheet of what each layer of a model does (`cnnvis.gallery`)."""
    request = Request.from_keywords(None, model=model, deploy_txt=deploy_txt,
                                    caffe_model=caffe_model, gpu=gpu)
    loaded = request.model_spec(None, zoo.select_device(gpu)).load()
    own = is_own_model(model)
    files = tuple(file for file in (request.command.deploy_txt, request.command.caffe_model,
                                    own_model_file(model) if own else None) if file)
    return gallery.layer_gallery(loaded, own_network=own or request.command.deploy_txt is not None,
                                 files=files)


def list_recipes() -> list[tuple[str, str, list[str]]]:
    """(name, what it makes, the models it chooses a layer for) of every recipe."""
    return [(recipe.name, recipe.description, list(recipe.models)) for recipe in RECIPES.values()]


def list_models() -> list[tuple[str, str, bool, str]]:
    """(name, what it was trained on, whether its weights are here, where they come from) of
    every preset."""
    return [(model.name, model.training_data, zoo.weights_present(model),
             model.weights.url if model.weights else "Python package (installed with cnn-vis)")
            for model in zoo.PRESETS.values()]


def download(name: str) -> Path | None:
    """Download preset `name`'s weights into the cache, if they are not there; their path
    (None: they come with an installed Python package)."""
    return zoo.download(zoo.preset(name))


def layer_notes(model: str = default("model"), deploy_txt: str | None = None) -> dict[str, str]:
    """What amplifying each layer of a preset looks like (from its layer gallery); none for a
    network of one's own."""
    if deploy_txt or is_own_model(model):
        return {}
    return zoo.looks_like(zoo.preset(model), [name for name, _ in list_layers(model)])


def list_layers(model: str = default("model"), deploy_txt: str | None = None
                ) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every targetable blob of a model, from its architecture alone (no
    weights): shapes (C, ...) for one image of the network's input size."""
    network = zoo.ModelSpec(model, expanded(deploy_txt)).architecture()
    with torch.no_grad():
        blobs = network.blobs(torch.zeros((1, 3) + tuple(network.input_size)))
    return [(name, tuple(value.shape[1:])) for name, value in blobs.items()]


def classify(image: str | Path | np.ndarray, *, top: int = 5, mean_image: str | None = None,
             **model) -> list[tuple[int, float, str]]:
    """The model's `top` classes of `image` (a file, or uint8 RGB): (index, value, label).
    `model` takes the model options (model, deploy_txt, caffe_model, gpu, backend,
    precision)."""
    request = Request.from_keywords(None, **model)
    photo = load_rgb(image) if isinstance(image, (str, Path)) else image
    mean_bgr = load_mean_colour(mean_image) if mean_image else None
    spec = request.model_spec(mean_bgr, zoo.select_device(request.command.gpu))
    return spec.load().classify(photo, top)
