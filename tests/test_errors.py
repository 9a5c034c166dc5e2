"""Issue #8: bad input, faults and untrusted files end in one clear error, and nothing is lost.

Every refusal goes through the real command line (`cnnvis.cli.main`) and must end with
exit status 2, exactly one line on stderr (`cnn-vis: error: ...`) that names the problem
and the fix, no traceback, no stray files, and the earlier output file byte-identical.
Most runs use a tiny Caffe network written by the test, so each takes milliseconds.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnvis import zoo
from cnnvis.cli import main
from cnnvis.caffe.writer import caffemodel_bytes
from cnnvis.errors import UserError
from cnnvis.pycaffe_engine import import_caffe
from tests.caffe_files import TINY_DREAM_NET, tiny_dream_weights
from tests.cli_contract import PREVIOUS_OUTPUT, refused

REPOSITORY = Path(__file__).resolve().parents[1]
INPUT_SIZE = (16, 16)   # the tiny network's input (height, width)

@pytest.fixture(autouse=True)
def no_caffe_root(monkeypatch):
    monkeypatch.delenv("CAFFE_ROOT", raising=False)
    monkeypatch.delenv("CNN_VIS_DEBUG", raising=False)


def random_rgb(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)


def deny(monkeypatch, path: Path, mode: int) -> None:
    """Take away access to `path` (chmod to `mode`). Root ignores permission bits (as in many
    containers), so there the OS's answer, PermissionError, is injected at the open calls."""
    path.chmod(mode)
    if not os.access(path, os.W_OK if path.is_dir() else os.R_OK):
        return
    denied = PermissionError(errno.EACCES, "Permission denied")

    def guard(opener):
        def open_unless_denied(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and path in (
                    Path(os.fsdecode(file)), Path(os.fsdecode(file)).parent):
                raise denied
            return opener(file, *args, **kwargs)
        return open_unless_denied
    monkeypatch.setattr("builtins.open", guard(open))
    monkeypatch.setattr(os, "open", guard(os.open))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- --initial_image


def write_truncated_png(path: Path) -> None:
    data = png_bytes(Image.fromarray(random_rgb(40, 40)))
    path.write_bytes(data[:len(data) // 2])


def write_truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(40, 40)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[:300])


@pytest.mark.parametrize("make, key_words", [
    (None, ["no such file", "check the path"]),
    (lambda path: path.mkdir(), ["is a directory", "path of a file"]),
    (lambda path: path.write_text("not a picture"), ["not an image file", "PNG or JPEG"]),
    (write_truncated_png, ["truncated or corrupt", "re-export"]),
    (write_truncated_jpeg, ["truncated or corrupt", "re-export"]),
], ids=["missing", "directory", "not-an-image", "truncated-png", "truncated-jpeg"])
def test_bad_initial_image(tmp_path, tiny, output, capsys, make, key_words):
    path = tmp_path / "start.png"
    if make:
        make(path)
    refused(tiny + ["--initial_image", str(path)], capsys, output, str(path), *key_words)


def test_unreadable_initial_image(tmp_path, tiny, output, photo, capsys, monkeypatch):
    deny(monkeypatch, photo, 0)
    refused(tiny + ["--initial_image", str(photo)], capsys, output,
            str(photo), "permission denied", "chmod u+r")


def test_decompression_bomb_limit_stays_on(tiny, output, photo, capsys, monkeypatch):
    assert Image.MAX_IMAGE_PIXELS is not None   # importing cnnvis did not switch it off
    # Pillow refuses images over twice the limit; lower it rather than write a giant file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    refused(tiny + ["--initial_image", str(photo)], capsys, output,
            str(photo), "decompression bomb", "downscale the image below 100 pixels")


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "I;16"])
def test_grey_palette_and_alpha_images_are_accepted_as_rgb(tmp_path, tiny, output, capsys, mode):
    rgb = random_rgb(20, 24)
    if mode == "I;16":
        image = Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)        # 16-bit grey scaled to 8 bits
    else:
        image = Image.fromarray(rgb).convert(mode)
        if "A" in mode:
            image.putalpha(Image.fromarray(rgb[:, :, 1]))      # alpha is dropped, not blended
        expected = np.asarray(image.convert("RGB"))
    path = tmp_path / "start.png"
    image.save(path)
    # With learning rate 0 the result is the start image itself: the converted photo.
    assert main(tiny + ["--initial_image", str(path), "--num_steps", "1",
                        "--learning_rate", "0"]) == 0
    assert "error" not in capsys.readouterr().err
    with Image.open(output) as result:
        assert result.mode == "RGB"
        assert np.array_equal(np.asarray(result), expected)


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("text, key_words", [
    ("x", ['"" is not a number', "x0.5", "600x800"]),
    ("x0", ["positive finite number", "x0.5"]),
    ("x-1", ["positive finite number", "x0.5"]),
    ("0x10", ["0x10", "at least 1 pixel"]),
    ("10x", ["is not a size", "600x800"]),
    ("abc", ["is not a size", "600x800"]),
    # Not read as 10^9 x 10^9: sides are integers, so this is not a size at all.
    ("1e9x1e9", ["is not a size", "600x800"]),
    ("100000x100000", ["100000x100000", "would not fit in memory", "use a smaller size"]),
    ("x1e9", ["1e+09 times the base size 16x16", "would not fit in memory", "use a smaller size"]),
])
@pytest.mark.parametrize("option", ["--initial_size", "--final_size"])
def test_bad_size_string(tiny, output, capsys, option, text, key_words):
    refused(tiny + [option, text, "--num_sizes", "2"], capsys, output,
            f'{option} "{text}"', *key_words)


@pytest.mark.parametrize("options, key_words", [
    (["--initial_size", "8x12"],
     ["Size 8x12", "network input 16x16", "--initial_size x1", "--initial_size 16x16"]),
    (["--initial_size", "32x32", "--final_size", "32x10", "--num_sizes", "2"],
     ["Size 32x10 (size 2 of 2)", "network input 16x16", "--final_size 32x16"]),
])
def test_size_smaller_than_network_input(tiny, output, capsys, options, key_words):
    refused(tiny + options, capsys, output, *key_words)


# ----------------------------------------------------------------------------- options


def test_unknown_target_layer_lists_closest_names(tiny, output, capsys):
    message = refused(tiny + ["--target_layer", "conv"], capsys, output,
                      "no blob named 'conv'", "Did you mean: ", "conv1", "conv2", "--list_layers")
    assert "pool1" not in message


def test_target_neuron_outside_the_blobs_channels(tiny, output, capsys):
    refused(tiny + ["--image_type", "amplify_neuron", "--target_neuron", "8"], capsys, output,
            "--target_neuron 8", "'conv2'", "8 channels", "use 0 to 7")


def test_unknown_iter_behavior_action(tiny, output, capsys):
    refused(tiny + ["--iter_behavior", "save+dance"], capsys, output,
            "--iter_behavior 'save+dance'", "dance", "print, save, show, plot_pix", "save+print")


@pytest.mark.parametrize("option", ["--num_sizes", "--batch_size", "--num_steps", "--output_iter",
                                    "--tv_reg_step_iter", "--learning_rate_decay_iter"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_counts_below_one(tiny, output, capsys, option, value):
    refused(tiny + [option, value], capsys, output,
            f"{option} {value} must be at least 1", "--help")


@pytest.mark.parametrize("option", ["--initialization_scale", "--initialization_blur"])
def test_negative_scale_or_blur(tiny, output, capsys, option):
    refused(tiny + [option, "-0.5"], capsys, output, f"{option} -0.5 must be at least 0")


def test_noise_too_large_to_stay_finite(tiny, output, capsys):
    # 1e308 times a normal sample overflows: the start itself would not be finite.
    refused(tiny + ["--initialization_scale", "1e308"], capsys, output,
            "--initialization_scale 1e308 must be at most 10000")


@pytest.mark.parametrize("option, value, choices", [
    ("--resize_type", "cubic", "geometric, linear"),
    ("--tv_grad_operator", "laplace", "naive, sobel, sobel_squish"),
])
def test_choice_options(tiny, output, capsys, option, value, choices):
    refused(tiny + [option, value], capsys, output, f"{option} '{value}' is not one of: {choices}")


# ----------------------------------------------------------------------------- model files


def write_prototxt(model_files, text: str) -> None:
    model_files[0].write_text(text)


def test_prototxt_syntax_error_names_line_and_column(model_files, tiny, output, capsys):
    broken = TINY_DREAM_NET.replace('layer { name: "relu1" type: "ReLU"', 'layer { name: "relu1" type "ReLU"')
    write_prototxt(model_files, broken)
    # Line 6 of the file (the text starts with a newline); `"ReLU"` starts in column 28.
    message = refused(tiny, capsys, output, str(model_files[0]), "not a valid Caffe prototxt",
                      "(line 6, column 28)", 'Expected ":". Fix the file')
    assert ".." not in message


def test_unknown_layer_type(model_files, tiny, output, capsys):
    write_prototxt(model_files, TINY_DREAM_NET.replace('"ReLU" bottom: "conv2"', '"Swish" bottom: "conv2"'))
    refused(tiny, capsys, output, "layer 'relu2' has type 'Swish'", "supported: ", "Convolution",
            "Remove it")


def test_missing_bottom_blob(model_files, tiny, output, capsys):
    write_prototxt(model_files, TINY_DREAM_NET.replace('bottom: "pool1"', 'bottom: "pool0"'))
    refused(tiny, capsys, output, "layer 'conv2' reads blob 'pool0'", "no earlier layer",
            "Fix its bottom")


def test_network_too_large_for_memory(model_files, tiny, output, capsys):
    write_prototxt(model_files, TINY_DREAM_NET.replace("dim: 16 dim: 16", "dim: 100000 dim: 100000"))
    refused(tiny, capsys, output, "input blob 'data' would have shape (1, 3, 100000, 100000)",
            "more than cnn-vis holds", "Check the input shape")


def test_truncated_caffemodel(model_files, tiny, output, capsys):
    weights = model_files[1]
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    refused(tiny, capsys, output, str(weights), "not a Caffe .caffemodel", "truncated or corrupt",
            "--caffe_model")


@pytest.mark.parametrize("content", [
    png_bytes(Image.new("RGB", (8, 8))),
    TINY_DREAM_NET.encode(),                       # the prototxt given for the weights
    b"",
], ids=["png", "prototxt", "empty"])
def test_file_that_is_not_a_caffemodel(model_files, tiny, output, capsys, content):
    model_files[1].write_bytes(content)
    message = refused(tiny, capsys, output, str(model_files[1]), "--caffe_model")
    assert "not a Caffe .caffemodel" in message or "not a trained .caffemodel" in message


def test_weights_of_the_wrong_shape(model_files, tiny, output, capsys):
    weights = tiny_dream_weights()
    weights["conv2"][0] = np.zeros((8, 6, 5, 5))
    model_files[1].write_bytes(caffemodel_bytes(weights))
    refused(tiny, capsys, output, "layer 'conv2': weight blob 0 has shape (8, 6, 5, 5)",
            "needs (8, 6, 3, 3)", "caffemodel that belongs to this prototxt")


def test_weights_that_are_not_finite(model_files, tiny, output, capsys):
    weights = tiny_dream_weights()
    weights["conv1"][0][2, 1, 0, 0] = np.nan     # e.g. flipped bits in the float data
    model_files[1].write_bytes(caffemodel_bytes(weights))
    refused(tiny, capsys, output, "layer 'conv1': weight blob 0", "NaN or infinite",
            "Download it again", "--caffe_model")


@pytest.mark.parametrize("write, key_words", [
    (lambda path: path.write_text("104 117 123"), ["not a readable NumPy .npy array"]),
    (lambda path: np.save(path, np.zeros(4)), ["its shape is (4,)"]),
    (lambda path: np.save(path, np.zeros((2, 5, 5))), ["its shape is (2, 5, 5)"]),
], ids=["not-npy", "vector-of-4", "two-channels"])
def test_bad_mean_image(tmp_path, tiny, output, capsys, write, key_words):
    path = tmp_path / "mean.npy"
    write(path)
    refused(tiny + ["--mean_image", str(path)], capsys, output, str(path), *key_words,
            "(3, H, W) BGR mean image or a length-3 BGR vector")


# ----------------------------------------------------------------------------- untrusted files


class _CreatesMarker:
    """Unpickling this runs code: it creates (opens for writing) the file `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def pickled_files(directory: Path, marker: Path) -> dict[str, Path]:
    """A raw pickle and a torch.save zip, each of which creates `marker` when unpickled."""
    raw, zipped = directory / "raw.caffemodel", directory / "torch.caffemodel"
    raw.write_bytes(pickle.dumps({"conv1": _CreatesMarker(marker)}))
    torch.save({"conv1.weight": torch.zeros(6, 3, 3, 3), "hook": _CreatesMarker(marker)}, zipped)
    return {"raw": raw, "torch": zipped}


UNSAFE_LOADERS = {"raw": lambda path: pickle.loads(path.read_bytes()),
                  "torch": lambda path: torch.load(path, weights_only=False)}


@pytest.mark.parametrize("kind", ["raw", "torch"])
def test_pickle_renamed_caffemodel_is_refused_without_running_it(tmp_path, tiny, output, capsys,
                                                                 kind):
    # The payload is live: loading the file the unsafe way does create its marker.
    canary_directory = tmp_path / "canary"
    canary_directory.mkdir()
    canary = canary_directory / "ran"
    UNSAFE_LOADERS[kind](pickled_files(canary_directory, canary)[kind])
    assert canary.exists()

    marker = tmp_path / "payload_ran"
    evil = pickled_files(tmp_path, marker)[kind]
    refused(tiny + ["--caffe_model", str(evil)], capsys, output,   # the last value counts
            str(evil), "caffemodel", "--caffe_model")
    assert not marker.exists()


def test_pickled_mean_image_is_refused_without_running_it(tmp_path, tiny, output, capsys):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "mean.npy"
    np.save(path, np.array([_CreatesMarker(marker)], dtype=object), allow_pickle=True)
    refused(tiny + ["--mean_image", str(path)], capsys, output, str(path), "not a readable NumPy")
    assert not marker.exists()


def test_package_never_unpickles_or_evaluates():
    """Model files are data: no pickle, eval or exec, and torch.load only with weights_only=True."""
    forbidden = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|(?<![.\w])(eval|exec)\("
                           r"|allow_pickle=True|torch\.load\((?![^)]*weights_only=True)[^)]*\)")
    sources = [p for p in (REPOSITORY / "cnnvis").rglob("*.py") if p.name != "caffe_pb2.py"]
    assert len(sources) > 10
    offending = [f"{p.relative_to(REPOSITORY)}: {m.group(0)}" for p in sources
                 for m in forbidden.finditer(p.read_text())]
    assert offending == []


# ----------------------------------------------------------------------------- output


def test_output_directory_missing(tmp_path, tiny, capsys):
    missing = tmp_path / "no" / "such" / "dir" / "out.png"
    refused(tiny + ["--output_file", str(missing)], capsys, missing,
            "'" + str(missing.parent) + "' is not an existing directory", "mkdir -p")
    assert not (tmp_path / "no").exists()


def test_output_directory_not_writable(tmp_path, tiny, capsys, monkeypatch):
    directory = tmp_path / "locked"
    directory.mkdir()
    kept = directory / "out.png"
    kept.write_bytes(PREVIOUS_OUTPUT)
    deny(monkeypatch, directory, 0o555)
    try:
        refused(tiny + ["--output_file", str(kept)], capsys, kept,
                f"cannot write '{kept}'", "Permission denied", "permissions")
    finally:
        directory.chmod(0o755)


def test_output_is_replaced_by_rename_only_when_complete(tiny, output, monkeypatch):
    renames = []
    real_replace = os.replace

    def recording_replace(source, destination):
        # At the moment of the rename the earlier result is still intact.
        renames.append((Path(source), Path(destination), Path(destination).read_bytes()))
        real_replace(source, destination)
    monkeypatch.setattr(os, "replace", recording_replace)
    assert main(tiny) == 0
    [(source, destination, before)] = renames
    assert destination == output and before == PREVIOUS_OUTPUT
    assert source.parent == output.parent and source.name.startswith(".cnn-vis-")
    assert not source.exists()
    with Image.open(output) as image:
        assert image.size == INPUT_SIZE[::-1]


def test_disk_full_while_saving_keeps_the_earlier_output(tiny, output, capsys, monkeypatch):
    def full_disk(self, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Image.Image, "save", full_disk)
    refused(tiny, capsys, output, f"cannot write '{output}'", "No space left on device",
            "free disk space")


# ----------------------------------------------------------------------------- cheap checks first


def fail_if_model_loads(monkeypatch) -> list:
    calls = []

    def load_model(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the model was loaded before a cheap check")
    monkeypatch.setattr(zoo, "load_model", load_model)
    return calls


PRESET_NOISE_START = ["--model", "efficientnet_lite0", "--gpu", "-1", "--num_steps", "1"]


@pytest.mark.parametrize("options", [
    ["--output_file", "{tmp}/missing/out.png"],
    ["--initial_image", "{tmp}/missing.png"],
    ["--iter_behavior", "save+dance"],
    ["--mean_image", "{tmp}/missing.npy"],
    ["--num_steps", "0"],
    ["--initial_size", "abc"],
    ["--final_size", "100000x100000", "--num_sizes", "2"],
    ["--initial_size", "100x100"],      # below the preset's 224x224 input
], ids=["output-dir", "initial-image", "iter-behavior", "mean-image", "num-steps",
        "size-string", "size-too-large", "size-below-preset-input"])
def test_cheap_checks_come_before_the_model_loads(tmp_path, output, capsys, monkeypatch, options):
    calls = fail_if_model_loads(monkeypatch)
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    if "--output_file" not in options:
        options += ["--output_file", str(output)]
    status = main(PRESET_NOISE_START + options)
    err = capsys.readouterr().err
    assert calls == []
    assert status == 2 and err.startswith("cnn-vis: error: ") and len(err.splitlines()) == 1, err
    assert output.read_bytes() == PREVIOUS_OUTPUT


@pytest.mark.parametrize("size", ["abc", "8x8"])
def test_cheap_size_checks_come_before_the_caffemodel_loads(tiny, output, capsys, monkeypatch,
                                                             size):
    calls = fail_if_model_loads(monkeypatch)
    status = main(tiny + ["--initial_size", size])
    capsys.readouterr()
    assert calls == [] and status == 2


# ----------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("ask", ["flag", "environment"])
def test_debug_shows_the_traceback(tiny, output, capsys, monkeypatch, ask):
    argv = tiny + ["--initial_size", "abc"]
    if ask == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("CNN_VIS_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "UserError" in err
    assert err.strip().splitlines()[-1].startswith('cnn-vis: error: --initial_size "abc"')
    assert output.read_bytes() == PREVIOUS_OUTPUT


# ----------------------------------------------------------------------------- GPU


def test_missing_gpu_is_one_notice_then_the_cpu(tiny, output, capsys):
    assert main(tiny + ["--gpu", "99"]) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "--gpu 99" in line]
    assert len(notices) == 1 and "running on the CPU" in notices[0] and "--gpu -1" in notices[0]
    assert "error" not in err
    with Image.open(output) as image:
        assert image.size == INPUT_SIZE[::-1]


# ----------------------------------------------------------------------------- --backend caffe
# (these need no pycaffe; the tests that run real Caffe are in tests/test_parity.py)


def test_missing_pycaffe_names_the_install_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "caffe", None)   # makes `import caffe` fail
    monkeypatch.setenv("GLOG_minloglevel", "2")   # as import_caffe sets it, but undone after
    with pytest.raises(UserError, match=r"--backend caffe needs pycaffe.*scripts/install_pycaffe\.sh"):
        import_caffe()


def test_pytorch_model_with_caffe_backend_is_a_user_error():
    with pytest.raises(UserError, match=r"efficientnet_lite0 is a PyTorch network.*--backend torch"):
        zoo.load_model("efficientnet_lite0", backend="caffe")


# ----------------------------------------------------------------------------- non-finite values


def test_non_finite_at_the_first_step_saves_the_initial_image(tiny, output, photo, capsys):
    message = refused_non_finite(tiny + ["--initial_image", str(photo), "--learning_rate", "1e39"],
                                 capsys, output)
    assert "at step 1 of size 1" in message
    with Image.open(output) as image:   # the last finite image: the photo itself
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(photo)))


def test_non_finite_later_saves_the_last_finite_step(tmp_path, tiny, output, capsys):
    # The learning rate jumps to 1e39 after step 2, so step 3 overflows.
    decay = ["--learning_rate_decay_iter", "2", "--learning_rate_decay_factor", "1e39"]
    message = refused_non_finite(tiny + decay + ["--num_steps", "5"], capsys, output)
    assert "at step 3 of size 1" in message
    two_steps = tmp_path / "two_steps.png"
    assert main(tiny + decay + ["--num_steps", "2", "--output_file", str(two_steps)]) == 0
    with Image.open(output) as saved, Image.open(two_steps) as expected:
        assert np.array_equal(np.asarray(saved), np.asarray(expected))


def refused_non_finite(argv: list[str], capsys, output: Path) -> str:
    """Exit 2 with one message naming the setting to lower; the output now holds a PNG."""
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    [message] = err.strip().splitlines()
    for word in ["cnn-vis: error: the image became non-finite",
                 f"the last finite image is saved as {output}", "Lower --learning_rate"]:
        assert word in message
    assert output.read_bytes() != PREVIOUS_OUTPUT
    assert not [p for p in output.parent.iterdir() if p.name.endswith(".tmp")]
    return message
