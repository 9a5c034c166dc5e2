"""Recipes are data: valid options for every model they name, applied before the options
given beside them, and absent unless asked for."""
import logging

import pytest
from PIL import Image

from cnnvis import zoo
from cnnvis.cli import main
from cnnvis.recipes import RECIPES, recipe_options
from cnnvis.request import Request
from cnnvis.settings import default
from tests.cli_contract import refused


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_is_valid_for_every_model_it_names(name):
    for model in RECIPES[name].models:
        request = Request.from_keywords(None, model=model, **recipe_options(name, model))
        layer = request.dream.target_layer or zoo.preset(model).default_layer
        assert layer in zoo.architecture(zoo.preset(model)).blob_names, (name, model, layer)


def test_options_beside_a_recipe_apply_last():
    request = Request.from_keywords(None, model="efficientnet_lite0", recipe="dream", num_steps=3,
                                    initial_image="photo.jpg")
    assert request.dream.num_steps == 3 and request.dream.p_reg == 0.005
    assert request.command.iter_behavior == "print"
    plain = Request.from_keywords(None, model="efficientnet_lite0", num_steps=3)
    assert plain.dream.p_reg == default("p_reg") and plain.command.iter_behavior == "save+print"


def test_a_network_without_tuned_values_gets_efficientnets_said_once(tiny, tmp_path, caplog,
                                                                     capsys):
    with caplog.at_level(logging.WARNING, logger="cnnvis"):
        assert main(tiny + ["--recipe", "subtle", "--num_steps", "1", "--initial_size", "",
                            "--final_size", "", "--num_sizes", "1"]) == 0
    notices = [r.message for r in caplog.records if "no values tuned" in r.message]
    assert len(notices) == 1 and "efficientnet_lite0" in notices[0]
    command = Image.open(tmp_path / "out.png").text["cnn-vis:command"]
    assert "--recipe subtle" in command


def test_an_unknown_recipe_lists_the_recipes(tiny, capsys, output):
    refused(tiny + ["--recipe", "psychedelic"], capsys, output, "unknown recipe 'psychedelic'",
            "subtle, dream, intense, neuron")


def test_list_recipes_describes_each(capsys):
    assert main(["--list_recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
    assert all("efficientnet_lite0" in line for line in lines)


def test_a_photo_recipe_from_noise_says_what_to_give(tiny, capsys, output):
    refused(tiny + ["--recipe", "dream"], capsys, output, "--recipe dream dreams on a photo",
            "--initial_image", "--recipe neuron")
