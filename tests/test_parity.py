"""The PyTorch engine against real Caffe: blob values and input gradients, network by network.

Marked `pycaffe`: skipped where pycaffe is not installed (tests/conftest.py), run wherever
it is (scripts/install_pycaffe.sh; .ci/run installs it). Weights are random, drawn here and
saved by Caffe itself (`net.save`), or open_nsfw's trained ones, so both engines read the
same caffemodel.

Tolerances (float32 precision). The engines order their float32 sums differently, so:
- blob values and losses: VALUE_TOLERANCE = 1e-5 of the blob's largest |value| (the
  loss: of the sum of its terms' magnitudes); observed at most 2e-6 (GoogLeNet, ResNet).
- input gradients on the small networks: GRADIENT_TOLERANCE = 1e-5 of the largest
  |gradient|, elementwise; observed at most 1.2e-6. Except where the exact gradient is 0
  and Caffe's is float32 noise (amplify_neuron of a Softmax output summed over the axis
  it normalises, a constant): there the rounding, which differs with the BLAS kernels
  (OPENBLAS_CORETYPE), is all there is, and its error relative to the tiny result is any
  number (3x seen). The scale of such a computation is that of the values summed: the
  input gradient of a top gradient with the same magnitudes and random signs, which
  nothing cancels (`backward_scale`). Observed over every case: rounding errors at most
  7e-7 of it, real gradients at least 0.36 of it. So a Caffe gradient within
  FLOAT32_NOISE = 1e-5 of its scale is noise, and ours must be too (a plumbing error gives
  a gradient at the scale); any other is held to GRADIENT_TOLERANCE as above.
- input gradients on GoogLeNet and ResNet-50 at 224x224: DEEP_GRADIENT_TOLERANCE = 5e-2
  in relative L2 norm. There a gradient is not a continuous function of the rounding:
  where a max-pooling window's two largest inputs, or a ReLU's input and 0, are closer
  than float32 resolves, the engines route the gradient differently (either one can be
  the "wrong" one: both differ as much from a float64 reference). For some inputs no tie
  flips (errors ~1e-6); for others one does, and a whole receptive field's gradient
  moves: at most 5e-3 of the norm observed here, 1e-2 over other inputs we tried. A
  plumbing error (a backward pass that skips an in-place ReLU, stale diffs, the wrong
  blob) changes tens of percent, and the exact comparisons above pin each layer type.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image
from skimage import data as samples

from cnnvis import cli
from cnnvis.caffe import CaffeNet, caffe_pb2 as pb, parse_prototxt, read_caffemodel, read_prototxt
from cnnvis.caffe.layers import BUILDERS
from cnnvis.errors import UserError
from cnnvis.googlenet import googlenet_deploy
from cnnvis.engine import TorchEngine
from cnnvis.objectives import Objective, amplify_layer, amplify_neuron, guided, weighted
from cnnvis.pycaffe_engine import CaffeEngine, import_caffe, load_caffe_engine
from tests.caffe_files import INPUT, NSFW_FOLDER, PLAIN_CNN, RESIDUAL, needs_nsfw, write_model

pytestmark = pytest.mark.pycaffe

VALUE_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-5
FLOAT32_NOISE = 1e-5
DEEP_GRADIENT_TOLERANCE = 5e-2

# ------------------------------------------------------------------ helpers


def save_random_weights(deploy: Path, seed: int) -> Path:
    """Caffe builds `deploy`, its parameters are drawn from `seed`, and Caffe saves them."""
    caffe = import_caffe()
    net = caffe.Net(str(deploy), caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        arrays = [blob.data for blob in blobs]
        if net.layer_dict[name].type == "BatchNorm":   # running mean and variance sums, factor
            arrays[0][...] = rng.normal(size=arrays[0].shape)
            arrays[1][...] = rng.uniform(0.5, 2.0, size=arrays[1].shape)
            arrays[2][...] = rng.uniform(0.5, 2.0, size=arrays[2].shape)
            continue
        for array in arrays:   # He-style scale keeps activations of deep nets in range
            fan_in = math.prod(array.shape[1:])
            array[...] = rng.normal(scale=math.sqrt(2 / fan_in), size=array.shape)
    weights = deploy.with_suffix(".caffemodel")
    net.save(str(weights))
    return weights


def both_engines(deploy: Path | pb.NetParameter, weights: Path) -> tuple[CaffeEngine, TorchEngine]:
    """(real Caffe, our PyTorch engine) for one prototxt (file or NetParameter) and caffemodel."""
    network = CaffeNet(deploy if isinstance(deploy, pb.NetParameter) else read_prototxt(deploy),
                       read_caffemodel(weights)).eval()
    return load_caffe_engine(deploy, weights), TorchEngine(network)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str) -> None:
    """Elementwise |actual - expected| <= tolerance * max |expected| (float32 precision)."""
    assert actual.shape == expected.shape, what
    scale = float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert error <= tolerance * scale, f"{what}: max error {error:.3g}, largest value {scale:.3g}"


def backward_scale(torch_engine: TorchEngine, x: torch.Tensor, target: str,
                   top: torch.Tensor) -> float:
    """The scale of the backward pass from `target` with top gradient `top`: the largest
    |input gradient| for a top gradient with `top`'s magnitudes and random (fixed) signs."""
    signs = torch.randint(0, 2, top.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fixed = (signs * top.abs()).detach()
    _, gradient = torch_engine.objective_gradient(x, {target: lambda a: ((a * fixed).sum(), fixed)})
    return float(gradient.abs().max())


def relative_l2(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def objectives(blob: torch.Tensor) -> dict[str, Objective]:
    """Both objectives for a blob (N, C, ...): amplify_layer with the clip at the median
    |value| (both parts of its top gradient count), amplify_neuron of the liveliest channel."""
    clip = float(blob.abs().median())
    channel = int(blob.abs().transpose(0, 1).reshape(blob.shape[1], -1).sum(1).argmax())
    return {"amplify_layer": amplify_layer(1.0, 0.5, clip), "amplify_neuron": amplify_neuron(channel)}


def assert_same_blobs(caffe_engine: CaffeEngine, torch_engine: TorchEngine,
                      x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Same targetable blobs, same values at each (one forward pass per engine); Caffe's blobs."""
    assert caffe_engine.blob_names == torch_engine.blob_names
    assert caffe_engine.input_size == torch_engine.input_size
    expected = caffe_engine.blobs(x)
    with torch.no_grad():
        values = torch_engine.network.blobs(x)
    for name, value in expected.items():
        assert_close(values[name], value, VALUE_TOLERANCE, f"blob {name}")
    return expected


def all_cases(blobs: dict[str, torch.Tensor]) -> list[tuple[str, Objective]]:
    """(target, objective) for every blob and both objectives."""
    return [(target, objective) for target, value in blobs.items()
            for objective in objectives(value).values()]


def compare_gradients(caffe_engine: CaffeEngine, torch_engine: TorchEngine, x: torch.Tensor,
                      blobs: dict[str, torch.Tensor], cases: list[tuple[str, Objective]],
                      deep: bool = False) -> None:
    """Both engines' loss and input gradient for each (target, objective) case.

    Losses agree within VALUE_TOLERANCE of the sum of their terms' magnitudes (the loss
    of |blob|), as terms of both signs can cancel; gradients elementwise within
    GRADIENT_TOLERANCE (both within FLOAT32_NOISE of their `backward_scale` where Caffe's
    is float32 noise) or, when `deep`, in relative L2 norm within DEEP_GRADIENT_TOLERANCE.
    """
    for target, objective in cases:
        caffe_loss, caffe_gradient = caffe_engine.objective_gradient(x, {target: objective})
        loss, gradient = torch_engine.objective_gradient(x, {target: objective})
        magnitude = abs(float(objective(blobs[target].abs())[0]))
        assert abs(float(loss - caffe_loss)) <= VALUE_TOLERANCE * magnitude, f"loss at {target}"
        if deep:
            assert float(caffe_gradient.abs().max()) > 0, f"{target}: no gradient reaches the input"
            error = relative_l2(gradient, caffe_gradient)
            assert error <= DEEP_GRADIENT_TOLERANCE, f"gradient from {target}: relative error {error:.3g}"
            continue
        scale = backward_scale(torch_engine, x, target, objective(blobs[target])[1])
        assert scale > 0, f"{target}: no gradient reaches the input"
        noise = FLOAT32_NOISE * scale
        if float(caffe_gradient.abs().max()) <= noise:   # the exact gradient is 0
            largest = float(gradient.abs().max())
            assert largest <= noise, (f"gradient from {target}: Caffe's is float32 noise (at most "
                                      f"{noise:.3g}), ours is not: {largest:.3g}")
        else:
            assert_close(gradient, caffe_gradient, GRADIENT_TOLERANCE, f"gradient from {target}")


# ------------------------------------------------------- small networks

SMALL_NETWORKS = {"plain_cnn": PLAIN_CNN, "residual": RESIDUAL}


def small_network_files(folder: Path, text: str) -> tuple[Path, Path]:
    """The prototxt `text` and random weights for it, in `folder`."""
    deploy = folder / "deploy.prototxt"
    deploy.write_text(text)
    return deploy, save_random_weights(deploy, seed=0)


# Module-wide: loading a Caffe network takes half a second (see `load_caffe_engine`).
@pytest.fixture(scope="module")
def plain_cnn_files(tmp_path_factory) -> tuple[Path, Path]:
    return small_network_files(tmp_path_factory.mktemp("plain_cnn"), PLAIN_CNN)


@pytest.fixture(scope="module")
def plain_cnn(plain_cnn_files) -> tuple[CaffeEngine, TorchEngine]:
    return both_engines(*plain_cnn_files)


@pytest.fixture(scope="module")
def residual(tmp_path_factory) -> tuple[CaffeEngine, TorchEngine]:
    return both_engines(*small_network_files(tmp_path_factory.mktemp("residual"), RESIDUAL))


def random_input(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(scale=scale, size=shape).astype(np.float32))


def test_small_networks_cover_every_layer_type_of_the_importer():
    types = {layer.type for text in SMALL_NETWORKS.values() for layer in parse_prototxt(text).layer}
    assert types - {"Input"} == set(BUILDERS)


@pytest.mark.parametrize("name", SMALL_NETWORKS)
def test_small_network_every_blob_and_gradient(request, name):
    caffe_engine, torch_engine = request.getfixturevalue(name)
    x = random_input((2, 3) + caffe_engine.input_size, seed=1)   # batch 2: Caffe reshapes
    blobs = assert_same_blobs(caffe_engine, torch_engine, x)
    compare_gradients(caffe_engine, torch_engine, x, blobs, all_cases(blobs))


def test_caffe_gradient_does_not_depend_on_earlier_calls(plain_cnn):
    """Caffe's backward pass from `sigmoid` also runs the branch norm1 -> tanh (it comes
    before `sigmoid`'s last layer); a deeper target leaves diffs there that must not leak."""
    caffe_engine, torch_engine = plain_cnn
    x = random_input((1, 3) + caffe_engine.input_size, seed=2)
    objective = amplify_layer(1.0, 1.0, 1.0)
    caffe_engine.objective_gradient(x, {"pool2": objective})   # writes tanh's diff
    assert float(np.abs(caffe_engine.net.blobs["tanh"].diff).max()) > 0
    compare_gradients(caffe_engine, torch_engine, x, caffe_engine.blobs(x), [("sigmoid", objective)])


@pytest.mark.parametrize("name", ["several_layers", "channels", "guide", "shared_writer"])
def test_the_objectives_beyond_2015(plain_cnn, residual, name):
    """Several blobs set before one backward pass (Caffe runs it in segments), channels and
    the guide: both engines give the same loss and input gradient."""
    caffe_engine, torch_engine = residual if name == "shared_writer" else plain_cnn
    x = random_input((2, 3) + caffe_engine.input_size, seed=5, scale=2.0)
    shapes = torch_engine.blob_shapes()
    guide = random_input((1,) + shapes.get("cat", (1,)), seed=6)
    objective = {
        # norm1 feeds cat, which feeds pool2: gradients from deeper blobs flow through.
        "several_layers": {"norm1": weighted(0.7, amplify_layer(1.0, 0.5, 0.3)),
                           "cat": weighted(-1.5, amplify_layer(1.0, 1.0, 1.0)),
                           "fc": amplify_neuron(2), "tanh": amplify_layer(1.0, 1.0, 1.0)},
        "channels": {"cat": amplify_layer(1.0, 1.0, 1.0, channels=[0, 3, 5])},
        "guide": {"cat": guided(guide)},
        # "a" and "b" are the tops of one Split layer; conv0 is rewritten in place three times.
        "shared_writer": {"a": amplify_layer(1.0, 1.0, 1.0), "b": weighted(2.0, amplify_neuron(1)),
                          "conv0": amplify_layer(0.5, 1.0, 1.0), "max": amplify_neuron(0)},
    }[name]
    caffe_loss, caffe_gradient = caffe_engine.objective_gradient(x, objective)
    loss, gradient = torch_engine.objective_gradient(x, objective)
    assert float(loss) == pytest.approx(float(caffe_loss), rel=1e-4, abs=1e-4)
    assert float(caffe_gradient.abs().max()) > 0
    assert_close(gradient, caffe_gradient, GRADIENT_TOLERANCE, name)


def test_batch_size_changes_between_calls(plain_cnn):
    caffe_engine, torch_engine = plain_cnn
    objective = amplify_layer(1.0, 1.0, 1.0)
    for batch in (3, 1, 2):
        x = random_input((batch, 3) + caffe_engine.input_size, seed=batch)
        compare_gradients(caffe_engine, torch_engine, x, caffe_engine.blobs(x), [("cat", objective)])


# ------------------------------------------------------- legacy V1 files

# V1 layer types, the legacy input declaration, blobs_lr/weight_decay; the caffemodel
# is V1 too (`layers` with 4-D num/channels/height/width blob shapes).
V1_NETWORK = """
name: "legacy"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
         blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
         convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
         pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 } }
layers { name: "split" type: SPLIT bottom: "norm1" top: "a" top: "b" }
layers { name: "sigmoid" type: SIGMOID bottom: "a" top: "sigmoid" }
layers { name: "tanh" type: TANH bottom: "b" top: "tanh" }
layers { name: "sum" type: ELTWISE bottom: "sigmoid" bottom: "tanh" top: "sum" }
layers { name: "cat" type: CONCAT bottom: "sum" bottom: "a" top: "cat" }
layers { name: "drop" type: DROPOUT bottom: "cat" top: "cat" }
layers { name: "flat" type: FLATTEN bottom: "cat" top: "flat" }
layers { name: "fc" type: INNER_PRODUCT bottom: "flat" top: "fc" inner_product_param { num_output: 3 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_legacy_v1_files_as_caffe_upgrades_them(tmp_path):
    rng = np.random.default_rng(3)
    weights = {"conv1": [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)],
               "fc": [rng.normal(scale=0.1, size=(3, 8 * 3 * 3)), rng.normal(size=3)]}
    caffe_engine, torch_engine = both_engines(*write_model(tmp_path, V1_NETWORK, weights, v1=True))
    x = random_input((2, 3, 9, 9), seed=4)
    blobs = assert_same_blobs(caffe_engine, torch_engine, x)
    assert list(blobs) == ["conv1", "pool1", "norm1", "a", "b", "sigmoid", "tanh", "sum", "cat",
                           "flat", "fc", "prob"]
    compare_gradients(caffe_engine, torch_engine, x, blobs, all_cases(blobs))


# ------------------------------------------------------- real architectures


def amplify_layer_cases(blobs: dict[str, torch.Tensor], targets: list[str]) -> list[tuple[str, Objective]]:
    return [(target, objectives(blobs[target])["amplify_layer"]) for target in targets]


def test_googlenet_with_random_weights_saved_by_caffe(tmp_path):
    deploy = tmp_path / "googlenet.prototxt"
    deploy.write_text(text_format.MessageToString(googlenet_deploy()))
    weights = save_random_weights(deploy, seed=5)
    caffe_engine, torch_engine = both_engines(googlenet_deploy(), weights)
    x = random_input((1, 3, 224, 224), seed=6, scale=50.0)   # pixels minus the mean colour
    blobs = assert_same_blobs(caffe_engine, torch_engine, x)
    assert len(blobs) == 84
    # Every blob, deepest first: each backward pass then meets diffs that deeper ones left.
    compare_gradients(caffe_engine, torch_engine, x, blobs,
                      amplify_layer_cases(blobs, list(blobs)[::-1]), deep=True)


@needs_nsfw
def test_open_nsfw_from_the_nsfw_package():
    """Yahoo's ResNet-50 with trained weights: BatchNorm, Scale, ReLU in place, Eltwise."""
    folder = NSFW_FOLDER
    caffe_engine, torch_engine = both_engines(folder / "deploy.prototxt",
                                              folder / "resnet_50_1by2_nsfw.caffemodel")
    rgb = Image.fromarray(samples.chelsea()).resize((224, 224), Image.BICUBIC)
    bgr = np.asarray(rgb, np.float32)[..., ::-1] - np.array([104, 117, 123], np.float32)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]   # (1, 3, 224, 224)
    blobs = assert_same_blobs(caffe_engine, torch_engine, x)
    targets = ["prob", "fc_nsfw", "eltwise_stage3_block2", "conv_stage2_block0_branch2b",
               "eltwise_stage0_block1", "conv_1"]
    compare_gradients(caffe_engine, torch_engine, x, blobs, amplify_layer_cases(blobs, targets),
                      deep=True)


# ------------------------------------------------------- the command line


def test_cli_both_backends_make_the_same_image(tmp_path):
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(INPUT.format("dim: 1 dim: 3 dim: 20 dim: 20") + """
        layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
                convolution_param { num_output: 8 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
        layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
                pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
        layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
                convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
        layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
    """)
    weights = save_random_weights(deploy, seed=7)

    def dream(backend: str, target: str) -> np.ndarray:
        output = tmp_path / f"{backend}_{target}.png"
        status = cli.main(["--deploy_txt", str(deploy), "--caffe_model", str(weights),
                           "--target_layer", target, "--backend", backend, "--gpu", "-1",
                           "--num_steps", "3", "--seed", "0", "--initialization_scale", "30",
                           "--output_file", str(output)])
        assert status == 0
        return np.asarray(Image.open(output), np.int16)   # (20, 20, 3) RGB

    image = dream("torch", "conv2")
    assert np.abs(image - dream("caffe", "conv2")).max() <= 1
    # Not vacuous: the CNN's gradient shapes the image (another target, another image).
    assert np.abs(image - dream("torch", "conv1")).max() > 5


# ------------------------------------------------------- errors
# (those that need no pycaffe are in tests/test_errors.py, section --backend caffe)


def test_files_caffe_refuses_are_user_errors_with_caffes_reason(tmp_path, plain_cnn_files):
    deploy, weights = plain_cnn_files
    _, other_weights = small_network_files(tmp_path, RESIDUAL)
    with pytest.raises(UserError, match=r"Caffe cannot load .*layer 'fc'; shape mismatch"):
        load_caffe_engine(deploy, other_weights)
    unknown_type = tmp_path / "unknown_type.prototxt"
    unknown_type.write_text(PLAIN_CNN.replace('"Sigmoid"', '"NoSuchLayer"'))
    with pytest.raises(UserError, match=r"type 'NoSuchLayer', which cnn-vis does not support"):
        load_caffe_engine(unknown_type, weights)   # refused before Caffe sees it
    with pytest.raises(UserError, match="not found"):
        load_caffe_engine(deploy, tmp_path / "missing.caffemodel")


def test_gpu_that_caffe_cannot_use_falls_back_to_the_cpu(plain_cnn_files, plain_cnn, capsys):
    engine = load_caffe_engine(*plain_cnn_files, torch.device("cuda", 99))   # no such GPU anywhere
    assert "cannot use GPU 99" in capsys.readouterr().err
    x = random_input((1, 3, 13, 11), seed=8)
    cpu_engine, _ = plain_cnn
    np.testing.assert_array_equal(engine.forward(x, "fc").numpy(), cpu_engine.forward(x, "fc").numpy())


def test_unknown_target_suggests_close_names(plain_cnn):
    caffe_engine, _ = plain_cnn
    x = random_input((1, 3, 13, 11), seed=9)
    with pytest.raises(UserError, match=r"no blob named 'conv3'.*conv1"):
        caffe_engine.forward(x, "conv3")
    with pytest.raises(UserError, match="no blob named 'data'"):   # the input is no target
        caffe_engine.forward(x, "data")
