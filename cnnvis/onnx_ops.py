"""ONNX operators as PyTorch functions, for `cnnvis.onnx_network`.

Each operator is a function `(inputs, attributes, opset) -> outputs`: `inputs` are the
node's inputs in order (None where the file leaves an optional one out), `attributes`
its attributes as Python values (`onnx.helper.get_attribute_value`, tensors as numpy
arrays), `opset` the file's version of the default domain, and `outputs` a list of
tensors. Semantics are the ONNX operator specification's; tensors of shapes and indices
stay on the CPU, floating values on the network's device and in its number type.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnvis.convolution import conv2d

Inputs = Sequence[torch.Tensor | None]
Operator = Callable[[Inputs, dict, int], list[torch.Tensor]]

# ONNX TensorProto element types -> torch (FLOAT16/BFLOAT16/DOUBLE: see `cast`).
INTEGER_TYPES = {2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16,
                 6: torch.int32, 7: torch.int64, 9: torch.bool}
FLOAT_TYPES = {1, 10, 11, 16}


def to_tensor(value: np.ndarray) -> torch.Tensor:
    """An ONNX constant (numpy) as a tensor: floats as float32, integers as int64."""
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return torch.from_numpy(array.astype(np.float32, copy=True))
    if array.dtype == np.bool_:
        return torch.from_numpy(array.copy())
    return torch.from_numpy(array.astype(np.int64, copy=True))


def _ints(value: torch.Tensor | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.reshape(-1).tolist()]


def _same_pads(size: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], auto_pad: str) -> list[int]:
    """ONNX's SAME_UPPER / SAME_LOWER pads [begin..., end...] for spatial `size`."""
    begins, ends = [], []
    for length, k, s, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(length / s) - 1) * s + (k - 1) * d + 1 - length, 0)
        small, large = total // 2, total - total // 2
        begins.append(large if auto_pad == "SAME_LOWER" else small)
        ends.append(small if auto_pad == "SAME_LOWER" else large)
    return begins + ends


def _window(x: torch.Tensor, attributes: dict, kernel: Sequence[int]) -> tuple:
    """(strides, dilations, pads [begin..., end...]) of a convolution or pooling node."""
    n = len(kernel)
    strides = list(attributes.get("strides", [1] * n))
    dilations = list(attributes.get("dilations", [1] * n))
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(x.shape[2:], kernel, strides, dilations, auto_pad)
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = list(attributes.get("pads", [0] * (2 * n)))
    return strides, dilations, pads


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end, ...] -> F.pad's (last axis first)."""
    n = len(pads) // 2
    return [p for axis in reversed(range(n)) for p in (pads[axis], pads[axis + n])]


def _symmetric(pads: Sequence[int]) -> list[int] | None:
    n = len(pads) // 2
    return list(pads[:n]) if list(pads[:n]) == list(pads[n:]) else None


def conv(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    kernel = list(attributes.get("kernel_shape", weight.shape[2:]))
    strides, dilations, pads = _window(x, attributes, kernel)
    padding = _symmetric(pads)
    if padding is None:   # asymmetric (TensorFlow's SAME): pad first
        x, padding = F.pad(x, _torch_pad(pads)), 0
    # 2-D: cnn-vis' conv2d, whose input gradient is faster for a first, strided convolution.
    convolve = (F.conv1d, conv2d, F.conv3d)[len(kernel) - 1]
    return [convolve(x, weight, bias, strides, padding, dilations, attributes.get("group", 1))]


def conv_transpose(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, weight, bias = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    n = weight.dim() - 2
    strides = list(attributes.get("strides", [1] * n))
    dilations = list(attributes.get("dilations", [1] * n))
    pads = list(attributes.get("pads", [0] * (2 * n)))
    transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
    y = transpose(x, weight, bias, strides, 0, list(attributes.get("output_padding", [0] * n)),
                  attributes.get("group", 1), dilations)
    # The pads crop the full output, each side on its own.
    crop = [slice(None), slice(None)] + [slice(b, y.shape[2 + i] - e) for i, (b, e) in
                                         enumerate(zip(pads[:n], pads[n:]))]
    return [y[tuple(crop)]]


def max_pool(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, kernel = inputs[0], list(attributes["kernel_shape"])
    strides, dilations, pads = _window(x, attributes, kernel)
    padding = _symmetric(pads)
    if padding is None or any(2 * p > k for p, k in zip(padding, kernel)):
        x, padding = F.pad(x, _torch_pad(pads), value=-math.inf), 0
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(kernel) - 1]
    return [pool(x, kernel, strides, padding, dilations, bool(attributes.get("ceil_mode", 0)))]


def average_pool(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, kernel = inputs[0], list(attributes["kernel_shape"])
    strides, _, pads = _window(x, attributes, kernel)
    include_pad = bool(attributes.get("count_include_pad", 0))
    ceil_mode = bool(attributes.get("ceil_mode", 0))
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1]
    padding = _symmetric(pads)
    if padding is not None and all(2 * p <= k for p, k in zip(padding, kernel)):
        return [pool(x, kernel, strides, padding, ceil_mode, include_pad)]
    # Asymmetric pads: the sum over each window over the count of its real pixels.
    padded = F.pad(x, _torch_pad(pads))
    sums = pool(padded, kernel, strides, 0, ceil_mode)
    if include_pad:
        return [sums]
    counts = pool(F.pad(torch.ones_like(x[:1, :1]), _torch_pad(pads)), kernel, strides, 0, ceil_mode)
    return [sums / counts]


def batch_norm(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, scale, bias, mean, var = inputs[:5]
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, attributes.get("epsilon", 1e-5))]


def lrn(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    return [F.local_response_norm(inputs[0], attributes["size"], attributes.get("alpha", 1e-4),
                                  attributes.get("beta", 0.75), attributes.get("bias", 1.0))]


def gemm(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    a, b, c = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None
    a = a.transpose(0, 1) if attributes.get("transA", 0) else a
    b = b.transpose(0, 1) if attributes.get("transB", 0) else b
    y = attributes.get("alpha", 1.0) * (a @ b)
    return [y if c is None else y + attributes.get("beta", 1.0) * c]


def clip(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    if opset < 11:
        low, high = attributes.get("min"), attributes.get("max")
    else:
        low, high = (float(v) if v is not None else None
                     for v in (list(inputs[1:3]) + [None, None])[:2])
    return [torch.clamp(inputs[0], low, high)]


def softmax(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    axis = attributes.get("axis", -1 if opset >= 13 else 1)
    if opset >= 13:
        return [torch.softmax(x, axis)]
    # Before opset 13: over all the axes from `axis` on, as one.
    axis = axis % x.dim()
    return [torch.softmax(x.flatten(axis), axis).reshape(x.shape)]


def flatten(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    axis = attributes.get("axis", 1) % (x.dim() + 1)
    return [x.reshape(math.prod(x.shape[:axis]), -1)]


def reshape(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    shape = _ints(inputs[1]) if opset >= 5 else list(attributes["shape"])
    if not attributes.get("allowzero", 0):   # 0 copies the input's size on that axis
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def transpose(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    return [x.permute(list(attributes.get("perm", reversed(range(x.dim())))))]


def concat(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    tensors = [t for t in inputs if t is not None and t.numel() > 0] or [inputs[0]]
    return [torch.cat(tensors, attributes["axis"])]


def cast(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, to = inputs[0], attributes["to"]
    if to in FLOAT_TYPES:
        # Floating values keep the network's number type (its precision is the engine's).
        return [x if x.is_floating_point() else x.float()]
    if to not in INTEGER_TYPES:
        raise ValueError(f"Cast to ONNX type {to}")
    return [x.to(INTEGER_TYPES[to])]


def shape(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    dims = list(inputs[0].shape)[attributes.get("start", 0):attributes.get("end", None)]
    return [torch.tensor(dims, dtype=torch.int64)]


def gather(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    data, indices = inputs[0], inputs[1]
    axis = attributes.get("axis", 0) % data.dim()
    flat = (indices.reshape(-1) % data.shape[axis]).to(data.device)
    picked = data.index_select(axis, flat)
    return [picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])]


def _axes(inputs: Inputs, attributes: dict, opset: int, since: int) -> list[int] | None:
    """An operator's `axes`: an attribute before opset `since`, an input from it on."""
    if opset >= since:
        return _ints(inputs[1]) if len(inputs) > 1 else None
    return list(attributes["axes"]) if "axes" in attributes else None


def unsqueeze(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, axes = inputs[0], _axes(inputs, attributes, opset, 13)
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def squeeze(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, axes = inputs[0], _axes(inputs, attributes, opset, 13)
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in axes))]


def slice_(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    if opset < 10:
        starts, ends, axes, steps = (attributes["starts"], attributes["ends"],
                                     attributes.get("axes"), None)
    else:
        starts, ends, axes, steps = (_ints(t) for t in (list(inputs[1:5]) + [None] * 4)[:4])
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        picked = range(*slice(start, end, step).indices(x.shape[axis]))
        if step > 0:
            x = x[(slice(None),) * axis + (slice(picked.start, picked.stop, step),)]
        else:   # torch has no negative steps
            x = x.index_select(axis, torch.tensor(list(picked), dtype=torch.int64, device=x.device))
    return [x]


def pad(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x = inputs[0]
    mode = attributes.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if opset < 11:
        pads, value = list(attributes["pads"]), attributes.get("value", 0.0)
    else:
        pads = _ints(inputs[1])
        value = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else 0.0
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    if axes is not None:   # opset 18: pads for these axes only
        full = [0] * (2 * x.dim())
        for k, axis in enumerate(a % x.dim() for a in axes):
            full[axis], full[axis + x.dim()] = pads[k], pads[k + len(axes)]
        pads = full
    torch_pads = _torch_pad(pads)
    while len(torch_pads) > 2 and not any(torch_pads[-2:]):   # F.pad's modes pad the last axes
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return [F.pad(x, torch_pads, value=value)]
    return [F.pad(x, torch_pads, mode={"reflect": "reflect", "edge": "replicate"}[mode])]


def constant_of_shape(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    value = to_tensor(attributes["value"]) if "value" in attributes else torch.zeros(1)
    return [torch.full(_ints(inputs[0]), value.reshape(-1)[0].item(), dtype=value.dtype)]


def reduce_mean(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    x, axes = inputs[0], _axes(inputs, attributes, opset, 18)
    if not axes:
        if attributes.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(x.dim()))
    return [x.mean(tuple(axes), keepdim=bool(attributes.get("keepdims", 1)))]


def constant(inputs: Inputs, attributes: dict, opset: int) -> list[torch.Tensor]:
    (name, value), = attributes.items()
    return [to_tensor(np.asarray(value))]


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")   # ONNX's integer division truncates


def _elementwise(function: Callable[..., torch.Tensor]) -> Operator:
    return lambda inputs, attributes, opset: [function(*[t for t in inputs if t is not None])]


OPERATORS: dict[str, Operator] = {
    "Conv": conv, "ConvTranspose": conv_transpose, "MaxPool": max_pool,
    "AveragePool": average_pool, "BatchNormalization": batch_norm, "LRN": lrn, "Gemm": gemm,
    "Clip": clip, "Softmax": softmax, "Flatten": flatten, "Reshape": reshape,
    "Transpose": transpose, "Concat": concat, "Cast": cast, "Shape": shape, "Gather": gather,
    "Unsqueeze": unsqueeze, "Squeeze": squeeze, "Slice": slice_, "Pad": pad,
    "ConstantOfShape": constant_of_shape, "ReduceMean": reduce_mean, "Constant": constant,
    "Relu": _elementwise(F.relu), "Sigmoid": _elementwise(torch.sigmoid),
    "HardSwish": _elementwise(F.hardswish), "Identity": _elementwise(lambda x: x),
    "Dropout": lambda inputs, attributes, opset: [inputs[0]],   # inference: passes through
    "LeakyRelu": lambda inputs, attributes, opset: [
        F.leaky_relu(inputs[0], attributes.get("alpha", 0.01))],
    "HardSigmoid": lambda inputs, attributes, opset: [torch.clamp(
        attributes.get("alpha", 0.2) * inputs[0] + attributes.get("beta", 0.5), 0, 1)],
    "GlobalAveragePool": lambda inputs, attributes, opset: [
        inputs[0].mean(tuple(range(2, inputs[0].dim())), keepdim=True)],
    "Add": _elementwise(torch.add), "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul), "Div": _elementwise(_divide),
    "MatMul": _elementwise(torch.matmul), "Pow": _elementwise(torch.pow),
    "Sqrt": _elementwise(torch.sqrt), "Exp": _elementwise(torch.exp),
    "Tanh": _elementwise(torch.tanh),
}
