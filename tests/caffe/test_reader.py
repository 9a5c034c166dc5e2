"""Fuzzing the Caffe readers (issue #8): whatever the bytes, a model file parses or is a UserError.

Hypothesis feeds random data and mutations of small real files (bit flips, inserted,
deleted and overwritten bytes, truncation, splices, and, for text, changed numbers and
names, copied and dropped fields and lines, deep nesting) to `read_caffemodel`,
`read_prototxt`/`parse_prototxt` and `CaffeNet` construction (with weights and without).
The only outcomes allowed are success and `UserError`: never another exception, and
never a hang (each example must finish within EXAMPLE_SECONDS). A network that is built
must also run, and make the blob shapes its layers' builders computed.

The normal run does a fast subset (about 200 cases). The long run, several thousand
cases, is `pytest -m slow tests/caffe/test_reader.py`.
"""
from __future__ import annotations

import contextlib
import math
import re
import signal
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cnnvis.caffe import CaffeNet, parse_prototxt, read_caffemodel, read_prototxt
from cnnvis.caffe import caffe_pb2 as pb
from cnnvis.caffe.layers import BUILDERS
from cnnvis.errors import UserError
from cnnvis.caffe.writer import caffemodel_bytes
from tests.caffe.test_net import TINY, TINY_V1, tiny_weights

EXAMPLE_SECONDS = 10
FORWARD_VALUES = 2 ** 22  # networks whose blobs hold at most this many values also run forward

# The layer types that TINY lacks, with shapes that work, so mutations reach their builders.
RESIDUAL = """
name: "residual"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 group: 1 dilation: 1 bias_term: false } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 1e-5 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "split" type: "Split" bottom: "conv" top: "left" top: "right" }
layer { name: "squash" type: "TanH" bottom: "left" top: "squash" }
layer { name: "gate" type: "Sigmoid" bottom: "right" top: "gate" }
layer { name: "sum" type: "Eltwise" bottom: "squash" bottom: "gate" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: -0.5 } }
layer { name: "drop" type: "Dropout" bottom: "sum" top: "sum" dropout_param { dropout_ratio: 0.5 } }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "pool" top: "flat" flatten_param { axis: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"
        inner_product_param { num_output: 3 transpose: true } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" softmax_param { axis: 1 } }
"""
PROTOTXTS = [TINY, TINY_V1, RESIDUAL]
TINY_WEIGHTS = tiny_weights()
CAFFEMODELS = [caffemodel_bytes(TINY_WEIGHTS), caffemodel_bytes(TINY_WEIGHTS, v1=True)]
TINY_BLOBS = {layer.name: list(layer.blobs)   # TINY's weights as read_caffemodel returns them
              for layer in pb.NetParameter.FromString(CAFFEMODELS[0]).layer}

# Replacements for numbers and names: edge cases of each field type, and real names.
ODD_NUMBERS = ["0", "-1", "1", "2", "5", "64", "-0.0", "1.5", "1e30", "nan", "-inf",
               "2147483647", "2147483648", "4294967296", "-9223372036854775809", "0x10"]
NAMES = sorted({f'"{name}"' for name in re.findall(r'"[^"]*"', "".join(PROTOTXTS))}
               | {f'"{layer_type}"' for layer_type in BUILDERS} | {'""', '"Input"', '"Data"'})
TOKEN = re.compile(r'"[^"]*"|-?\d[\w.+-]*')
FIELD = re.compile(r'\w+: (?:"[^"]*"|[\w.+-]+)')


# ----------------------------------------------------------------------------- mutations


@st.composite
def mutated_bytes(draw, seeds: list[bytes]) -> bytes:
    """A seed file with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(
            ["flip", "overwrite", "insert", "delete", "truncate", "splice"]))
        if operation == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "overwrite":
            data[position:position + 1] = bytes([draw(st.integers(0, 255))])
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[position:]
        elif operation == "splice":   # this file's head, another seed's tail
            other = draw(st.sampled_from(seeds))
            data[position:] = other[draw(st.integers(0, len(other))):]
    return bytes(data)


@st.composite
def mutated_text(draw) -> str:
    """A seed prototxt with a few token-, line- or byte-level mutations."""
    text = draw(st.sampled_from(PROTOTXTS))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(
            ["number", "name", "copy_field", "drop_field", "drop_line", "copy_line", "nest",
             "bytes"]))
        tokens = list(TOKEN.finditer(text))
        fields = list(FIELD.finditer(text))
        lines = text.splitlines(keepends=True)
        if operation in ("number", "name") and tokens:
            token = draw(st.sampled_from(tokens))
            replacement = draw(st.sampled_from(NAMES if operation == "name" else ODD_NUMBERS))
            text = text[:token.start()] + replacement + text[token.end():]
        elif operation == "copy_field" and fields:   # e.g. a second bottom, or kernel_size
            field = draw(st.sampled_from(fields))
            position = draw(st.sampled_from([field.end()] + [f.end() for f in fields]))
            text = text[:position] + " " + field.group(0) + text[position:]
        elif operation == "drop_field" and fields:   # e.g. a layer without its top
            field = draw(st.sampled_from(fields))
            text = text[:field.start()] + text[field.end():]
        elif operation == "drop_line" and lines:
            del lines[draw(st.integers(0, len(lines) - 1))]
            text = "".join(lines)
        elif operation == "copy_line" and lines:
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(lines)))
            text = "".join(lines)
        elif operation == "nest":   # deeply nested braces, as in a runaway generated file
            position = draw(st.integers(0, len(text)))
            opening = draw(st.sampled_from(["layer { ", "unknown { ", "shape < "]))
            text = text[:position] + opening * draw(st.integers(1, 3000)) + text[position:]
        elif operation == "bytes":
            text = draw(mutated_bytes([text.encode()])).decode("utf-8", errors="replace")
    return text


CAFFEMODEL_DATA = st.one_of(st.binary(max_size=512), mutated_bytes(CAFFEMODELS),
                            mutated_bytes(CAFFEMODELS + [p.encode() for p in PROTOTXTS]))
PROTOTXT_TEXT = st.one_of(st.text(max_size=256), mutated_text())


# ----------------------------------------------------------------------------- outcomes


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail an example that runs too long (a hang) instead of waiting for it forever."""
    def hang(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def succeeds_or_user_error(function, *args):
    """`function(*args)`, or None when it raises UserError; any other exception fails the test."""
    with time_limit(EXAMPLE_SECONDS):
        try:
            result = function(*args)
        except UserError as error:
            assert str(error).strip(), "a UserError needs a message"
            event(f"{function.__name__}: UserError")   # see --hypothesis-show-statistics
            return None
    event(f"{function.__name__}: success")
    return result


def check_caffemodel(path: Path, data: bytes) -> None:
    """Bytes as a caffemodel file, then (if read) as the weights of the tiny network."""
    path.write_bytes(data)
    weights = succeeds_or_user_error(read_caffemodel, path)
    if weights is not None:
        assert weights and all(isinstance(blobs, list) for blobs in weights.values())
        network = succeeds_or_user_error(CaffeNet, parse_prototxt(TINY), weights)
        if network is not None:   # corrupt values are refused, not used
            assert all(bool(buffer.isfinite().all()) for buffer in network.buffers())


def check_prototxt(path: Path, example: tuple[str, bool]) -> None:
    """Text as a prototxt, then (if parsed) as a network with the tiny weights or random ones."""
    text, with_weights = example
    net = succeeds_or_user_error(parse_prototxt, text)
    if net is not None:
        network = succeeds_or_user_error(CaffeNet, net, TINY_BLOBS if with_weights else None)
        if network is not None:
            assert len(network.input_size) == 2
            if sum(math.prod(shape) for shape in network.blob_shapes.values()) <= FORWARD_VALUES:
                check_forward(network)


def check_forward(network: CaffeNet) -> None:
    """A network that was built runs, and makes the blob shapes its builders promised."""
    with time_limit(EXAMPLE_SECONDS), torch.no_grad():
        blobs = network.blobs(torch.zeros((1,) + network.input_shape))
    assert {name: tuple(value.shape) for name, value in blobs.items()} == network.blob_shapes
    event("CaffeNet: ran forward")


def check_prototxt_file(path: Path, data: bytes) -> None:
    """Bytes as a prototxt file (not UTF-8, binary, ...)."""
    path.write_bytes(data)
    succeeds_or_user_error(read_prototxt, path)


# ----------------------------------------------------------------------------- tests


def fuzz_test(strategy: st.SearchStrategy, check, examples: int):
    """A test that runs `check(scratch file, example)` on `examples` examples of `strategy`."""
    def test(scratch_file: Path, example) -> None:
        check(scratch_file, example)
    # Named after the check: Hypothesis keys its database of failing examples by the name, so
    # the fast run replays what a long run found, and the targets keep separate entries.
    test.__name__ = test.__qualname__ = f"fuzz_{check.__name__}"
    return settings(max_examples=examples, deadline=None, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large])(given(example=strategy)(test))


@pytest.fixture(scope="module")
def scratch_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzzed"


PROTOTXT_EXAMPLES = st.tuples(PROTOTXT_TEXT, st.booleans())
PROTOTXT_FILE_DATA = mutated_bytes([text.encode() for text in PROTOTXTS])

# The fast subset, in every run: about 200 cases.
test_caffemodel = fuzz_test(CAFFEMODEL_DATA, check_caffemodel, 80)
test_prototxt = fuzz_test(PROTOTXT_EXAMPLES, check_prototxt, 100)
test_prototxt_file = fuzz_test(PROTOTXT_FILE_DATA, check_prototxt_file, 20)
# The long run (pytest -m slow tests/caffe/test_reader.py): several thousand cases.
test_caffemodel_long = pytest.mark.slow(fuzz_test(CAFFEMODEL_DATA, check_caffemodel, 2500))
test_prototxt_long = pytest.mark.slow(fuzz_test(PROTOTXT_EXAMPLES, check_prototxt, 5000))
test_prototxt_file_long = pytest.mark.slow(fuzz_test(PROTOTXT_FILE_DATA, check_prototxt_file, 500))


def test_seeds_are_valid(scratch_file):
    """The unmutated seeds load, so mutations start from files that pass every check."""
    for data in CAFFEMODELS:
        scratch_file.write_bytes(data)
        CaffeNet(parse_prototxt(TINY), read_caffemodel(scratch_file))
    for text in PROTOTXTS:
        CaffeNet(parse_prototxt(text), None)
    CaffeNet(parse_prototxt(TINY), TINY_BLOBS)


@pytest.mark.parametrize("text, key_words", [
    (RESIDUAL.replace("dim: 3 dim: 8", "dim: 0 dim: 8"),
     ["input blob 'data' has shape (1, 0, 8, 8)", "at least 1"]),
    ('layer { name: "data" type: "Input" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }',
     ["Input layer 'data' has no top blob", 'top: "data"']),
    (RESIDUAL.replace('type: "TanH" bottom: "left"', 'type: "TanH"'),
     ["layer 'squash' (TanH) has 0 bottom blob(s) but takes exactly 1"]),
    (RESIDUAL.replace('bottom: "data" top: "conv"', 'bottom: "data" bottom: "data" top: "conv"'),
     ["layer 'conv' (Convolution) has 2 bottom blob(s) but takes exactly 1"]),
    (RESIDUAL.replace('bottom: "squash" bottom: "gate"', 'bottom: "squash"'),
     ["layer 'sum' (Eltwise) has 1 bottom blob(s) but takes at least 2"]),
    (RESIDUAL.replace("num_output: 4 kernel_size", "num_output: 2000000000 kernel_size"),
     ["weight blob of layer 'conv' (Convolution) would have shape (2000000000, 3, 3, 3)",
      "more than cnn-vis holds (268435456)"]),
    (RESIDUAL.replace("dim: 8 dim: 8", "dim: 100000 dim: 100000"),
     ["input blob 'data' would have shape (1, 3, 100000, 100000)", "30000000000 values"]),
    (RESIDUAL.replace("dim: 8 dim: 8", "dim: 8000 dim: 8000").replace(
        "num_output: 4 kernel_size", "num_output: 5 kernel_size"),
     ["blob 'conv' of layer 'conv' (Convolution) would have shape (1, 5, 8000, 8000)"]),
    ("layer { " * 3000, ["braces are nested too deeply"]),
], ids=["zero-input-dim", "input-without-top", "no-bottom", "extra-bottom", "one-bottom-eltwise",
        "huge-random-blob", "huge-input", "huge-layer-output", "deep-nesting"])
def test_broken_networks_are_user_errors(text, key_words):
    """Regressions: each of these once raised another exception, or tried to allocate 100 GB
    or more (the mutations above reach all of them)."""
    with pytest.raises(UserError) as error:
        CaffeNet(parse_prototxt(text), None)
    for word in key_words:
        assert word in str(error.value)


def blob(shape: tuple[int, ...], values: tuple[float, ...] = (), double: bool = False
         ) -> pb.BlobProto:
    """A BlobProto written by hand, values and declared shape free to disagree."""
    stored = pb.BlobProto()
    stored.shape.dim.extend(shape)
    (stored.double_data if double else stored.data).extend(values)
    return stored


CONVOLUTION = """input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: NUM_OUTPUT kernel_size: KERNEL bias_term: false } }"""


@pytest.mark.parametrize("num_output, kernel, stored, problem", [
    # 2**31 * 3 * 2**31 * 2**31 values: np.prod wrapped this to 0, which an empty blob matched.
    # The kernel is refused first now, for being larger than PyTorch takes.
    (2 ** 31, 2 ** 31, blob((2 ** 31, 3, 2 ** 31, 2 ** 31)),
     "kernel_size 2147483648 is too large (at most 2147483647)"),
    (1, 1, blob((1, 3, 1, 1), (0.5, 1.0)), "holds 2 values but its shape (1, 3, 1, 1) needs 3"),
    (1, 1, blob((1, 3, 1, 1), (0.5, float("nan"), 1.0)), "NaN or infinite"),
    (1, 1, blob((1, 3, 1, 1), (0.5, 1e300, 1.0), double=True), "too large for float32"),
], ids=["shape-overflowing-int64", "too-few-values", "nan", "double-beyond-float32"])
def test_broken_weights_are_user_errors(num_output, kernel, stored, problem, recwarn):
    text = CONVOLUTION.replace("NUM_OUTPUT", str(num_output)).replace("KERNEL", str(kernel))
    with pytest.raises(UserError, match=re.escape(problem)):
        CaffeNet(parse_prototxt(text), {"conv": [stored]})
    assert not recwarn.list   # no numpy warning on stderr besides the one message
