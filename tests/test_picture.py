"""One picture to a file: PNG, or 8-bit JPEG and WebP that keep the command."""
import json

import numpy as np
import pytest
from PIL import Image

from cnnvis.cli import main
from tests.cli_contract import refused


@pytest.mark.parametrize("suffix, metadata", [(".jpg", "comment"), (".jpeg", "comment"),
                                              (".webp", "xmp")])
def test_jpeg_and_webp_outputs_are_the_picture_with_its_command(tiny, tmp_path, suffix, metadata):
    png, lossy = tmp_path / "out.png", tmp_path / f"out{suffix}"
    assert main(tiny) == 0
    assert main(tiny[:-1] + [str(lossy)]) == 0
    with Image.open(png) as a, Image.open(lossy) as b:
        assert b.format == ("WEBP" if suffix == ".webp" else "JPEG")
        difference = np.abs(np.asarray(a, np.float64) - np.asarray(b.convert("RGB"), np.float64))
        assert difference.mean() < 12   # quality 95 on a 16x16 noise picture
        text = json.loads(b.info[metadata])
    assert text["cnn-vis:seed"] == "0" and str(lossy) in text["cnn-vis:command"]


def test_sixteen_bits_need_a_png(tiny, tmp_path, capsys):
    refused(tiny[:-1] + [str(tmp_path / "out.jpg"), "--output_depth", "16"], capsys,
            tmp_path / "out.jpg", "--output_depth 16 needs a PNG")


def test_other_suffixes_are_refused_with_the_ones_that_work(tiny, tmp_path, capsys):
    refused(tiny[:-1] + [str(tmp_path / "out.tiff")], capsys, tmp_path / "out.tiff",
            ".png, .jpg, .jpeg, .webp")
