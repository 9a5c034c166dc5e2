"""Fixtures shared by the test modules: the tiny Caffe network and a small photo."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.caffe_files import TINY_DREAM_NET, tiny_dream_weights, write_model
from tests.cli_contract import PREVIOUS_OUTPUT


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
