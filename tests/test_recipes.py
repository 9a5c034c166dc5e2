"""Recipes are data: valid options for every model they name, applied before the options
given beside them, and absent unless asked for; their calibration makes one set of
strengths dream alike on different networks."""
import logging

import numpy as np
import pytest
import skimage.data
from PIL import Image

import cnnvis
from cnnvis import zoo
from cnnvis.cli import main
from cnnvis.recipes import RECIPES, recipe_options
from cnnvis.request import Request
from cnnvis.settings import default
from cnnvis.pixels import resize_rgb
from tests.caffe_files import NSFW_FOLDER, needs_nsfw
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
    assert request.dream.num_steps == 3 and request.dream.p_reg == RECIPES["dream"].options["p_reg"]
    assert request.dream.calibrate
    assert request.command.iter_behavior == "print"
    plain = Request.from_keywords(None, model="efficientnet_lite0", num_steps=3)
    assert plain.dream.p_reg == default("p_reg") and plain.command.iter_behavior == "save+print"


def test_a_network_without_a_chosen_layer_gets_its_own_said_once(tiny, tmp_path, caplog, capsys):
    small = ["--num_steps", "1", "--initial_size", "", "--final_size", "", "--num_sizes", "1"]
    with caplog.at_level(logging.WARNING, logger="cnnvis"):
        assert main(tiny + ["--recipe", "subtle"] + small) == 0    # it chooses no layer
        assert main(tiny + ["--recipe", "intense"] + small) == 0
    notices = [r.message for r in caplog.records if "recipe" in r.message]
    assert len(notices) == 1 and "'intense' has no layer chosen for this network" in notices[0]
    command = Image.open(tmp_path / "out.png").text["cnn-vis:command"]
    assert "--recipe intense" in command


def test_an_unknown_recipe_lists_the_recipes(tiny, capsys, output):
    refused(tiny + ["--recipe", "psychedelic"], capsys, output, "unknown recipe 'psychedelic'",
            "subtle, dream, intense, neuron")


def test_list_recipes_describes_each(capsys):
    assert main(["--list_recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
    assert all(RECIPES[line.split()[0]].description in line for line in lines)
    assert "its layer chosen for efficientnet_lite0, bvlc_googlenet" in lines[2]


def test_a_photo_recipe_from_noise_says_what_to_give(tiny, capsys, output):
    refused(tiny + ["--recipe", "dream"], capsys, output, "--recipe dream dreams on a photo",
            "--initial_image", "--recipe neuron")


def test_calibration_takes_away_the_objectives_scale(model_files):
    """With --calibrate, an objective 1000 times larger dreams the same picture (each tile's
    gradient is divided by its own size); without, the regularisers lose against it."""
    deploy, weights = model_files
    tiny = cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")
    photo = np.random.default_rng(2).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    pictures = {(calibrate, weight): cnnvis.render(
        photo, tiny, seed=0, target_layer="conv2", num_steps=5, p_reg=0.05, tv_reg=0.05,
        alpha=2.0, calibrate=calibrate, l1_weight=weight, l2_weight=weight, grad_clip=1e6).image
        for calibrate in (False, True) for weight in (1.0, 1000.0)}
    assert (pictures[True, 1.0] - pictures[True, 1000.0]).abs().max() < 1e-3
    assert (pictures[False, 1.0] - pictures[False, 1000.0]).abs().mean() > 1.0
    assert cnnvis.render(photo, tiny, seed=0, target_layer="conv2", num_steps=5,
                         calibrate=True).rgb().tobytes() == cnnvis.render(
        photo, tiny, seed=0, target_layer="conv2", num_steps=5, calibrate=True).rgb().tobytes()


@needs_nsfw
def test_a_recipe_dreams_as_strongly_on_two_networks():
    """The dream recipe's strength (mean |dream - photo| in grey levels) on efficientnet_lite0
    (ReLU6: bounded activations) and open_nsfw's ResNet-50 (unbounded sums) stays within
    1.5x; the same options uncalibrated are 3x or more apart. (Fewer steps and one size
    here; benchmarks/bench.py [strength] measures the recipes as they are.)"""
    models = {"efficientnet_lite0": (cnnvis.load_model("efficientnet_lite0", device="cpu"), None),
              "open_nsfw": (cnnvis.load_model(deploy_txt=NSFW_FOLDER / "deploy.prototxt",
                                              caffe_model=NSFW_FOLDER / "resnet_50_1by2_nsfw.caffemodel",
                                              device="cpu"), "eltwise_stage2_block2")}
    photo = resize_rgb(skimage.data.chelsea()[:, 75:375], (224, 224))   # one tile
    options = {**recipe_options("dream", "efficientnet_lite0"), "initial_size": "",
               "final_size": "", "num_sizes": 1, "num_steps": 12}
    options.pop("iter_behavior")
    strength = {}
    for calibrate in (True, False):
        for name, (model, layer) in models.items():
            dream = cnnvis.dream(photo, model, seed=0, **{**options, "calibrate": calibrate,
                                                          "target_layer": layer})
            strength[calibrate, name] = np.abs(np.asarray(dream, dtype=float) - photo).mean()
    calibrated = [strength[True, name] for name in models]
    plain = [strength[False, name] for name in models]
    assert max(calibrated) / min(calibrated) <= 1.5 and min(calibrated) > 3, strength
    assert max(plain) / min(plain) >= 3, strength
