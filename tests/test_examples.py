"""The gallery scripts (the 13 of 2015 and those beyond it): their options are valid, and each
runs (quickly, offline) to an image."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cnnvis import zoo
from cnnvis.arguments import parse
from cnnvis.request import Request
from cnnvis.sizes import check_min_size, parse_size, size_sequence

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [ROOT / "examples" / f"example{n}.sh" for n in range(1, 14)]
BEYOND = sorted((ROOT / "examples").glob("beyond_*.sh"))


def script_arguments(script: Path) -> list[str]:
    """The options a script passes to cnn_vis.py (between `cnn_vis.py \\` and "$@")."""
    text = script.read_text()
    body = re.search(r'cnn_vis\.py \\\n(.*?)"\$@"', text, re.S).group(1)
    return shlex.split(body.replace("\\\n", " "))


@pytest.fixture(scope="module")
def inputs():
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_inputs.py")], check=True,
                   capture_output=True)
    return ROOT / "examples" / "inputs"


@pytest.mark.parametrize("script", SCRIPTS + BEYOND, ids=lambda p: p.stem)
def test_script_sizes_fit_the_network_and_the_2015_scale(script, inputs):
    given, _ = parse(script_arguments(script))   # a recipe's options under those given
    request = Request.from_keywords(**{k: v for k, v in given.items() if k != "replay"})
    args, command = request.dream, request.command
    preset = zoo.preset(command.model)
    assert set(args.target_layer.split(",")) <= set(zoo.architecture(preset).blob_names)
    base = preset.input_size
    if command.initial_image:
        with Image.open(ROOT / command.initial_image) as photo:
            base = photo.size[::-1]
    sizes = size_sequence(parse_size(args.initial_size, base), parse_size(args.final_size, base),
                          args.num_sizes, args.resize_type)
    check_min_size(sizes, preset.input_size, base)
    # Final images about as large as the 2015 gallery's (at least ~450 px on the long side).
    assert max(sizes[-1]) >= 450


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_script_runs_with_quick_overrides(script, inputs, tmp_path):
    out = tmp_path / "out.png"
    quick = ["--model", "efficientnet_lite0", "--gpu", "-1", "--num_steps", "1",
             "--initial_size", "224x224", "--final_size", "224x240", "--num_sizes", "2",
             "--batch_size", "4", "--iter_behavior", "", "--seed", "0", "--output_file", str(out)]
    result = subprocess.run(["bash", str(script), *quick], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (240, 224)
        assert "--target_layer" in image.text["cnn-vis:command"]


def test_there_is_a_script_for_each_control_beyond_2015():
    assert [p.stem for p in BEYOND] == [f"beyond_{name}" for name in
                                        ("channels", "colors", "guide", "jitter", "layers", "mask")]


@pytest.mark.parametrize("script", BEYOND, ids=lambda p: p.stem)
def test_beyond_script_runs_with_quick_overrides(script, inputs, tmp_path):
    out = tmp_path / "out.png"
    quick = ["--model", "efficientnet_lite0", "--gpu", "-1", "--num_steps", "1",
             "--iter_behavior", "", "--seed", "0", "--output_file", str(out)]
    result = subprocess.run(["bash", str(script), *quick], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (451, 300)


ANIMATIONS = sorted((ROOT / "examples").glob("animation_*.sh"))


@pytest.mark.parametrize("script", ANIMATIONS, ids=lambda p: p.stem)
def test_animation_script_runs_with_quick_overrides(script, inputs, tmp_path):
    out = tmp_path / "out.gif"
    few_frames = ["--frames", "2"] if "zoom" in script.stem else ["--end_frame", "2"]
    quick = ["--model", "efficientnet_lite0", "--gpu", "-1", "--num_steps", "1",
             "--frame_steps", "1", "--iter_behavior", "", "--seed", "0", "--output_file",
             str(out), *few_frames]
    result = subprocess.run(["bash", str(script), *quick], cwd=tmp_path, capture_output=True,
                            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as gif:
        assert gif.n_frames == 2
    assert len(list((tmp_path / "out_frames").glob("*.png"))) == 2
