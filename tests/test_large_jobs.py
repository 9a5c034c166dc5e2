"""Large jobs (issue 16): atlases of a layer's neurons and folders of images, run here, in
local workers and as Ray tasks, with the same pictures everywhere; resuming, failures and
bad input. On the tiny network (16x16 input, conv2: 8 channels)."""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnvis
import cnnvis.batch as batch
from cnnvis import jobs
from cnnvis.cli import main
from tests.cli_contract import refused

ATLAS = ["--image_type", "amplify_neuron", "--num_steps", "3", "--iter_behavior", "",
         "--seed", "5"]
SLOW = ["--num_steps", "40"]   # jobs long enough to be running when a worker is killed


def pngs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def move_away(tmp_path: Path, name: str) -> dict[str, bytes]:
    """The atlas' pictures, byte for byte; the atlas is moved away so the next run makes it anew."""
    folder = tmp_path / "out_atlas"
    made = pngs(folder / "conv2")
    shutil.move(folder, tmp_path / name)
    return made


@pytest.fixture
def atlas_argv(tiny_model, tmp_path) -> list[str]:
    return tiny_model + ATLAS + ["--target_neuron", "1-3,6", "--output_file",
                                 str(tmp_path / "out.png")]


def test_atlas_is_the_same_here_in_workers_and_on_ray_even_when_a_worker_dies(
        atlas_argv, tmp_path, monkeypatch):
    """Each run kills a worker that is running a job (SIGKILL, as the kernel's OOM killer
    does) when the first picture comes back: a new local worker, or Ray, runs it again."""
    atlas_argv = atlas_argv + SLOW
    assert main(atlas_argv) == 0
    sheet = Image.open(tmp_path / "out.png")
    here = move_away(tmp_path, "here")
    assert list(here) == ["0001.png", "0002.png", "0003.png", "0006.png"]
    # The contact sheet: 2x2 cells of at least 96 px, each with a label strip below.
    assert sheet.size == (2 * 96, 2 * (96 + 16))
    for name, run_in, kill in (("workers", ["--workers", "2"], _kill_a_local_worker),
                               ("ray", ["--ray", "local", "--workers", "2"], _kill_a_ray_worker)):
        killed = []
        monkeypatch.setattr(batch, "save_job_png", _then(batch.save_job_png, lambda: killed
                                                       or killed.extend(kill())))
        assert main(atlas_argv + run_in) == 0
        monkeypatch.undo()
        assert killed, name
        assert move_away(tmp_path, name) == here, name
    # Job k (neuron 3 is k = 2) has the seed 5 + k, and its recorded command makes it alone.
    single = tmp_path / "single.png"
    assert main(["--replay", str(tmp_path / "here/conv2/0003.png"), "--trust_recorded_paths",
                 "--output_file", str(single)]) == 0
    np.testing.assert_array_equal(np.array(Image.open(single)),
                                  np.array(Image.open(tmp_path / "here/conv2/0003.png")))
    assert Image.open(single).text["cnn-vis:seed"] == "7"


def _then(function, after):
    def both(*args, **kwargs):
        function(*args, **kwargs)
        after()
    return both


def _kill_a_local_worker() -> list[int]:
    """Kill one worker, and give its pool the time to see it: the next job then meets a broken
    pool when it is submitted, as well as in the wait for the jobs in flight."""
    pid = multiprocessing.active_children()[0].pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    return [pid]


def _kill_a_ray_worker() -> list[int]:
    """Kill one Ray worker process while it runs a job (its title is ray::_ray_job): the
    first one seen within 20 s (the other jobs start as the first results come back)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except (OSError, ValueError):
                continue
            if title.startswith(b"ray::_ray_job"):
                os.kill(int(pid), signal.SIGKILL)
                return [int(pid)]
    return []


def test_sidecar_lists_every_neuron_with_its_file_objective_and_seed(atlas_argv, tmp_path,
                                                                       tiny_model):
    assert main(atlas_argv) == 0
    listing = json.loads((tmp_path / "out.json").read_text())
    assert (listing["layer"], listing["seed"]) == ("conv2", 5)
    assert [(n["neuron"], n["file"], n["seed"]) for n in listing["neurons"]] == [
        (1, "out_atlas/conv2/0001.png", 5), (2, "out_atlas/conv2/0002.png", 6),
        (3, "out_atlas/conv2/0003.png", 7), (6, "out_atlas/conv2/0006.png", 8)]
    # The objective is the finished (float) picture's: its neuron summed over the image,
    # which is one tile.
    deploy, weights = tiny_model[1], tiny_model[3]
    model = cnnvis.load_model(deploy_txt=deploy, caffe_model=weights, device="cpu")
    for entry in listing["neurons"]:
        picture = cnnvis.render(None, model, seed=entry["seed"], target_layer="conv2",
                                num_steps=3, image_type="amplify_neuron",
                                target_neuron=entry["neuron"])
        value = float(model.blob(picture.image, "conv2")[0, entry["neuron"]].sum())
        assert entry["objective"] == pytest.approx(value, rel=1e-5)


def test_all_neurons_and_a_resumed_atlas_makes_only_the_missing(tiny_model, tmp_path,
                                                                 monkeypatch, capsys):
    argv = tiny_model + ATLAS + ["--target_neuron", "all", "--output_file",
                                 str(tmp_path / "out.png")]
    assert main(argv) == 0
    folder = tmp_path / "out_atlas" / "conv2"
    before = pngs(folder)
    assert list(before) == [f"{n:04d}.png" for n in range(8)]
    (folder / "0002.png").unlink()
    (folder / "0005.png").unlink()
    made = []
    render = jobs._render
    monkeypatch.setattr(jobs, "_render", lambda model, plan, job, photo: made.append(job.name)
                        or render(model, plan, job, photo))
    capsys.readouterr()
    # Without --seed: the seed of the pictures there is taken, so that they are kept.
    assert main([a for a in argv if a not in ("--seed", "5")]) == 0
    assert made == ["neuron 2", "neuron 5"]
    assert pngs(folder) == before
    assert "6 of the 8 pictures are in" in capsys.readouterr().err
    # Other settings make every picture anew.
    made.clear()
    assert main(argv + ["--tv_reg", "0.1"]) == 0
    assert len(made) == 8


def test_folder_with_a_corrupt_image_gives_the_others_and_names_it(tiny_model, tmp_path,
                                                                     capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a", (20, 30)), ("c", (24, 24))):
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "b.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (photos / "notes.txt").write_text("not an image: not a job")
    out = tmp_path / "dreams"
    status = main(tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--seed", "0",
                                "--initial_image", str(photos), "--output_file", f"{out}/"])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert Image.open(out / "a.png").size == (30, 20)
    assert f"{photos / 'b.jpg'} failed: cannot read image" in err
    assert err.strip().splitlines()[-1].startswith("cnn-vis: error: 1 of the 3 jobs failed "
                                                   f"({photos / 'b.jpg'};")
    # A glob gives the same jobs: image c is job 2 (seed 0 + 2) either way.
    again = tmp_path / "again"
    again.mkdir()
    assert main(tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--seed", "0",
                              "--initial_image", str(photos / "*.png"), "--output_file",
                              str(again)]) == 0
    assert (again / "a.png").read_bytes() != (out / "a.png").read_bytes()   # other seed, path
    np.testing.assert_array_equal(np.array(Image.open(again / "a.png")),
                                  np.array(Image.open(out / "a.png")))


@pytest.mark.parametrize("extra, key_words", [
    (["--target_neuron", "1-x"], ["--target_neuron '1-x'", "0-15,40"]),
    (["--target_neuron", "3-1"], ["'3-1'", "range"]),
    (["--target_neuron", "2,9"], ["--target_neuron 9", "8 channels", "use 0 to 7"]),
    (["--target_neuron", "2,2"], ["twice"]),
    (["--target_neuron", "0-3", "--image_type", "amplify_layer"], ["--image_type amplify_neuron"]),
    (["--target_neuron", "0-3", "--workers", "0"], ["--workers 0", "at least 1"]),
    (["--workers", "2"], ["--workers", "one picture", "drop --workers"]),
])
def test_bad_large_jobs_are_refused(tiny, output, capsys, extra, key_words):
    refused(tiny + ["--image_type", "amplify_neuron"] + extra, capsys, output, *key_words)


def test_ray_not_installed_is_refused_with_how_to_install(tiny, output, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    refused(tiny + ["--image_type", "amplify_neuron", "--target_neuron", "0-3", "--ray",
                    "local"], capsys, output, "--ray", "pip install 'cnn-vis[ray]'")


def test_several_images_need_an_output_folder(tiny, output, photo, capsys):
    folder = photo.parent / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(photo, folder / name)
    refused(tiny + ["--initial_image", str(folder)], capsys, output,
            "gives 2 images", f"'{output}' is not one", "end it with '/'")


def test_api_atlas_yields_each_neuron_with_its_seed(tiny_model):
    model = cnnvis.load_model(deploy_txt=tiny_model[1], caffe_model=tiny_model[3], device="cpu")
    results = list(cnnvis.atlas(None, model, neurons="0-2", seed=10, target_layer="conv2",
                                num_steps=2))
    assert [(r.job.name, r.job.seed, r.rgb.shape) for r in results] == [
        ("neuron 0", 10, (16, 16, 3)), ("neuron 1", 11, (16, 16, 3)), ("neuron 2", 12, (16, 16, 3))]
    alone = cnnvis.dream(None, model, seed=11, target_layer="conv2", num_steps=2,
                         image_type="amplify_neuron", target_neuron=1)
    np.testing.assert_array_equal(results[1].rgb, np.array(alone))
