"""A PyTorch network built from an ONNX file's graph: a `BlobNetwork`.

The file is read with the `onnx` package (a protobuf: data, never code). Its targetable
blobs are the floating outputs of the nodes that depend on the image input, named as in
the file. Nodes that do not depend on the image (constants, shapes of weights) are worked
out once here; the rest run in the file's order, only those that the targets depend on.
The input is given NCHW, in the network's channel order; an NHWC file gets it permuted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from cnnvis.caffe.net import unknown_blob
from cnnvis.errors import UserError
from cnnvis.files import open_input
from cnnvis.onnx_ops import OPERATORS, to_tensor

# What follows a first convolution as its bias and normalisation, and passes through.
_NORMALISATION = {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Cast", "Transpose",
                  "Identity"}
INSTALL_ONNX = "pip install 'cnn-vis[onnx]' (or pip install onnx)"


def import_onnx():
    """The `onnx` package; a UserError with the install command where it is absent."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"reading ONNX files needs the onnx package; install it with "
                        f"{INSTALL_ONNX}.") from None
    return onnx


@dataclass(frozen=True)
class ImageInput:
    """The graph's image input: its name, layout and (height, width) (None: not fixed)."""

    name: str
    layout: str                      # "NCHW" or "NHWC"
    size: tuple[int, int] | None
    batch_of_one: bool               # the file fixes the batch at 1


def read_onnx(path: str | os.PathLike):
    """The ModelProto of an ONNX file; a UserError for a missing, truncated or non-ONNX file."""
    onnx = import_onnx()
    from google.protobuf.message import DecodeError
    if os.path.lexists(path):   # a named pipe or a device would be read for ever
        with open_input(path, "ONNX file", "--model"):
            pass
    try:
        model = onnx.load(os.fspath(path))
    except FileNotFoundError:
        raise UserError(f"ONNX file {path} does not exist; check the path.") from None
    except (DecodeError, ValueError, RuntimeError, OSError) as error:
        raise UserError(f"{path} is not a readable ONNX file (truncated, or another kind of "
                        f"file: {error}); export the model again.") from None
    if not model.graph.node or not model.graph.output:
        raise UserError(f"{path} holds no ONNX graph (not an ONNX model, or truncated); "
                        "export the model again.")
    return model


def image_input(model, path: str | os.PathLike) -> ImageInput:
    """The graph's one image input (N, 3, H, W) or (N, H, W, 3), float; a UserError otherwise."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise UserError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        "cnn-vis needs a network with one image input.")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if tensor.elem_type != 1 or len(dims) != 4 or 3 not in (dims[1], dims[3]):
        raise UserError(f"{path}'s input '{inputs[0].name}' has shape {dims} and ONNX type "
                        f"{tensor.elem_type}; cnn-vis needs an image input: float (type 1), "
                        "(N, 3, H, W) or (N, H, W, 3), its 3 channels fixed in the file.")
    layout = "NCHW" if dims[1] == 3 else "NHWC"
    spatial = dims[2:] if layout == "NCHW" else dims[1:3]
    size = tuple(spatial) if None not in spatial else None
    return ImageInput(inputs[0].name, layout, size, dims[0] == 1)


class OnnxNode(nn.Module):
    """One node of the graph: its operator, with the constant inputs as tensors of its own
    (floating ones as buffers, so they follow the network's device and number type)."""

    def __init__(self, node, attributes: dict, opset: int,
                 constants: dict[int, torch.Tensor], image_positions: set[int]):
        super().__init__()
        self.op_type, self.onnx_name = node.op_type, node.name
        self.operator = OPERATORS[node.op_type]
        self.attributes, self.opset = attributes, opset
        self.arity, self.image_positions = len(node.input), image_positions
        self.integer_constants = {}   # shapes and indices: kept on the CPU
        for position, value in constants.items():
            if value.is_floating_point():
                self.register_buffer(f"input{position}", value)
            else:
                self.integer_constants[position] = value

    def forward(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """The node's outputs; `values` are its inputs that come from the image, in order."""
        given = iter(values)
        inputs = [next(given) if k in self.image_positions else
                  self.integer_constants.get(k, getattr(self, f"input{k}", None))
                  for k in range(self.arity)]
        return self.operator(inputs, self.attributes, self.opset)


class OnnxNetwork(nn.Module):
    """An ONNX file's graph as a `BlobNetwork` (see the module docstring)."""

    def __init__(self, model, path: str | os.PathLike, input_size: tuple[int, int] | None = None):
        """`model`: the file's ModelProto (`read_onnx`); `input_size` (height, width) where
        the file does not fix it (one that the file fixes wins)."""
        super().__init__()
        onnx = import_onnx()
        self.image = image_input(model, path)
        if self.image.size and input_size and tuple(input_size) != self.image.size:
            raise UserError(f"{path} fixes its input at {self.image.size[0]}x"
                            f"{self.image.size[1]}; leave input_size out, or give that size.")
        size = self.image.size or input_size
        if size is None:
            raise UserError(f"{path}'s input '{self.image.name}' has no fixed height and width; "
                            "give the size the network was trained on (input_size=(H, W), or "
                            "a file that fixes it).")
        self.input_size: tuple[int, int] = tuple(size)
        self.metadata = {p.key: p.value for p in model.metadata_props}   # the exporter's notes
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        known = {t.name: to_tensor(onnx.numpy_helper.to_array(t)) for t in model.graph.initializer}
        from_image = {self.image.name}
        self.nodes = nn.ModuleList()   # the nodes that depend on the image, in order
        self.steps: list[tuple[list[str], list[str]]] = []   # each one's (image inputs, outputs)
        for node in model.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in OPERATORS:
                raise UserError(f"{path}: node '{node.name}' uses the operator "
                                f"{node.domain + '.' if node.domain else ''}{node.op_type}, which "
                                f"cnn-vis does not run; it runs: {', '.join(sorted(OPERATORS))}.")
            attributes = {a.name: _attribute(onnx, a) for a in node.attribute}
            constants = {k: known[n] for k, n in enumerate(node.input) if n in known}
            step = OnnxNode(node, attributes, opset, constants,
                            {k for k, n in enumerate(node.input) if n in from_image})
            missing = [n for n in node.input if n and n not in known and n not in from_image]
            if missing:
                raise UserError(f"{path}: node '{node.name}' reads '{missing[0]}', which no "
                                "earlier node makes; the graph is not in order or is broken.")
            if not step.image_positions:   # worked out once, here
                with torch.no_grad():
                    known.update(zip(node.output, _failing_as_user_error(
                        step, f"{path}: node '{node.name}' ({node.op_type})")))
                continue
            self.nodes.append(step)
            self.steps.append(([n for n in node.input if n in from_image],
                               [n for n in node.output if n]))
            from_image.update(node.output)
        self._plans: dict[tuple[str, ...], list[int]] = {}
        self.blob_names: list[str] = self._floating_outputs()

    def _floating_outputs(self) -> list[str]:
        """The node outputs that are floating (found by one run at the input size)."""
        x = torch.zeros((1, 3) + self.input_size)
        every = [output for _, outputs in self.steps for output in outputs]
        with torch.no_grad():
            values = _failing_as_user_error(
                lambda: self._run(x, every, check=False),
                f"the network of the file, at its input size {self.input_size[0]}x"
                f"{self.input_size[1]},")
        return [name for name, value in values.items() if value.is_floating_point()]

    def full_precision_modules(self) -> list[nn.Module]:
        """The nodes that stay float32 under a reduced --precision (`cnnvis.engine.
        reduce_precision`): the first convolution and the normalisation that follows it
        (a BatchNormalization, or the Add/Sub/Mul/Div that an exporter made of one)."""
        first = next((k for k, step in enumerate(self.nodes)
                      if step.op_type in ("Conv", "ConvTranspose")), None)
        if first is None:
            return []
        kept = [self.nodes[first]]
        for step in list(self.nodes)[first + 1:]:
            if step.op_type not in _NORMALISATION:
                break
            kept.append(step)
        return kept

    def forward(self, x: torch.Tensor, target: str) -> torch.Tensor:
        return self.forward_blobs(x, [target])[target]

    def forward_blobs(self, x: torch.Tensor, targets: list[str]) -> dict[str, torch.Tensor]:
        if self.image.batch_of_one and len(x) > 1:   # the file allows one image at a time
            parts = [self._run(image, targets) for image in x.split(1)]
            return {target: torch.cat([part[target] for part in parts]) for target in targets}
        return self._run(x, targets)

    def blobs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_blobs(x, self.blob_names)

    def _run(self, x: torch.Tensor, targets: list[str], check: bool = True
             ) -> dict[str, torch.Tensor]:
        """Run the nodes that `targets` depend on, freeing each value after its last use."""
        if check:
            for target in targets:
                if target not in self.blob_names:
                    raise unknown_blob(target, self.blob_names)
        plan = self._plan(tuple(targets))
        last_use = {name: index for index in plan for name in self.steps[index][0]}
        values = {self.image.name: x if self.image.layout == "NCHW" else x.permute(0, 2, 3, 1)}
        wanted = set(targets)
        for index in plan:
            inputs, outputs = self.steps[index]
            results = self.nodes[index](*[values[name] for name in inputs])
            values.update(zip(outputs, results))
            for name in inputs:
                if last_use[name] == index and name not in wanted:
                    del values[name]
        return {target: values[target] for target in targets if target in values}

    def _plan(self, targets: tuple[str, ...]) -> list[int]:
        """The indices of the steps that `targets` depend on, in order."""
        if targets not in self._plans:
            maker = {output: index for index, (_, outputs) in enumerate(self.steps)
                     for output in outputs}
            needed, pending = set(), [maker[t] for t in targets]
            while pending:
                index = pending.pop()
                if index not in needed:
                    needed.add(index)
                    pending.extend(maker[n] for n in self.steps[index][0] if n in maker)
            self._plans[targets] = sorted(needed)
        return self._plans[targets]


def _failing_as_user_error(work, what: str):
    """`work()`; a UserError saying that `what` fails, and why, where it raises."""
    try:
        return work()
    except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as error:
        raise UserError(f"{what} fails ({type(error).__name__}: {error}); the file's graph does "
                        "not run as ONNX says (or needs another input size).") from None


def _attribute(onnx, attribute):
    """An attribute's value: numbers, strings and lists as they are, tensors as numpy."""
    value = onnx.helper.get_attribute_value(attribute)
    return onnx.numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def load_onnx_network(path: str | os.PathLike,
                      input_size: tuple[int, int] | None = None) -> OnnxNetwork:
    """The network of ONNX file `path` (see `OnnxNetwork`), in eval mode, without gradients."""
    network = OnnxNetwork(read_onnx(path), path, input_size)
    return network.eval().requires_grad_(False)
