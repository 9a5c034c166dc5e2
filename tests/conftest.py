"""Fixtures shared by the test modules: the tiny Caffe network and a small photo; and the
`pycaffe` marker."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.caffe_files import TINY_DREAM_NET, tiny_dream_weights, write_model
from tests.cli_contract import PREVIOUS_OUTPUT

# Found, not imported (importing Caffe takes time and sets GLOG_minloglevel): where pycaffe
# is installed but broken, its tests fail with the import error instead of skipping.
PYCAFFE_INSTALLED = importlib.util.find_spec("caffe") is not None


def pytest_collection_modifyitems(config, items):
    """The one way to say that a test needs pycaffe (real Caffe, or a package that imports
    it): `@pytest.mark.pycaffe` (or `pytestmark`). Where pycaffe is not installed, such tests
    are skipped with the reason. (open_nsfw's files need no Caffe: tests/caffe_files.py finds
    the nsfw package's folder without importing it.)"""
    if PYCAFFE_INSTALLED:
        return
    skip = pytest.mark.skip(reason="needs pycaffe (real Caffe), which is not installed here; "
                                   "scripts/install_pycaffe.sh builds it")
    for item in items:
        if item.get_closest_marker("pycaffe") is not None:
            item.add_marker(skip)


@pytest.fixture
def model_files(tmp_path) -> tuple[Path, Path]:
    """The tiny dream network (16x16 input, target conv2) as deploy.prototxt and caffemodel."""
    return write_model(tmp_path, TINY_DREAM_NET, tiny_dream_weights())


@pytest.fixture
def tiny_model(model_files) -> list[str]:
    """Command-line options that select the tiny network on the CPU."""
    deploy, weights = model_files
    return ["--deploy_txt", str(deploy), "--caffe_model", str(weights), "--gpu", "-1",
            "--target_layer", "conv2"]


@pytest.fixture
def photo(tmp_path) -> Path:
    """A 20x30 PNG of random colours."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def output(tmp_path) -> Path:
    """An output file that already holds an earlier result."""
    path = tmp_path / "out.png"
    path.write_bytes(PREVIOUS_OUTPUT)
    return path


@pytest.fixture
def tiny(tiny_model, output) -> list[str]:
    """Arguments for a fast, valid dream on the tiny network (noise start, 16x16)."""
    return tiny_model + ["--num_steps", "2", "--iter_behavior", "", "--seed", "0",
                         "--output_file", str(output)]
