"""Recipes: named sets of options that make a striking picture at once, tuned per model.

A recipe is data: the options it sets, for every model and per model where the strengths
must differ (a network's gradient scale decides what --p_reg and --tv_reg mean). Options
given beside a recipe apply last; with no recipe, every option keeps its 2015 default.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cnnvis.errors import UserError

logger = logging.getLogger("cnnvis")

TUNED_ON = "efficientnet_lite0"   # the model whose values stand in for a model without its own


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    options: Mapping[str, object]                       # for every model
    models: Mapping[str, Mapping[str, object]] = field(default_factory=dict)   # over `options`


# Octaves from 0.6 of the photo's size, jitter against the tile grid, and a print every
# size instead of intermediate pictures.
_PHOTO = {"initial_size": "x0.6", "final_size": "x1", "num_sizes": 2, "alpha": 2.0,
          "iter_behavior": "print"}
_GOOGLENET = ("bvlc_googlenet", "googlenet_places205", "googlenet_places365")

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in [
    Recipe("subtle", "the photo stays clearly itself, with fine patterns on its textures",
           {**_PHOTO, "num_steps": 10, "jitter": 8},
           {"efficientnet_lite0": {"learning_rate": 4.0, "p_reg": 0.02, "tv_reg": 0.005},
            **{name: {"decay_rate": 0.9, "p_reg": 2.0, "beta": 2.5, "tv_reg": 0.05}
               for name in _GOOGLENET}}),
    Recipe("dream", "the classic DeepDream look: eyes, animal faces and swirls over a "
           "recognisable photo", {**_PHOTO, "num_steps": 30, "jitter": 8},
           {"efficientnet_lite0": {"learning_rate": 10.0, "p_reg": 0.005, "tv_reg": 0.005},
            # The 2015 gallery's photo settings.
            **{name: {"decay_rate": 0.9, "p_reg": 0.5, "beta": 2.5, "tv_reg": 0.05}
               for name in _GOOGLENET}}),
    Recipe("intense", "the photo dissolves into the dream: a deeper layer, three sizes, "
           "more steps", {**_PHOTO, "num_sizes": 3, "num_steps": 40, "jitter": 16},
           {"efficientnet_lite0": {"target_layer": "stage6/block2", "learning_rate": 12.0,
                                   "p_reg": 0.0005, "tv_reg": 0.003},
            **{name: {"target_layer": "inception_4e/output", "decay_rate": 0.9, "p_reg": 0.05,
                      "beta": 2.5, "tv_reg": 0.02} for name in _GOOGLENET}}),
    Recipe("neuron", "one neuron's pattern from noise, for atlases (--target_neuron 0-15)",
           {"image_type": "amplify_neuron", "num_steps": 40, "decay_rate": 0.9, "p_reg": 0.0,
            "tv_reg": 0.0, "jitter": 8, "rescale_image": True, "initialization_scale": 10.0,
            "initialization_blur": 2.0, "iter_behavior": "print"},
           {"efficientnet_lite0": {"target_layer": "stage4/block3", "learning_rate": 4.0},
            **{name: {"target_layer": "inception_4c/output", "learning_rate": 4.0}
               for name in _GOOGLENET}}),
]}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise UserError(f"unknown recipe '{name}'; --recipe takes one of: {', '.join(RECIPES)} "
                        "(--list_recipes describes them).")
    return RECIPES[name]


def recipe_options(name: str, model: str, own_network: bool = False,
                   photo: bool = True) -> dict[str, object]:
    """The options recipe `name` sets for `model` (a preset's name); for a network of the
    user's own (`own_network`) or a model the recipe has no values for, those tuned on
    efficientnet_lite0, said once. Without a `photo`, only a recipe for noise will do."""
    chosen = recipe(name)
    if not photo and "initial_size" in chosen.options:
        raise UserError(f"--recipe {name} dreams on a photo; give --initial_image (or "
                        "--input_video), or use --recipe neuron to start from noise.")
    if own_network or model not in chosen.models:
        logger.warning(f"cnn-vis: the recipe '{name}' has no values tuned for "
                       f"{'this network' if own_network else model}; using those of {TUNED_ON} "
                       "(adjust --p_reg and --tv_reg if the dream is too faint or too strong).")
        model = TUNED_ON
    return {**chosen.options, **chosen.models[model]}
