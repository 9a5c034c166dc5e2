"""Reading Caffe files: deploy prototxt (text) and caffemodel (binary) into protobuf messages.

Both are read as data with the `protobuf` package and the project's own subset of
caffe.proto; nothing in a model file is ever executed. Legacy V1 networks
(`layers { type: CONVOLUTION }`) and legacy input declarations (`input:` with
`input_dim`/`input_shape`) are upgraded to the current form on load, as Caffe does.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from cnnvis.caffe import caffe_pb2 as pb
from cnnvis.errors import UserError
from cnnvis.files import read_input

# V1 enum layer types and their current type strings (Caffe's UpgradeV1LayerType).
_V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold", "NONE": "",
}
# Layer-specific parameter messages that V1 and current layers share by name.
_SHARED_PARAMS = [
    f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in pb.LayerParameter.DESCRIPTOR.fields_by_name
]


# The largest files worth reading: protobuf refuses messages over 2 GiB, and a network
# definition is text of at most a few MB (ResNet-152's is 0.2 MB).
PROTOTXT_LIMIT = 64 * 2 ** 20
CAFFEMODEL_LIMIT = 2 ** 31 - 1


def parse_prototxt(text: str, source: str = "<prototxt>") -> pb.NetParameter:
    """Parse a network definition in protobuf text format and upgrade it to the current format.

    Fields that this project does not model (training settings, data layers' parameters) are
    skipped, so real deploy and train files parse.
    """
    net = pb.NetParameter()
    try:
        text_format.Parse(text, net, allow_unknown_field=True)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        where = f"line {line}, column {column}" if line else "position unknown"
        detail = str(error).split(" : ", 1)[-1].rstrip(".")  # the message goes on after it
        raise UserError(
            f"{source} is not a valid Caffe prototxt ({where}): {detail}. "
            "Fix the file, or pass the right file with --deploy_txt."
        ) from None
    except RecursionError:  # protobuf's text parser recurses once per nested { }
        raise UserError(
            f"{source} is not a valid Caffe prototxt: its braces are nested too deeply. "
            "Fix the file, or pass the right file with --deploy_txt."
        ) from None
    net = upgrade_net(net)
    for layer in net.layer:
        field = _non_finite_field(layer)
        if field:
            raise UserError(f"{source}: layer '{layer.name}' has a value of {field} that is not a "
                            "finite number (nan or inf); fix the file.")
    return net


def _non_finite_field(message: Message, prefix: str = "") -> str | None:
    """The dotted name of the first float field of `message` holding nan or inf, else None."""
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            found = next(filter(None, (_non_finite_field(v, f"{prefix}{field.name}.")
                                       for v in values)), None)
            if found:
                return found
        elif field.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
            if not all(math.isfinite(v) for v in values):
                return prefix + field.name
    return None


def read_prototxt(path: str | Path) -> pb.NetParameter:
    """Read a deploy prototxt file (current or legacy V1 format)."""
    data = read_input(path, "network definition (prototxt)", "--deploy_txt", PROTOTXT_LIMIT)
    try:
        text = data.decode("utf-8-sig")   # a byte-order mark, as some editors write, is not text
    except UnicodeDecodeError as error:
        if b"\0" in data[:4096]:
            raise UserError(f"{path} is not a text prototxt (it is binary; a .caffemodel goes "
                            "to --caffe_model).") from None
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"{path} is not UTF-8 text: byte {data[error.start]:#04x} on line {line} "
                        "is not valid UTF-8; save the file as UTF-8.") from None
    return parse_prototxt(text, str(path))


def read_caffemodel(path: str | Path) -> dict[str, list[pb.BlobProto]]:
    """Read trained weights: layer name -> that layer's parameter blobs, in Caffe's order."""
    data = read_input(path, "weights file (caffemodel)", "--caffe_model", CAFFEMODEL_LIMIT)
    net = pb.NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise UserError(
            f"{path} is not a Caffe .caffemodel (it is truncated or corrupt: {error}). "
            "Download it again, or pass the right file with --caffe_model."
        ) from None
    layers = list(net.layer) + list(net.layers)
    weights = {layer.name: list(layer.blobs) for layer in layers if layer.blobs}
    if not weights:
        raise UserError(
            f"{path} holds no layer weights, so it is not a trained .caffemodel. "
            "Pass the right file with --caffe_model."
        )
    return weights


def blob_array(blob: pb.BlobProto) -> tuple[np.ndarray, tuple[int, ...], bool]:
    """A blob's values as float32, its shape, and whether that shape is the legacy 4-D one."""
    values = blob.double_data if len(blob.double_data) else blob.data
    with np.errstate(over="ignore"):  # doubles beyond float32 become inf; CaffeNet refuses those
        array = np.asarray(values, dtype=np.float32)
    if blob.HasField("shape"):
        return array, tuple(int(d) for d in blob.shape.dim), False
    return array, (blob.num, blob.channels, blob.height, blob.width), True


def upgrade_net(net: pb.NetParameter) -> pb.NetParameter:
    """Return `net` with V1 layers and legacy input fields rewritten as current layers."""
    upgraded = pb.NetParameter()
    upgraded.name = net.name
    upgraded.force_backward = net.force_backward
    for layer in _input_layers(net):
        upgraded.layer.add().CopyFrom(layer)
    upgraded.layer.extend(net.layer)
    for old in net.layers:
        upgraded.layer.add().CopyFrom(_upgrade_v1_layer(old))
    return upgraded


def _input_layers(net: pb.NetParameter) -> list[pb.LayerParameter]:
    if not net.input:
        return []
    shapes = [list(s.dim) for s in net.input_shape]
    if not shapes and net.input_dim:
        dims = list(net.input_dim)
        if len(dims) != 4 * len(net.input):
            raise UserError(
                f"the prototxt declares {len(net.input)} input(s) with {len(dims)} input_dim values; "
                "give 4 input_dim values (num, channels, height, width) per input."
            )
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(net.input))]
    if len(shapes) != len(net.input):
        raise UserError(
            f"the prototxt declares inputs {list(net.input)} but {len(shapes)} input shapes; "
            "give one input_shape (or 4 input_dim values) per input."
        )
    layer = pb.LayerParameter(name="input", type="Input", top=list(net.input))
    for dims in shapes:
        layer.input_param.shape.add().dim.extend(dims)
    return [layer]


def _upgrade_v1_layer(old: pb.V1LayerParameter) -> pb.LayerParameter:
    layer = pb.LayerParameter(name=old.name, bottom=old.bottom, top=old.top)
    layer.type = _V1_TYPE_NAMES[pb.V1LayerParameter.LayerType.Name(old.type)]
    layer.include.extend(old.include)
    layer.exclude.extend(old.exclude)
    layer.blobs.extend(old.blobs)
    for name in _SHARED_PARAMS:
        if old.HasField(name):
            getattr(layer, name).CopyFrom(getattr(old, name))
    return layer
