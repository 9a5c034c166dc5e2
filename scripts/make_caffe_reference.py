"""Remake tests/data/caffe_reference.npz: real Caffe's blob values and input gradients.

tests/test_stored_parity.py holds cnn-vis' PyTorch engine to these numbers in every test
run, also where pycaffe is not installed (tests/test_parity.py compares with a live Caffe).

Usage, from the repository root, with pycaffe installed (scripts/install_pycaffe.sh):

    .venv/bin/python scripts/make_caffe_reference.py

What is stored, per network (`REFERENCES`): some blobs' values after one forward pass,
and the input gradient (the input blob's diff) that Caffe's backward pass computes from
a few of those blobs, each with a fixed random top diff. Keys are
`<network>:blob:<blob name>` and `<network>:gradient:<blob name>` (blob names contain
'/', so ':' separates), float32; `<network>:seeds` (weights, input, top diffs) and
`<network>:prototxt_sha256` (of the network text, before Caffe's `force_backward`) say
what the numbers were made from.

Weights, inputs and top diffs are not stored: they are drawn from the seeds by the
functions below, which the test calls too (it loads this file as a module; nothing here
imports Caffe until `main` runs). Changing a generator, a seed or a network means
running this script again.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # run as `python scripts/make_caffe_reference.py`
    sys.path.insert(0, str(ROOT))

from cnnvis.caffe import CaffeNet, caffe_pb2 as pb, parse_prototxt   # noqa: E402
from cnnvis.caffe.layers import BUILDERS   # noqa: E402
from cnnvis.caffe.net import network_input   # noqa: E402
from cnnvis.googlenet import googlenet_deploy   # noqa: E402
from tests.caffe_files import PLAIN_CNN, RESIDUAL, TINY_DREAM_NET, tiny_dream_weights   # noqa: E402

REFERENCE_FILE = ROOT / "tests" / "data" / "caffe_reference.npz"
SEPARATOR = ":"
Weights = dict[str, list[np.ndarray]]   # layer name -> its parameter blobs, as Caffe orders them


def key(network: str, kind: str, blob: str = "") -> str:
    """The npz key of one stored item, e.g. key('googlenet', 'blob', 'inception_4d/3x3_reduce')."""
    return SEPARATOR.join([network, kind, blob] if blob else [network, kind])


# ------------------------------------------------------------------ generators


def parameter_shapes(net: pb.NetParameter) -> dict[str, list[tuple[int, ...]]]:
    """Each layer's parameter blob shapes, for the layers that have any, in network order:
    what Caffe's `net.params` holds (also for a BatchNorm with batch statistics, whose
    blobs Caffe keeps but does not use)."""
    network = CaffeNet(net, None)   # its builders work out every blob's shape
    shapes = {network.input_name: (1,) + network.input_shape, **network.blob_shapes}
    result = {}
    for layer in net.layer:
        if layer.type == "Input":
            continue
        specs = BUILDERS[layer.type](layer, [shapes[name] for name in layer.bottom]).blobs
        if specs:
            result[layer.name] = [spec.shape for spec in specs]
    return result


def random_weights(net: pb.NetParameter, seed: int) -> Weights:
    """Random parameters drawn from `seed` as tests/test_parity.py's `save_random_weights`
    draws them: every blob N(0, sqrt(2 / fan_in)) with fan_in the product of all but its
    first dimension (He's scale: activations keep their magnitude through deep ReLU
    networks; biases, with fan_in 1, get std sqrt(2), small beside activations of the
    images' scale), except BatchNorm's running mean N(0, 1), variance and scale factor
    U(0.5, 2)."""
    rng = np.random.default_rng(seed)
    types = {layer.name: layer.type for layer in net.layer}
    weights = {}
    for name, shapes in parameter_shapes(net).items():
        if types[name] == "BatchNorm":   # running mean and variance sums, their factor
            arrays = [rng.normal(size=shapes[0]), rng.uniform(0.5, 2.0, size=shapes[1]),
                      rng.uniform(0.5, 2.0, size=shapes[2])]
        else:
            arrays = [rng.normal(scale=math.sqrt(2 / math.prod(shape[1:])), size=shape)
                      for shape in shapes]
        weights[name] = [array.astype(np.float32) for array in arrays]
    return weights


def tiny_dream_net_weights(net: pb.NetParameter, seed: int) -> Weights:
    """tests/caffe_files.py's weights for TINY_DREAM_NET (it draws them from seed 0 itself)."""
    assert seed == 0, "tiny_dream_weights() always draws from seed 0"
    return {name: [np.asarray(array, np.float32) for array in arrays]
            for name, arrays in tiny_dream_weights().items()}


@dataclass(frozen=True)
class Reference:
    """One network's stored results and everything they are made from."""

    name: str                                  # the key prefix
    prototxt: Callable[[], str]                # the network, as prototxt text
    weights: Callable[[pb.NetParameter, int], Weights]   # (network, weight seed) -> weights
    seeds: tuple[int, int, int]                # (weights, input, top diffs)
    batch: int                                 # images in the input
    input_scale: float                         # the input's standard deviation
    blobs: tuple[str, ...]                     # blobs whose values are stored
    gradients: tuple[str, ...]                 # blobs (among `blobs`) back-propagated from

    def network(self) -> pb.NetParameter:
        return parse_prototxt(self.prototxt())

    def prototxt_sha256(self) -> str:
        return hashlib.sha256(self.prototxt().encode()).hexdigest()

    def make_weights(self) -> Weights:
        return self.weights(self.network(), self.seeds[0])

    def make_input(self) -> np.ndarray:
        """(batch, channels, height, width) float32, N(0, input_scale)."""
        shape = (self.batch,) + network_input(self.network())[1]
        rng = np.random.default_rng(self.seeds[1])
        return rng.normal(scale=self.input_scale, size=shape).astype(np.float32)

    def top_diff(self, target: str, shape: tuple[int, ...]) -> np.ndarray:
        """The diff set on `target` (of this shape, batch included) for its gradient: N(0, 1)."""
        rng = np.random.default_rng([self.seeds[2], self.gradients.index(target)])
        return rng.normal(size=shape).astype(np.float32)


REFERENCES = [
    # BVLC GoogLeNet's architecture with random weights; the input like an image minus the
    # mean colour. Small blobs only (conv1/7x7_s2 alone would be 3 MB); every layer before
    # the deepest one stored is on its path. Gradients: from a blob that an in-place ReLU
    # rewrites (Caffe's backward pass must start at the ReLU), and from the classifier
    # (the whole network but the softmax: with random weights the logits spread over
    # hundreds, the softmax is nearly one-hot and its gradient mostly cancellation).
    Reference("googlenet", lambda: text_format.MessageToString(googlenet_deploy()),
              random_weights, seeds=(11, 12, 13), batch=1, input_scale=40.0,
              blobs=("inception_3a/output", "inception_4d/3x3_reduce", "inception_4e/output",
                     "pool5/7x7_s1", "loss3/classifier", "prob"),
              gradients=("inception_4d/3x3_reduce", "loss3/classifier")),
    # The small test networks: every blob (they are tiny). Batch 2 for the two that cover
    # every layer type (BatchNorm with batch statistics pools over the batch).
    Reference("tiny_dream_net", lambda: TINY_DREAM_NET, tiny_dream_net_weights,
              seeds=(0, 21, 22), batch=1, input_scale=30.0,
              blobs=("conv1", "pool1", "conv2"), gradients=("conv2", "pool1")),
    Reference("plain_cnn", lambda: PLAIN_CNN, random_weights, seeds=(31, 32, 33), batch=2,
              input_scale=1.0,
              blobs=("conv1", "pool1", "norm1", "conv2", "norm2", "sigmoid", "tanh", "cat",
                     "pool2", "global", "flat", "fc", "prob"),
              gradients=("prob", "global")),
    Reference("residual", lambda: RESIDUAL, random_weights, seeds=(41, 42, 43), batch=2,
              input_scale=1.0,
              blobs=("conv0", "a", "b", "conv_a", "sum", "prod", "max", "gate_pool", "gate_flat",
                     "gate", "gated", "fc", "prob"),
              gradients=("prob", "sum")),
]


def expected_keys(references: list[Reference] = REFERENCES) -> set[str]:
    """Every key the reference file holds."""
    keys = set()
    for ref in references:
        keys |= {key(ref.name, "seeds"), key(ref.name, "prototxt_sha256")}
        keys |= {key(ref.name, "blob", blob) for blob in ref.blobs}
        keys |= {key(ref.name, "gradient", blob) for blob in ref.gradients}
    return keys


# ------------------------------------------------------------------ Caffe


def caffe_results(caffe, ref: Reference, folder: Path) -> dict[str, np.ndarray]:
    """Run `ref` in real Caffe: its stored blobs' values and input gradients, by key."""
    net_param = caffe.proto.caffe_pb2.NetParameter()
    text_format.Parse(ref.prototxt(), net_param)
    net_param.force_backward = True   # else Caffe computes no diff for the input
    deploy = folder / f"{ref.name}.prototxt"
    deploy.write_text(text_format.MessageToString(net_param))
    net = caffe.Net(str(deploy), caffe.TEST)

    weights = ref.make_weights()
    assert list(net.params) == list(weights), (list(net.params), list(weights))
    for name, arrays in weights.items():
        blobs = net.params[name]
        assert [blob.data.shape for blob in blobs] == [array.shape for array in arrays], name
        for blob, array in zip(blobs, arrays):
            blob.data[...] = array

    x = ref.make_input()
    input_name = net.inputs[0]
    net.blobs[input_name].reshape(*x.shape)
    net.reshape()
    net.blobs[input_name].data[...] = x
    net.forward()
    results = {key(ref.name, "blob", blob): net.blobs[blob].data.copy() for blob in ref.blobs}

    layer_names = list(net.layer_dict)
    for target in ref.gradients:
        # Forward to the layer that last writes the target (its in-place ReLU, say), so the
        # target holds its final value and no later layer has rewritten what backward reads;
        # backward from there, with every diff zeroed first (Caffe never clears them).
        writers = [i for i, tops in enumerate(net.top_names.values()) if target in tops]
        last = layer_names[writers[-1]]
        for blob in net.blobs.values():
            blob.diff[...] = 0
        net.forward(end=last)
        net.blobs[target].diff[...] = ref.top_diff(target, net.blobs[target].data.shape)
        net.backward(start=last)
        gradient = net.blobs[input_name].diff.copy()
        assert np.abs(gradient).max() > 0, f"{ref.name}: no gradient from {target} reaches x"
        results[key(ref.name, "gradient", target)] = gradient
    return results


def main() -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")   # before the import: glog reads it once
    import caffe
    caffe.set_mode_cpu()
    contents: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="cnn-vis-reference-") as folder:
        for ref in REFERENCES:
            contents[key(ref.name, "seeds")] = np.asarray(ref.seeds, np.int64)
            contents[key(ref.name, "prototxt_sha256")] = np.asarray(ref.prototxt_sha256())
            for name, value in caffe_results(caffe, ref, Path(folder)).items():
                contents[name] = np.asarray(value, np.float32)
    assert set(contents) == expected_keys()
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(REFERENCE_FILE, **contents)

    size = REFERENCE_FILE.stat().st_size / 1e6
    print(f"wrote {REFERENCE_FILE.relative_to(ROOT)} ({size:.2f} MB), real Caffe's results:")
    for name, value in contents.items():
        if value.dtype == np.float32:
            print(f"  {name:45s} {str(value.shape):22s} max |value| {np.abs(value).max():.4g}")
        else:
            print(f"  {name:45s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
