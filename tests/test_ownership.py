"""What cnn-vis writes beside an output replaces only what cnn-vis wrote there."""
import json
import math

import pytest

from cnnvis.jobfiles import save_sidecar
from cnnvis.cli import main
from tests.cli_contract import refused


@pytest.fixture
def atlas(tiny_model, tmp_path) -> list[str]:
    return tiny_model + ["--image_type", "amplify_neuron", "--target_neuron", "0-1",
                         "--num_steps", "1", "--iter_behavior", "", "--seed", "2",
                         "--output_file", str(tmp_path / "notes.png")]


def test_a_users_json_beside_an_atlas_is_never_replaced(atlas, tmp_path, capsys):
    (tmp_path / "notes.json").write_text('{"mine": true}\n')
    refused(atlas, capsys, tmp_path / "notes.png", "notes.json", "not written by cnn-vis")
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}\n'
    assert not (tmp_path / "notes_atlas").exists()


def test_an_atlas_made_again_replaces_its_own_list(atlas, tmp_path, capsys):
    assert main(atlas) == 0
    listed = json.loads((tmp_path / "notes.json").read_text())
    assert [n["neuron"] for n in listed["neurons"]] == [0, 1]
    assert main(atlas + ["--num_steps", "2"]) == 0   # other settings: every picture anew


def test_a_folder_of_someone_elses_files_is_not_written_into(atlas, tmp_path, capsys):
    layer = tmp_path / "notes_atlas" / "conv2"
    layer.mkdir(parents=True)
    (layer / "0000.png").write_bytes(b"a user's file")
    refused(atlas, capsys, tmp_path / "notes.png", "notes_atlas", "0000.png")
    assert (layer / "0000.png").read_bytes() == b"a user's file"


def test_the_frames_folder_must_be_cnn_vis_own(tiny_model, tmp_path, capsys):
    frames = tmp_path / "zoom_frames"
    frames.mkdir()
    (frames / "holiday.jpg").write_bytes(b"not ours")
    refused(tiny_model + ["--frames", "2", "--num_steps", "1", "--iter_behavior", "",
                          "--output_file", str(tmp_path / "zoom.gif")],
            capsys, tmp_path / "zoom.gif", "zoom_frames", "holiday.jpg")


def test_the_list_is_always_valid_json(tmp_path):
    path = tmp_path / "list.json"
    save_sidecar(path, {"model": "m", "layer": "l", "seed": 1,
                        "neurons": [{"objective": math.nan}, {"objective": -math.inf}]})
    assert json.loads(path.read_text())["neurons"] == [{"objective": None}, {"objective": None}]
    assert "NaN" not in path.read_text()


def test_ctrl_c_as_a_picture_is_written_keeps_the_list_equal_to_the_folder(atlas, tmp_path,
                                                                            monkeypatch, capsys):
    import signal

    from cnnvis import batch
    real = batch.save_job_png

    def save_then_interrupt(path, *args):
        real(path, *args)
        signal.raise_signal(signal.SIGINT)   # held back until the picture is listed too

    monkeypatch.setattr(batch, "save_job_png", save_then_interrupt)
    assert main(atlas) == 130
    listed = json.loads((tmp_path / "notes.json").read_text())["neurons"]
    on_disk = sorted(p.name for p in (tmp_path / "notes_atlas" / "conv2").iterdir())
    assert [entry["file"].split("/")[-1] for entry in listed] == on_disk == ["0000.png"]
