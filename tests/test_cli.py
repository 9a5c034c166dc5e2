"""End to end through the command line, on a tiny Caffe network written by the test."""
import hashlib
import shlex

import numpy as np
import pytest
from PIL import Image

from cnnvis.cli import main


def digest(path) -> str:
    """The pixels' digest (the PNG text differs: it records the command, output name included)."""
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


@pytest.mark.parametrize("image_type", ["amplify_layer", "amplify_neuron"])
def test_noise_start_several_sizes_is_reproducible_with_seed(tmp_path, tiny_model, image_type):
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.png"
        args = tiny_model + ["--image_type", image_type, "--target_neuron", "3", "--num_sizes", "3",
                             "--initial_size", "16x16", "--final_size", "x2", "--num_steps", "4",
                             "--output_iter", "2", "--iter_behavior", "save", "--seed", "7",
                             "--learning_rate", "2", "--initialization_blur", "1",
                             "--output_file", str(out)]
        assert main(args) == 0
        outputs.append(out)
    assert digest(outputs[0]) == digest(outputs[1])
    with Image.open(outputs[0]) as image:
        assert image.size == (32, 32)   # final size x2 of the 16x16 network input
        assert image.text["cnn-vis:seed"] == "7"
        assert "--image_type " + image_type in image.text["cnn-vis:command"]
    # Sizes 16 -> 23 -> 32 (geometric), intermediate files {stem}_{size}_{step}.
    saved = sorted(p.name for p in tmp_path.glob("a_*.png"))
    assert saved == [f"a_{size}_{step}.png" for size in (1, 2, 3) for step in (2, 4)]
    with Image.open(tmp_path / "a_2_4.png") as image:
        assert image.size == (23, 23)


def test_different_seeds_differ_and_the_recorded_command_reproduces_the_image(tmp_path, tiny_model):
    first, second, again = tmp_path / "1.png", tmp_path / "2.png", tmp_path / "again.png"
    common = tiny_model + ["--num_steps", "3", "--iter_behavior", ""]
    assert main(common + ["--output_file", str(first)]) == 0    # seed chosen and recorded
    assert main(common + ["--seed", "123", "--output_file", str(second)]) == 0
    assert digest(first) != digest(second)
    with Image.open(first) as image:
        recorded = shlex.split(image.text["cnn-vis:command"])[1:]
    index = recorded.index("--output_file")
    recorded[index + 1] = str(again)
    assert main(recorded) == 0
    assert digest(again) == digest(first)


def test_image_start_moves_towards_the_objective_and_keeps_the_photo(tmp_path, tiny_model, photo):
    out = tmp_path / "dream.png"
    args = tiny_model + ["--initial_image", str(photo), "--initial_size", "x1", "--final_size", "x1.5",
                         "--num_sizes", "2", "--num_steps", "5", "--learning_rate", "1",
                         "--alpha", "2", "--p_reg", "0.001", "--tv_reg", "0.01", "--iter_behavior", "",
                         "--seed", "0", "--output_file", str(out)]
    assert main(args) == 0
    with Image.open(out) as image:
        assert image.size == (45, 30)
        result = np.asarray(image, np.float64)
    reference = np.asarray(Image.open(photo).resize((45, 30), Image.BICUBIC), np.float64)
    difference = np.abs(result - reference).mean()
    assert 0.5 < difference < 40   # changed, but still the photo


def test_rescale_image_uses_the_full_range(tmp_path, tiny_model):
    out = tmp_path / "r.png"
    assert main(tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--rescale_image",
                              "--initialization_scale", "5", "--output_file", str(out)]) == 0
    pixels = np.asarray(Image.open(out))
    assert pixels.min() == 0 and pixels.max() == 255


def test_print_and_plot_without_display_write_files(tmp_path, tiny_model, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "o.png"
    assert main(tiny_model + ["--num_steps", "4", "--output_iter", "2",
                              "--iter_behavior", "print+show+plot_pix", "--output_file", str(out)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("size 1/1")]
    assert len(lines) == 2 and "step 2:" in lines[0] and "objective=" in lines[0]
    assert err.count("No display") == 1
    for suffix in ("show", "pix"):
        with Image.open(tmp_path / f"o_{suffix}.png") as figure:
            assert figure.size[0] > 100


def test_both_spellings_of_renamed_flags(tmp_path, tiny_model):
    outputs = []
    for spelling in (["--l1_weight", "2", "--l2_weight", "0.5", "--grad_clip", "3",
                      "--learning_rate_decay_factor", "0.5"],
                     ["--amplify_l1_weight=2", "--amplify_l2_weight=0.5", "--amplify_grad_clip=3",
                      "--learning_rate_decay_fraction=0.5"]):
        out = tmp_path / f"{len(outputs)}.png"
        assert main(tiny_model + spelling + ["--num_steps", "3", "--learning_rate_decay_iter", "1",
                                             "--seed", "1", "--iter_behavior", "",
                                             "--output_file", str(out)]) == 0
        outputs.append(digest(out))
    assert outputs[0] == outputs[1]


def test_caffe_root_and_home_expand_in_model_paths(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("CAFFE_ROOT", str(tmp_path))
    args = list(tiny_model)
    args[1] = "$CAFFE_ROOT/deploy.prototxt"
    out = tmp_path / "e.png"
    assert main(args + ["--num_steps", "1", "--iter_behavior", "", "--output_file", str(out)]) == 0
    assert out.exists()
