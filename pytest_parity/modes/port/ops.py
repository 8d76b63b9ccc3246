"""The neutral description both frameworks' layer rules produce: parametrised operations in ONNX conventions.

A ``ParamOp`` is one parametrised ONNX operation (Gemm, Conv, LSTM, ...) as a framework layer computes it. Its
``bindings`` say how each ONNX input tensor is made from the layer's variables and back, and how gradients travel:

    export:          variables -> ONNX tensor            (reading the source)
    load:            ONNX tensor -> variables            (writing the target)
    export_adjoint:  d loss / d ONNX tensor -> d loss / d variables  (the transpose of export)
    load_adjoint:    d loss / d variables -> d loss / d ONNX tensor  (the transpose of load)

For nearly every weight both maps only move elements (transposes, gate blocks reordered, directions stacked), so each
adjoint is the other map and a rule gives just export and load. The exception is a recurrent layer with one bias
where ONNX has two (Keras LSTM ``bias`` vs ONNX B = [Wb, Rb]): loading sums Wb + Rb, so its adjoint copies the gradient
to both.
A source weight's gradient as the target sees it is then ``source.export_adjoint(target.load_adjoint(target grads))``.

Where one framework fuses what ONNX keeps apart (nn.MultiheadAttention's ``in_proj_weight`` [3E, E] holds the q, k and v
Gemm weights), each ONNX tensor is bound to a ``Block`` of the variable: export takes that block, load gives the block
only, and ``merge_into`` writes it into the variable (values on load, gradients on export_adjoint), so the three Gemms
fill one variable between them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_parity.layouts import (  # noqa: F401 - the gate orders, re-exported for the layer rules
    GRU_KERAS_TO_ONNX,
    GRU_TORCH_TO_ONNX,
    LSTM_KERAS_TO_ONNX,
    LSTM_TORCH_TO_ONNX,
)

Values = dict[str, np.ndarray]


def reorder_gates(array: np.ndarray, order: tuple[int, ...], axis: int) -> np.ndarray:
    """Blocks of ``array`` along ``axis`` (len(order) equal blocks) taken in ``order``."""
    blocks = np.split(array, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def restore_gates(array: np.ndarray, order: tuple[int, ...], axis: int) -> np.ndarray:
    """The inverse of ``reorder_gates``."""
    return reorder_gates(array, tuple(int(i) for i in np.argsort(order)), axis)


@dataclass(frozen=True)
class Block:
    """The ``index``-th of ``count`` equal blocks of a variable along ``axis`` (rows 0:E, E:2E, 2E:3E of in_proj)."""

    index: int
    count: int
    axis: int = 0

    def take(self, array: np.ndarray) -> np.ndarray:
        return np.split(array, self.count, axis=self.axis)[self.index]

    def describe(self) -> str:
        return f"block {self.index + 1} of {self.count}" + (f" along axis {self.axis}" if self.axis else "")


@dataclass
class Binding:
    """One ONNX input tensor of a ParamOp and the framework variables (by global name) it is made of."""

    variables: tuple[str, ...]
    export: Callable[[Values], np.ndarray]
    load: Callable[[np.ndarray], Values]
    export_adjoint: Callable[[np.ndarray], Values] | None = None
    load_adjoint: Callable[[Values], np.ndarray] | None = None
    # For tensors stacked over directions: one binding per direction, so names can be paired direction by direction.
    parts: list[Binding] | None = None
    # Set when the ONNX tensor is one block of a variable (see Block): load and export_adjoint give that block only.
    block: Block | None = None

    def export_gradient(self, gradient: np.ndarray) -> Values:
        return (self.export_adjoint or self.load)(gradient)

    def load_gradient(self, gradients: Values) -> np.ndarray:
        return (self.load_adjoint or self.export)(gradients)


def moved(variable: str, to_onnx: Callable[[np.ndarray], np.ndarray],
          from_onnx: Callable[[np.ndarray], np.ndarray]) -> Binding:
    """One variable <-> one ONNX tensor by an element-moving map (transpose, reshape, gate reorder)."""
    return Binding((variable,), lambda values: to_onnx(values[variable]), lambda tensor: {variable: from_onnx(tensor)})


def same(variable: str) -> Binding:
    return moved(variable, lambda a: a, lambda a: a)


def block_of(variable: str, block: Block, to_onnx: Callable[[np.ndarray], np.ndarray] = lambda a: a,
             from_onnx: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> Binding:
    """One block of a variable <-> one ONNX tensor (to_onnx/from_onnx act on the block, as in ``moved``)."""
    return Binding((variable,), lambda values: to_onnx(block.take(values[variable])),
                   lambda tensor: {variable: from_onnx(tensor)}, block=block)


def merge_into(into: Values, binding: Binding, pieces: Values) -> None:
    """Values (or gradients) a binding gave for its variables, written into ``into``: whole, or as its block."""
    block = binding.block
    for name, piece in pieces.items():
        if block is None:
            into[name] = piece
            continue
        shape = list(piece.shape)
        shape[block.axis] *= block.count
        whole = into.get(name)
        if whole is None or whole.shape != tuple(shape):
            whole = into[name] = np.zeros(shape, piece.dtype)
        size = piece.shape[block.axis]
        index: list[Any] = [slice(None)] * piece.ndim
        index[block.axis] = slice(block.index * size, (block.index + 1) * size)
        whole[tuple(index)] = piece


def stacked(parts: list[Binding]) -> Binding:
    """Several per-direction bindings stacked on a new leading axis (ONNX recurrent tensors are [directions, ...])."""
    variables = tuple(name for part in parts for name in part.variables)

    def export(values: Values) -> np.ndarray:
        return np.stack([part.export(values) for part in parts])

    def load(tensor: np.ndarray) -> Values:
        return {k: v for part, piece in zip(parts, tensor) for k, v in part.load(piece).items()}

    def export_adjoint(gradient: np.ndarray) -> Values:
        return {k: v for part, piece in zip(parts, gradient) for k, v in part.export_gradient(piece).items()}

    def load_adjoint(gradients: Values) -> np.ndarray:
        return np.stack([part.load_gradient(gradients) for part in parts])

    return Binding(variables, export, load, export_adjoint, load_adjoint, parts)


@dataclass
class ParamOp:
    """One parametrised operation of a model, in ONNX conventions."""

    op: str                       # ONNX op type: Gemm, Conv, ConvTranspose, BatchNormalization, LSTM, ...
    layer: str                    # the framework's name for the layer ("sequential/dense", "features.0")
    kind: str                     # the framework's class ("Dense", "Linear")
    bindings: dict[str, Binding]  # ONNX input name (W, R, B, scale, mean, var) -> how it is made
    # ONNX attributes and framework facts that decide what the op computes (epsilon, pads, activation, ...).
    attributes: dict[str, Any] = field(default_factory=dict)
    # Attributes that must be equal on both sides for a transfer to mean anything (a GRU's linear_before_reset).
    structural: tuple[str, ...] = ()

    def export(self, values: Values) -> Values:
        return {name: binding.export(values) for name, binding in self.bindings.items()}

    def load(self, tensors: Values) -> Values:
        loaded: Values = {}
        for name, binding in self.bindings.items():
            merge_into(loaded, binding, binding.load(tensors[name]))
        return loaded

    def variables(self) -> tuple[str, ...]:
        return tuple(name for binding in self.bindings.values() for name in binding.variables)

    def label(self) -> str:
        return f"{self.layer} ({self.kind})"


@dataclass
class LayerCall:
    """One call of a leaf layer during a recording run: its name, class, and what went in and came out."""

    layer: str
    kind: str
    input: np.ndarray | None
    output: np.ndarray | None
    # Facts only known at call time, e.g. the padding TF's 'same' works out for this input size.
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelStructure:
    """A model as port mode sees it: its parametrised ops in call order, and every leaf call in order."""

    ops: list[ParamOp]
    calls: list[LayerCall]
    # Layers that hold weights but were never called on these inputs: their weights cannot matter here.
    unused: dict[str, str] = field(default_factory=dict)
    # Calls of the ops inside one module that runs several (nn.MultiheadAttention: "attn[q]" ... "attn[out]"), as far
    # as they can be told from what goes in and out of the module; not part of the call order.
    part_calls: list[LayerCall] = field(default_factory=list)

    def call_of(self, layer: str) -> LayerCall | None:
        return next((call for call in [*self.calls, *self.part_calls] if call.layer == layer), None)


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's padding='same': total padding for ceil(size / stride) outputs, the odd element at the end."""
    effective = (kernel - 1) * dilation + 1
    outputs = -(-size // stride)
    total = max((outputs - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def row_block(binding: Binding, index: int, count: int, onnx_shape: tuple[int, ...]) -> Binding | None:
    """The ``index``-th of ``count`` row blocks of a Gemm tensor (W [count*E, in] or B [count*E]) as a binding of its
    own, for a fused projection (GPT-2's c_attn: q, k and v in one weight) paired with separate ones. The variable's
    axis that holds the rows is found by loading a tensor whose rows are numbered, so any element-moving layout works
    (a Linear's [out, in], a Conv1D's [in, out]). None where the binding is not one variable moved elementwise."""
    if len(binding.variables) != 1 or binding.export_adjoint or binding.load_adjoint or binding.parts \
            or binding.block:
        return None
    (variable,) = binding.variables
    rows = np.arange(onnx_shape[0], dtype=np.float64).reshape((-1,) + (1,) * (len(onnx_shape) - 1))
    numbered = binding.load(np.broadcast_to(rows, onnx_shape).copy())[variable]
    size = onnx_shape[0] // count
    axis = next((a for a in range(numbered.ndim) if numbered.shape[a] == onnx_shape[0]
                 and all(set(np.unique(Block(i, count, a).take(numbered))) <= set(range(i * size, (i + 1) * size))
                         for i in range(count))), None)
    if axis is None:
        return None
    block = Block(index, count, axis)

    def export(values: Values) -> np.ndarray:
        return np.split(binding.export(values), count, axis=0)[index]

    def load(tensor: np.ndarray) -> Values:
        whole = np.zeros((onnx_shape[0], *tensor.shape[1:]), tensor.dtype)
        whole[index * size:(index + 1) * size] = tensor
        return {variable: block.take(binding.load(whole)[variable])}

    return Binding((variable,), export, load, block=block)


def split_rows(op: ParamOp, count: int, shapes: dict[str, tuple[int, ...]]) -> list[ParamOp] | None:
    """A Gemm that computes ``count`` projections of one input at once, as ``count`` Gemms (None where it cannot be
    split: see row_block)."""
    parts: list[ParamOp] = []
    for index in range(count):
        bindings = {}
        for key, binding in op.bindings.items():
            part = row_block(binding, index, count, shapes[key])
            if part is None:
                return None
            bindings[key] = part
        parts.append(ParamOp(op.op, f"{op.layer}[rows {index + 1} of {count}]", op.kind, bindings, op.attributes,
                             op.structural))
    return parts
