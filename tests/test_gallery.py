"""The layer gallery: one labelled picture per spatial layer and start, cached."""
from PIL import Image

from cnnvis.cli import main


def test_the_gallery_shows_every_spatial_layer_and_is_cached(model_files, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.setenv("CNN_VIS_HOME", str(tmp_path / "home"))
    deploy, weights = model_files
    argv = ["--deploy_txt", str(deploy), "--caffe_model", str(weights), "--gpu", "-1",
            "--layer_gallery"]
    assert main(argv) == 0
    sheet = capsys.readouterr().out.strip()
    pictures = sorted(p.name for p in (tmp_path / "home").rglob("*-*.png"))
    layers = len(pictures) // 2
    assert layers >= 2 and pictures[:2] == ["000-noise.png", "000-photo.png"]
    assert Image.open(sheet).text["Software"] == "cnn-vis"
    made = Image.open(sheet).tobytes()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*.png")}
    assert main(argv) == 0 and capsys.readouterr().out.strip() == sheet   # cached: nothing redone
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "home").rglob("*.png")} == before
    assert Image.open(sheet).tobytes() == made
