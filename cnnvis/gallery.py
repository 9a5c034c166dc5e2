"""The layer gallery: what each targetable layer of a model does, to a standard photo and
from noise, as one contact sheet with the layer names. Made once per model and cached in
the cache folder ($CNN_VIS_HOME), so that choosing a layer is a look, not an experiment.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import skimage.data

from cnnvis import api
from cnnvis.download import cache_dir
from cnnvis.imageio import make_folder, save_png
from cnnvis.jobfiles import save_contact_sheet
from cnnvis.model import VisModel
from cnnvis.pixels import resize_rgb
from cnnvis.recipes import recipe_options
from cnnvis.settings import DreamOptions

GALLERY_STEPS = 10
VERSION = "2"   # of the gallery's settings: a change makes every cached sheet anew


def layer_gallery(model: VisModel, *, own_network: bool = False, seed: int = 0,
                  files: tuple[str, ...] = ()) -> Path:
    """The contact sheet of `model`'s layers (a cached PNG): each layer with a spatial
    extent, amplified with the `dream` recipe's strengths on skimage's coffee photo and
    from noise, for a few steps at the network's input size. `files` are the network's
    own files, if any: a sheet is made again when one of them changes."""
    folder, layers, tuned = _cache(model, own_network, seed, files)
    sheet = folder / "gallery.png"
    if sheet.is_file():
        return sheet
    make_folder(folder, "the gallery's folder")
    photo = resize_rgb(_square(skimage.data.coffee()), model.input_size)
    pictures = []
    for number, layer in enumerate(layers):
        for start, image in (("photo", photo), ("noise", None)):
            path = _layer_file(folder, number, start)
            if not path.is_file():
                # From noise the pattern is faint: its range is stretched to be seen.
                picture = api.render(image, model, seed=seed, target_layer=layer,
                                     num_steps=GALLERY_STEPS, output_iter=GALLERY_STEPS,
                                     **{**tuned, "rescale_image": image is None})
                save_png(path, picture.rgb())
            pictures.append((f"{layer} {start}", path))
    save_contact_sheet(sheet, pictures, {"Software": "cnn-vis", "cnn-vis:model": model.name})
    return sheet


def layer_picture_files(model: VisModel, *, own_network: bool = False, seed: int = 0,
                        files: tuple[str, ...] = ()) -> dict[str, Path]:
    """Where the gallery of `model` keeps each layer's picture amplified on the photo, made
    or not."""
    folder, layers, _ = _cache(model, own_network, seed, files)
    return {layer: _layer_file(folder, number, "photo") for number, layer in enumerate(layers)}


def cached_layer_pictures(model: VisModel, **gallery) -> dict[str, Path]:
    """The layers of `model` whose gallery picture (amplified on the photo) is in the cache
    already, and its file: a look, making nothing. `gallery`: `layer_picture_files`'."""
    return {layer: path for layer, path in layer_picture_files(model, **gallery).items()
            if path.is_file()}


def any_cached(model_name: str) -> bool:
    """Whether a gallery of a model of this name was begun in the cache (a look that loads
    no model)."""
    folder = cache_dir() / "gallery"
    return folder.is_dir() and any(path.name.startswith(f"{model_name}-")
                                   for path in folder.iterdir())


def _cache(model: VisModel, own_network: bool, seed: int,
           files: tuple[str, ...]) -> tuple[Path, list[str], dict[str, object]]:
    """The gallery's folder in the cache, its layers and the recipe's strengths it uses."""
    dream_names = {f.name for f in dataclasses.fields(DreamOptions)}
    tuned = {name: value for name, value in recipe_options("dream", model.name, own_network).items()
             if name in dream_names and name not in ("initial_size", "final_size", "num_sizes",
                                                     "num_steps", "target_layer")}
    layers = [name for name, shape in model.layers() if len(shape) == 3 and min(shape[1:]) > 1]
    identity = [(str(Path(file).resolve()), Path(file).stat().st_size,
                 Path(file).stat().st_mtime_ns) for file in files]
    key = hashlib.sha256(repr((VERSION, model.name, layers, sorted(tuned.items()), seed,
                               identity)).encode()).hexdigest()[:12]
    return cache_dir() / "gallery" / f"{model.name}-{key}", layers, tuned


def _layer_file(folder: Path, number: int, start: str) -> Path:
    """The picture of layer `number` amplified on the photo or from noise (`start`)."""
    return folder / f"{number:03d}-{start}.png"


def _square(rgb: np.ndarray) -> np.ndarray:
    """The centre square of a photo."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return rgb[top:top + side, left:left + side]

