"""Networks of one's own by name: file.py:function, torchvision:NAME and timm:NAME (the
libraries stood in for by small modules), what workers are sent, and the command line."""
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import cnnvis
from cnnvis.cli import main
from cnnvis import gallery, own_model, zoo
from cnnvis.errors import UserError
from cnnvis.own_model import is_own_model
from tests.cli_contract import refused

ROOT = Path(__file__).resolve().parent.parent

MODEL_CODE = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))

def broken():
    raise ValueError("the weights file moved")

def not_a_network():
    return 42
"""


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(MODEL_CODE)
    return path


def tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def stand_in_torchvision() -> types.ModuleType:
    """What cnn-vis uses of torchvision: list_models, get_model_weights, get_model."""
    weights = types.SimpleNamespace(
        transforms=lambda: types.SimpleNamespace(crop_size=[40], mean=[0.1, 0.2, 0.3],
                                                 std=[0.5, 0.5, 0.5]),
        meta={"categories": ["cat", "dog", "bird"]})
    models = types.SimpleNamespace(
        list_models=lambda: ["tinynet", "tinynet_v2"],
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=weights),
        get_model=lambda name, weights: tiny())
    return types.SimpleNamespace(models=models)


def stand_in_timm() -> types.ModuleType:
    config = {"input_size": (3, 36, 48), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    return types.SimpleNamespace(list_models=lambda: ["tiny_vit"],
                                 create_model=lambda name, pretrained: tiny(),
                                 data=types.SimpleNamespace(
                                     resolve_data_config=lambda args, model: config))


def test_names_of_ones_own_models_are_told_from_presets():
    assert all(is_own_model(name) for name in ["net.onnx", "a/b/NET.ONNX", "m.py:make",
                                                "torchvision:resnet50", "timm:vit_small"])
    assert not any(is_own_model(name) for name in ["bvlc_googlenet", "efficientnet_lite0",
                                                    "m.py", "m.py:", "other:resnet"])


def test_a_python_files_function_gives_the_network(model_file):
    layers = cnnvis.list_layers(f"{model_file}:make")
    assert layers == [("0", (4, 224, 224)), ("1", (4, 224, 224)), ("2", (2, 224, 224))]
    model = cnnvis.load_model(f"{model_file}:make", device="cpu")
    assert model.input_size == (224, 224) and model.blob_names == ["0", "1", "2"]


@pytest.mark.parametrize("function, words", [
    ("broken", ["ValueError: the weights file moved"]),
    ("not_a_network", ["returned a int", "torch.nn.Module"]),
    ("absent", ["defines no function 'absent'"])])
def test_the_command_line_refuses_a_python_file_that_gives_no_network(function, words,
                                                                      model_file, tmp_path, capsys):
    output = tmp_path / "out.png"
    refused(["--model", f"{model_file}:{function}", "--output_file", str(output), "--gpu", "-1"],
            capsys, output, *words)


def test_the_command_line_refuses_a_missing_python_file(tmp_path, capsys):
    output = tmp_path / "out.png"
    refused(["--model", f"{tmp_path}/gone.py:make", "--output_file", str(output), "--gpu", "-1"],
            capsys, output, "gone.py does not exist")


def test_a_python_files_network_dreams_from_the_command_line(model_file, tmp_path, capsys):
    output = tmp_path / "out.png"
    status = main(["--model", f"{model_file}:make", "--target_layer", "1",
                              "--num_steps", "1", "--gpu", "-1", "--output_file", str(output)])
    assert status == 0 and output.stat().st_size > 1000


def test_torchvision_models_come_with_their_weights_preprocessing(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", stand_in_torchvision())
    model = cnnvis.load_model("torchvision:tinynet", device="cpu")
    assert model.input_size == (40, 40) and model.labels == ["cat", "dog", "bird"]
    assert model.mean_bgr == pytest.approx((0.3 * 255, 0.2 * 255, 0.1 * 255))
    assert model.classify(torch.zeros(40, 40, 3, dtype=torch.uint8).numpy(), top=1)[0][2] in (
        "cat", "dog", "bird")
    with pytest.raises(UserError, match="torchvision has no model named 'tinynt'. Did you mean: "
                                        "tinynet"):
        cnnvis.load_model("torchvision:tinynt")


def test_timm_models_come_with_their_data_config(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", stand_in_timm())
    assert zoo.ModelSpec("timm:tiny_vit").input_size() == (36, 48)
    model = cnnvis.load_model("timm:tiny_vit", device="cpu")
    assert model.mean_bgr == pytest.approx((127.5,) * 3) and model.input_size == (36, 48)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_without_the_library_the_command_line_says_how_to_install_it(library, monkeypatch,
                                                                     tmp_path, capsys):
    monkeypatch.setitem(sys.modules, library, None)
    output = tmp_path / "out.png"
    refused(["--model", f"{library}:resnet18", "--output_file", str(output), "--gpu", "-1"],
            capsys, output, f"pip install {library}")


def test_workers_are_sent_the_name_and_load_their_own(model_file):
    spec = zoo.ModelSpec(f"{model_file}:make", device="cpu")
    sent = pickle.loads(pickle.dumps(spec))
    assert sent == spec and sent.load().blob_names == ["0", "1", "2"]
    with pytest.raises(UserError, match="--deploy_txt and --caffe_model are for Caffe"):
        zoo.ModelSpec(f"{model_file}:make", deploy_txt="x.prototxt").check()
    with pytest.raises(UserError, match="--backend caffe runs Caffe models only"):
        zoo.ModelSpec(f"{model_file}:make", backend="caffe").check()


def test_local_workers_load_a_python_files_network_and_make_the_same_pictures(model_file,
                                                                             tmp_path):
    atlas = ["--model", f"{model_file}:make", "--target_layer", "2", "--image_type",
             "amplify_neuron", "--target_neuron", "0-1", "--num_steps", "2", "--iter_behavior",
             "", "--seed", "1", "--gpu", "-1"]
    here, workers = tmp_path / "here" / "out.png", tmp_path / "workers" / "out.png"
    here.parent.mkdir()
    workers.parent.mkdir()
    assert main(atlas + ["--output_file", str(here)]) == 0
    result = subprocess.run([sys.executable, str(ROOT / "cnn_vis.py"), *atlas, "--workers", "2",
                             "--output_file", str(workers)], capture_output=True, text=True,
                            timeout=240, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    # The pixels (the PNG text records the command line, --workers too).
    pictures = [{p.name: np.asarray(Image.open(p)).tolist()
                 for p in (output.parent / "out_atlas" / "2").iterdir()} for output in (here, workers)]
    assert sorted(pictures[1]) == ["0000.png", "0001.png"] and pictures[0] == pictures[1]


def test_a_layer_gallery_of_a_python_files_network_is_cached_under_the_cache(
        model_file, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_VIS_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(gallery, "GALLERY_STEPS", 1)
    monkeypatch.setattr(own_model, "DEFAULT_INPUT_SIZE", (32, 32))
    sheet = cnnvis.layer_gallery(f"{model_file}:make", gpu=-1)
    assert sheet.is_file() and (tmp_path / "cache") in sheet.parents
    assert sheet.parent.name.startswith("my_net.py:make-")


def test_replay_runs_no_recorded_code_or_model_file_unless_trusted(tmp_path, capsys, monkeypatch):
    from tests.test_arguments import crafted_png
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef make(): pass\n")
    for model in (f"{tmp_path}/evil.py:make", f"{tmp_path}/net.onnx"):
        png = crafted_png(tmp_path / "gift.png", f"cnn_vis.py --model {model} --gpu -1")
        refused(["--replay", str(png)], capsys, tmp_path / "out.png", "--trust_recorded_paths",
                f"--model {model}")
    assert not marker.exists()


def test_the_command_lines_input_options_are_the_apis_keywords(model_file, tmp_path, capsys):
    """--input_size, --channel_order, --input_mean and --input_std reach a network of one's
    own as load_model's keywords do: the same pixels; beside a preset, they are refused."""
    output = tmp_path / "out.png"
    given = {"input_size": (32, 48), "channel_order": "BGR", "mean": (0.2, 0.3, 0.4),
             "std": (0.5, 0.25, 0.125)}
    assert main(["--model", f"{model_file}:make", "--target_layer", "1", "--num_steps", "3",
                 "--gpu", "-1", "--seed", "0", "--iter_behavior", "", "--input_size", "32x48",
                 "--channel_order", "BGR", "--input_mean", "0.2,0.3,0.4",
                 "--input_std", "0.5,0.25,0.125", "--output_file", str(output)]) == 0
    model = cnnvis.load_model(f"{model_file}:make", device="cpu", **given)
    assert model.input_size == (32, 48)
    expected = cnnvis.dream(None, model, seed=0, target_layer="1", num_steps=3)
    with Image.open(output) as made:
        assert made.size == (48, 32)
        assert np.array_equal(np.asarray(made.convert("RGB")), np.asarray(expected))
        plain = cnnvis.dream(None, cnnvis.load_model(f"{model_file}:make", device="cpu",
                                                     input_size=(32, 48)),
                             seed=0, target_layer="1", num_steps=3)
        assert not np.array_equal(np.asarray(made.convert("RGB")), np.asarray(plain))
    capsys.readouterr()
    refused([f"--model={model_file}:make", "--input_mean", "0.5,0.5", "--gpu", "-1",
             "--output_file", str(tmp_path / "two.png")], capsys, tmp_path / "two.png",
            "--input_mean 0.5,0.5: give three numbers", "one per channel")
    refused(["--model", "clip.mp4:make", "--gpu", "-1", "--output_file", str(tmp_path / "v.png")],
            capsys, tmp_path / "v.png", "unknown model 'clip.mp4:make'",
            "a network of one's own is FILE.onnx, FILE.py:FUNCTION")
    refused(["--model", "efficientnet_lite0", "--input_mean", "0.5,0.5,0.5", "--gpu", "-1",
             "--output_file", str(tmp_path / "preset.png")], capsys, tmp_path / "preset.png",
            "--input_mean: for a network of one's own", "efficientnet_lite0 has its own input")
