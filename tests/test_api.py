"""The Python API (cnnvis.load_model, dream, render), replay, 16-bit prints and small heads."""
from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import cnnvis
from cnnvis.cli import main
from tests.caffe_files import NSFW_FOLDER, needs_nsfw

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"num_steps": 2, "output_iter": 1, "p_reg": 1e-3, "tv_reg": 0.05}


@pytest.fixture
def tiny(model_files) -> cnnvis.VisModel:
    deploy, weights = model_files
    return cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")


def cli_pixels(tmp_path, tiny_model, *extra) -> np.ndarray:
    output = tmp_path / "cli.png"
    assert main(tiny_model + ["--iter_behavior", "", "--output_file", str(output), *extra]) == 0
    with Image.open(output) as image:
        return np.asarray(image)


@pytest.mark.parametrize("kind", ["path", "pil", "array"])
def test_every_kind_of_image_gives_the_cli_pixels(tmp_path, tiny, tiny_model, photo, kind):
    image = {"path": photo, "pil": Image.open(photo), "array": np.asarray(Image.open(photo))}[kind]
    result = cnnvis.dream(image, tiny, seed=3, target_layer="conv2", initial_size="x1.2", **QUICK)
    assert isinstance(result, Image.Image) and result.mode == "RGB" and result.size == (36, 24)
    expected = cli_pixels(tmp_path, tiny_model, "--seed", "3", "--initial_image", str(photo),
                          "--initial_size", "x1.2", "--num_steps", "2", "--p_reg", "1e-3",
                          "--tv_reg", "0.05")
    np.testing.assert_array_equal(np.asarray(result), expected)


def test_noise_start_gives_the_cli_pixels_and_the_seed_decides(tmp_path, tiny, tiny_model):
    options = dict(target_layer="conv2", final_size="20x24", num_sizes=2, **QUICK)
    picture = cnnvis.render(None, tiny, seed=7, **options)
    assert picture.seed == 7 and picture.image.shape == (1, 3, 20, 24)
    expected = cli_pixels(tmp_path, tiny_model, "--seed", "7", "--final_size", "20x24",
                          "--num_sizes", "2", "--num_steps", "2", "--p_reg", "1e-3",
                          "--tv_reg", "0.05")
    np.testing.assert_array_equal(picture.rgb(), expected)
    other = cnnvis.dream(None, tiny, seed=8, **options)
    assert not np.array_equal(np.asarray(other), expected)
    fresh = cnnvis.render(None, tiny, **options)     # no seed: a fresh one, reported
    assert isinstance(fresh.seed, int)
    np.testing.assert_array_equal(fresh.rgb(), cnnvis.render(None, tiny, seed=fresh.seed,
                                                             **options).rgb())


def test_callback_and_progress(tiny):
    reports, steps = [], []
    cnnvis.dream(None, tiny, seed=0, target_layer="conv2", num_steps=5, output_iter=2,
                 final_size="20x20", num_sizes=2, callback=reports.append,
                 progress=lambda size, step: steps.append((size, step)))
    assert steps == [(size, step) for size in (1, 2) for step in range(1, 6)]
    assert [(r.size_index, r.step) for r in reports] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    last = reports[-1]
    assert last.num_sizes == 2 and last.objective > 0 and last.tv_loss > 0
    assert last.picture.pil().size == (20, 20)


def test_unknown_option_is_a_type_error_naming_the_closest():
    with pytest.raises(TypeError, match="unknown option 'num_step'; did you mean 'num_steps'"):
        cnnvis.DreamOptions.from_keywords({"num_step": 3})


@pytest.mark.parametrize("option, value, flag", [
    ("num_steps", 0, "--num_steps 0"), ("tv_reg", -1.0, "--tv_reg -1.0"),
    ("resize_type", "cubic", "--resize_type 'cubic'"), ("learning_rate", float("nan"), "--learning_rate")])
def test_bad_values_give_the_cli_message(tiny, tmp_path, tiny_model, capsys, option, value, flag):
    with pytest.raises(cnnvis.UserError) as error:
        cnnvis.dream(None, tiny, target_layer="conv2", **{option: value})
    assert flag in str(error.value)
    assert main(tiny_model + [f"--{option}", str(value), "--output_file", str(tmp_path / "o.png")]) == 2
    assert str(error.value) in capsys.readouterr().err


def test_bad_seed_and_bad_image(tiny):
    with pytest.raises(cnnvis.UserError, match="--seed -1 must be at least 0"):
        cnnvis.dream(None, tiny, seed=-1, target_layer="conv2")
    with pytest.raises(ValueError, match="uint8 RGB"):
        cnnvis.dream(np.zeros((20, 20), np.float32), tiny, target_layer="conv2")
    with pytest.raises(cnnvis.UserError, match="no such file"):
        cnnvis.dream("missing.png", tiny, target_layer="conv2")


def test_layers_and_classify(tiny, photo):
    assert tiny.layers() == [("conv1", (6, 16, 16)), ("pool1", (6, 8, 8)), ("conv2", (8, 8, 8))]
    # The last blob has 512 values; classify takes a path, a PIL image or an array alike.
    by_path = tiny.classify(photo, top=3)
    assert len(by_path) == 3 and by_path == tiny.classify(Image.open(photo), top=3)
    assert by_path[0][1] >= by_path[1][1] >= by_path[2][1]


def test_importing_cnnvis_changes_nothing_process_wide():
    """glibc's mmap threshold (what keep_freed_memory raises) shows in where a 64 MB block
    comes from: mmap (counted by mallinfo2's hblkhd) or the heap."""
    script = """
import ctypes, json, logging, os, sys
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
def mmapped_after_malloc():
    block = libc.malloc(64 << 20)
    mmapped = libc.mallinfo2().hblkhd >= 64 << 20
    libc.free(ctypes.c_void_p(block))
    return mmapped
environment = dict(os.environ)
import cnnvis
state = {"mmapped_after_import": mmapped_after_malloc(),
         "environment_kept": dict(os.environ) == environment,
         "matplotlib": "matplotlib" in sys.modules,
         "handlers": len(logging.getLogger().handlers) + len(logging.getLogger("cnnvis").handlers)}
cnnvis.keep_freed_memory()
state["mmapped_after_call"] = mmapped_after_malloc()
print(json.dumps(state))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, cwd=ROOT)
    assert json.loads(result.stdout) == {"mmapped_after_import": True, "environment_kept": True,
                                         "matplotlib": False, "handlers": 0,
                                         "mmapped_after_call": False}


def test_replay_reproduces_the_image_and_takes_new_options_last(tmp_path, tiny_model, photo, capsys):
    first = tmp_path / "first.png"
    assert main(tiny_model + ["--initial_image", str(photo), "--num_steps", "3",
                              "--iter_behavior", "", "--output_file", str(first)]) == 0
    again = tmp_path / "again.png"
    assert main(["--replay", str(first), "--trust_recorded_paths", "--output_file", str(again)]) == 0
    with Image.open(first) as a, Image.open(again) as b:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.text["cnn-vis:seed"] == b.text["cnn-vis:seed"]
        assert b.text["cnn-vis:command"].endswith(f"--output_file {again}")
    longer = tmp_path / "longer.png"
    assert main([f"--replay={again}", "--trust_recorded_paths", "--num_steps", "4",
                 "--output_file", str(longer)]) == 0
    with Image.open(again) as a, Image.open(longer) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
    capsys.readouterr()
    assert main(["--replay", str(photo)]) == 2
    assert "holds no cnn-vis command" in capsys.readouterr().err


def test_sixteen_bit_png_round_trips_with_its_metadata(tmp_path, tiny_model):
    eight, sixteen = tmp_path / "eight.png", tmp_path / "sixteen.png"
    common = ["--seed", "2", "--num_steps", "3", "--iter_behavior", "save", "--output_iter", "3"]
    assert main(tiny_model + common + ["--output_file", str(eight)]) == 0
    assert main(tiny_model + common + ["--output_file", str(sixteen), "--output_depth", "16"]) == 0
    deep = cv2.imread(str(sixteen), cv2.IMREAD_UNCHANGED)[:, :, ::-1]   # OpenCV reads BGR
    assert deep.dtype == np.uint16 and deep.shape == (16, 16, 3)
    with Image.open(eight) as image:
        shallow = np.asarray(image).astype(np.int64)
    # The same picture in finer steps: 257 levels of 16 bits per level of 8 bits.
    assert np.abs(deep / 257 - shallow).max() <= 0.5 + 1e-9
    assert len(np.unique(deep)) > len(np.unique(shallow))
    with Image.open(sixteen) as image:
        assert "--output_depth 16" in image.text["cnn-vis:command"]
    intermediate = cv2.imread(str(tmp_path / "sixteen_1_3.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(intermediate[:, :, ::-1], deep)
    picture_16 = cnnvis.Picture(torch.tensor([[[[0.0]], [[127.5]], [[255.0]]]]), (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(picture_16.rgb(16), [[[65535, 32768, 0]]])


@needs_nsfw
def test_classify_shows_every_output_of_a_small_head(tmp_path, capsys):
    # Yahoo's open_nsfw: a ResNet-50 with 2 outputs
    deploy = NSFW_FOLDER / "deploy.prototxt"
    weights = NSFW_FOLDER / "resnet_50_1by2_nsfw.caffemodel"
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 240, 3), dtype=np.uint8)).save(path)
    assert main(["--deploy_txt", str(deploy), "--caffe_model", str(weights), "--gpu", "-1",
                 "--classify", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == [0, 1]
    assert sum(float(line.split()[1]) for line in lines) == pytest.approx(1, abs=1e-5)  # softmax


def test_readme_python_api_examples(tmp_path, monkeypatch):
    """The README's Python API section runs as written (doctest)."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
                    ).save(tmp_path / "photo.jpg")
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# ------------------------------------------------------------- the API's doors (Nothing lost 3)

@pytest.mark.parametrize("array, error, message", [
    (np.zeros((0, 0, 3), np.uint8), cnnvis.UserError,
     r"--initial_image: the image has no pixels \(height 0, width 0\); give an image of at least 1x1"),
    (np.zeros((0, 5, 3), np.uint8), cnnvis.UserError, "height 0, width 5"),
    (np.zeros((20, 20, 3), np.float32), ValueError,
     r"got float32 \(20, 20, 3\); convert levels 0..255 with np.clip"),
    (np.full((20, 20, 3), np.nan), ValueError, "holds NaN or infinity"),
    (np.zeros((20, 20), np.uint8), ValueError, "for a grey image, make it RGB"),
    (np.zeros((20, 20, 4), np.uint8), ValueError, "drop its alpha channel"),
    ([[[0, 0, 0]]], TypeError, "expected a PIL image or a uint8 array"),
])
def test_bad_image_arrays_are_refused_at_the_door(tiny, array, error, message):
    for call in (lambda: cnnvis.dream(array, tiny, target_layer="conv2", num_steps=1),
                 lambda: cnnvis.animate(array, tiny, target_layer="conv2", frames=2),
                 lambda: tiny.classify(array),
                 lambda: cnnvis.dream(None, tiny, target_layer="conv2", guide=array)):
        with pytest.raises(error, match=message.replace("--initial_image", "--[a-z_]+")):
            call()


def test_empty_pictures_and_masks_are_user_errors(tiny):
    with pytest.raises(cnnvis.UserError, match="--initial_image: the image has no pixels"):
        cnnvis.dream(Image.new("RGB", (0, 0)), tiny, target_layer="conv2")
    with pytest.raises(cnnvis.UserError, match="--classify: the image has no pixels"):
        tiny.classify(np.zeros((0, 0, 3), np.uint8))
    for mask in (np.zeros((0, 4), np.uint8), np.zeros((4, 0, 3), np.uint8)):
        with pytest.raises(cnnvis.UserError, match="--mask: the image has no pixels"):
            cnnvis.dream(None, tiny, target_layer="conv2", mask=mask)


def test_a_picture_has_depths_8_and_16_only():
    picture = cnnvis.Picture(torch.zeros((1, 3, 2, 2)), (0.0, 0.0, 0.0))
    for depth in (12, 0, 32):
        with pytest.raises(ValueError, match=f"depth must be 8 or 16 \\(bits per channel\\), not {depth}"):
            picture.rgb(depth)


@pytest.mark.parametrize("kind", ["png", "pgm"])
def test_sixteen_bit_grey_starts_the_same_from_a_pil_image_as_from_its_file(tmp_path, tiny, kind):
    """Pillow opens a 16-bit grey PNG as mode I;16 and a 16-bit PGM as mode I: either, given as
    a PIL image, is scaled to 8 bits as the file is (not clipped to white)."""
    levels = (np.arange(20 * 30).reshape(20, 30) * 109 % 65536).astype(np.uint16)
    path = tmp_path / f"grey16.{kind}"
    if kind == "png":
        Image.fromarray(levels).save(path)
    else:
        path.write_bytes(b"P5\n30 20\n65535\n" + levels.astype(">u2").tobytes())
    with Image.open(path) as image:
        assert image.mode == {"png": "I;16", "pgm": "I"}[kind]
        from_pil = cnnvis.dream(image, tiny, seed=1, target_layer="conv2", num_steps=1)
        start = cnnvis.dream(image, tiny, seed=1, target_layer="conv2", num_steps=1, learning_rate=0)
    from_file = cnnvis.dream(path, tiny, seed=1, target_layer="conv2", num_steps=1)
    np.testing.assert_array_equal(np.asarray(from_pil), np.asarray(from_file))
    expected = np.rint(levels / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(start), np.repeat(expected[:, :, None], 3, axis=2))


@pytest.mark.parametrize("model, given", [(None, "NoneType"), ("efficientnet_lite0", "the str 'efficientnet_lite0'"),
                                          (3, "int")])
def test_a_model_that_is_not_loaded_is_a_type_error_saying_what_to_pass(model, given):
    name = model if isinstance(model, str) else "efficientnet_lite0"
    loaded = f"model must be a cnnvis.VisModel, not {given}: pass the result of cnnvis.load_model('{name}')"
    for call in (lambda: cnnvis.dream(None, model), lambda: cnnvis.render(None, model),
                 lambda: cnnvis.animate(None, model, frames=2),
                 lambda: cnnvis.dream_video([(1, np.zeros((16, 16, 3), np.uint8))], model)):
        with pytest.raises(TypeError) as error:
            call()
        assert str(error.value) == loaded
    either = (f"model must be a cnnvis.VisModel or a cnnvis.ModelSpec, not {given}: pass the result "
              f"of cnnvis.load_model('{name}'), or cnnvis.ModelSpec('{name}') for workers and Ray")
    for call in (lambda: cnnvis.run_jobs([cnnvis.Job("a", 0)], model),
                 lambda: cnnvis.atlas(None, model, neurons="all", seed=0)):
        with pytest.raises(TypeError) as error:
            call()
        assert str(error.value) == either


def test_notebooks_see_the_model_the_pictures_and_a_progress_bar(tmp_path, capsys):
    import io

    from cnnvis.caffe import CaffeNet, parse_prototxt
    from cnnvis.model import VisModel
    from tests.caffe_files import TINY_DREAM_NET
    model = VisModel(CaffeNet(parse_prototxt(TINY_DREAM_NET), None, seed=0).eval(), "tiny",
                     mean_bgr=(0.0, 0.0, 0.0), default_layer="conv2")
    assert repr(model) == ("VisModel('tiny', input 16x16, 3 layers, default layer 'conv2', "
                           "device cpu)")
    picture = cnnvis.render(None, model, seed=0, num_steps=3, num_sizes=1, progress=True)
    assert "3/3" in capsys.readouterr().err   # tqdm's bar, with its total
    shown = Image.open(io.BytesIO(picture._repr_png_()))
    np.testing.assert_array_equal(np.asarray(shown), picture.rgb())
    [frame] = cnnvis.animate(None, model, seed=0, num_steps=1, frames=1, depth=16)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(frame._repr_png_()))),
                                  np.rint(frame.rgb / 257).astype(np.uint8))
