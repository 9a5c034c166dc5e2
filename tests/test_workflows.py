"""The workflows are the library's: called from Python they make the same files, bit for
bit, as the same command line; the command line only parses, calls and prints."""
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import cnnvis
from cnnvis.arguments import parse
from cnnvis.cli import main


def files_of(folder: Path) -> dict[str, bytes]:
    """Relative path -> content of every file below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def keywords(argv: list[str]) -> dict[str, object]:
    values, _ = parse(argv)
    return values


@pytest.mark.parametrize("what, extra, output", [
    ("picture", ["--output_depth", "16"], "out.png"),
    ("zoom", ["--frames", "3", "--zoom", "1.1", "--frame_steps", "1"], "zoom.gif"),
    ("atlas", ["--image_type", "amplify_neuron", "--target_neuron", "0-2"], "atlas.png"),
])
def test_python_makes_the_same_files_as_the_command_line(tiny_model, tmp_path, photo, what,
                                                        extra, output):
    cli_folder, api_folder = tmp_path / "cli", tmp_path / "api"
    for folder in (cli_folder, api_folder):
        folder.mkdir()
    argv = tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--seed", "3",
                         "--initial_image", str(photo)] + extra
    assert main(argv + ["--output_file", str(cli_folder / output)]) == 0
    api_argv = argv + ["--output_file", str(api_folder / output)]
    outcome = cnnvis.make(command_line=api_argv, **keywords(api_argv))
    assert outcome.stopped is None and str(api_folder / output) in outcome.written
    cli_files, api_files = files_of(cli_folder), files_of(api_folder)
    assert sorted(cli_files) == sorted(api_files)
    for name in cli_files:   # the same, but for the output's own name in the PNG text
        if not name.endswith(".png"):
            assert cli_files[name] == api_files[name], name
            continue
        cli_png, api_png = Image.open(cli_folder / name), Image.open(api_folder / name)
        assert {k: v.replace("/cli/", "/api/") for k, v in cli_png.text.items()} == api_png.text
        np.testing.assert_array_equal(cv2.imread(str(cli_folder / name), cv2.IMREAD_UNCHANGED),
                                      cv2.imread(str(api_folder / name), cv2.IMREAD_UNCHANGED))


def test_keywords_alone_record_their_own_command(tiny_model, tmp_path, photo):
    """Without command_line, the picture records the options' own command, which --replay
    makes again, to the pixel."""
    deploy, weights = tiny_model[1], tiny_model[3]
    first = tmp_path / "first.png"
    cnnvis.make(deploy_txt=deploy, caffe_model=weights, gpu=-1, target_layer="conv2",
                num_steps=2, iter_behavior="", initial_image=str(photo), output_file=str(first))
    command = Image.open(first).text["cnn-vis:command"]
    assert "--num_steps 2" in command and "--seed" in command
    again = tmp_path / "again.png"
    assert cnnvis.replay(first, trust_recorded_paths=True, output_file=str(again)).stopped is None
    assert (cv2.imread(str(first)) == cv2.imread(str(again))).all()


def test_a_sequence_reports_its_steps_and_frames_and_stops_where_its_progress_says(
        tiny_model, tmp_path):
    """progress(size_index, step) at every step, frame_done(number, png) once a frame is in
    the folder and the video; Interrupted from progress stops as Ctrl-C does."""
    deploy, weights = tiny_model[1], tiny_model[3]
    steps, done = [], []

    def progress(size_index, step):
        steps.append((size_index, step))
        if len(done) == 2:
            raise cnnvis.Interrupted()

    out = tmp_path / "zoom.mp4"
    outcome = cnnvis.make(deploy_txt=deploy, caffe_model=weights, gpu=-1, target_layer="conv2",
                          num_steps=3, frame_steps=2, frames=5, zoom=1.05, initial_size="24x32",
                          iter_behavior="", seed=0, output_file=str(out), progress=progress,
                          frame_done=lambda number, png: done.append((number, png.name)))
    assert isinstance(outcome.stopped, KeyboardInterrupt)
    assert done == [(1, "000001.png"), (2, "000002.png")]
    # Frame 1: 3 steps of its one size (sizes count from 1); frame 2: 2; frame 3: stopped at 1.
    assert steps == [(1, 1), (1, 2), (1, 3), (1, 1), (1, 2), (1, 1)]
    assert sorted(path.name for path in (tmp_path / "zoom_frames").iterdir()) == ["000001.png",
                                                                                 "000002.png"]
    with pytest.raises(TypeError, match="callbacks of a zoom sequence or a dreamed video"):
        cnnvis.make(deploy_txt=deploy, caffe_model=weights, gpu=-1, target_layer="conv2",
                    output_file=str(tmp_path / "one.png"), progress=progress)


def test_list_layers_comes_from_the_model(model_files):
    deploy, _ = model_files
    layers = dict(cnnvis.list_layers(deploy_txt=str(deploy)))
    assert list(layers)[-1] == "conv2" and len(layers["conv2"]) == 3
    assert dict(cnnvis.list_layers("efficientnet_lite0"))["prob"] == (1000,)


def test_loading_a_model_leaves_malloc_alone(monkeypatch):
    from cnnvis import engine
    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1))
    cnnvis.ModelSpec("efficientnet_lite0", device="cpu", keep_freed_memory=True).load()
    assert calls == []   # only a worker process (or the caller) makes that choice
    np.testing.assert_equal(engine.keeps_freed_memory() in (True, False), True)


def test_list_layers_says_what_a_presets_layers_look_like(model_files, capsys):
    notes = cnnvis.workflows.layer_notes("efficientnet_lite0")
    assert "swirls" in notes["stage4/block3"] and "eyes" in notes["stage6/block2"]
    assert cnnvis.workflows.layer_notes(deploy_txt=str(model_files[0])) == {}
    assert main(["--model", "efficientnet_lite0", "--list_layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[8].split()[0] == "stage4/block3" and lines[8].endswith("swirls and scales")
