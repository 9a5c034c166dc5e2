"""Recipes: named sets of options that make a striking picture at once, on any model.

A recipe is data: the options it sets for every model, and per model only the layer where
it must differ. Its strengths mean the same on every network because a recipe calibrates
the objective's gradient (--calibrate). Options given beside a recipe apply
last; with no recipe, every option keeps its 2015 default.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cnnvis.errors import UserError

logger = logging.getLogger("cnnvis")

@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    options: Mapping[str, object]                       # for every model
    models: Mapping[str, Mapping[str, object]] = field(default_factory=dict)   # over `options`


# Octaves from 0.6 of the photo's size, jitter against the tile grid, a print every size
# instead of intermediate pictures, and the objective's gradient calibrated, so that one
# set of strengths gives a comparable dream on every network.
_PHOTO = {"initial_size": "x0.6", "final_size": "x1", "num_sizes": 2, "alpha": 2.0,
          "iter_behavior": "print", "calibrate": True}
_GOOGLENET = ("bvlc_googlenet", "googlenet_places205", "googlenet_places365")

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in [
    Recipe("subtle", "the photo stays clearly itself, with fine patterns on its textures",
           {**_PHOTO, "num_steps": 10, "jitter": 8, "learning_rate": 4.0, "p_reg": 0.01,
            "tv_reg": 0.0026}),
    Recipe("dream", "the classic DeepDream look: eyes, animal faces and swirls over a "
           "recognisable photo", {**_PHOTO, "num_steps": 30, "jitter": 8, "learning_rate": 10.0,
                                  "p_reg": 0.0026, "tv_reg": 0.0026}),
    Recipe("intense", "the photo dissolves into the dream: a deeper layer, three sizes, "
           "more steps", {**_PHOTO, "num_sizes": 3, "num_steps": 40, "jitter": 16,
                          "learning_rate": 12.0, "p_reg": 0.00045, "tv_reg": 0.0027},
           {"efficientnet_lite0": {"target_layer": "stage6/block2"},
            **{name: {"target_layer": "inception_4e/output"} for name in _GOOGLENET}}),
    Recipe("neuron", "one neuron's pattern from noise, for atlases (--target_neuron 0-15)",
           {"image_type": "amplify_neuron", "num_steps": 40, "decay_rate": 0.9, "p_reg": 0.0,
            "tv_reg": 0.0, "jitter": 8, "rescale_image": True, "initialization_scale": 10.0,
            "initialization_blur": 2.0, "iter_behavior": "print", "learning_rate": 4.0},
           {"efficientnet_lite0": {"target_layer": "stage4/block3"},
            **{name: {"target_layer": "inception_4c/output"} for name in _GOOGLENET}}),
]}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"unknown recipe '{name}'; --recipe takes one of: {', '.join(RECIPES)} "
                        "(--list_recipes describes them).")
    return RECIPES[name]


def recipe_options(name: str, model: str, own_network: bool = False,
                   photo: bool = True) -> dict[str, object]:
    """The options recipe `name` sets for `model` (a preset's name, or the preset whose
    files a network of the user's own replaces: `own_network`). Where the recipe names
    layers per model and has none for this one, the network's default layer (or
    --target_layer) is amplified, said once. Without a `photo`, only a recipe for noise
    will do."""
    chosen = recipe(name)
    if not photo and "initial_size" in chosen.options:
        raise UserError(f"--recipe {name} dreams on a photo; give --initial_image (or "
                        "--input_video), or use --recipe neuron to start from noise.")
    if not chosen.models:
        return dict(chosen.options)
    if own_network or model not in chosen.models:
        logger.warning(f"cnn-vis: the recipe '{name}' has no layer chosen for "
                       f"{'this network' if own_network else model}; it amplifies the default "
                       "layer, or the one --target_layer names, with the objective calibrated "
                       "to it (--list_layers shows the layers).")
        return dict(chosen.options)
    return {**chosen.options, **chosen.models[model]}
