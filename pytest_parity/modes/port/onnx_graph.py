"""Structure of a model without layers (a tf.Module of raw tf.Variables), read through its ONNX graph.

Such a model says nothing about its structure until it runs, so it is exported with tf2onnx (the convert-mode route)
and its parametrised ONNX nodes are read in graph order: MatMul / Gemm with a constant weight (and the Add of a constant
bias that follows), Conv with a constant weight and bias. Each constant is followed back to the tf.Variable it was
made from by value, as in convert mode (``weight_matching``). No per-layer activations are recorded, so a failure in
such a model is reported without the per-layer divergence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_parity.bridge import pipeline as bridge
from pytest_parity.bridge.weight_matching import WeightMatch, match_weights
from pytest_parity.errors import ParityUsageError
from pytest_parity.modes.port.ops import Binding, ModelStructure, ParamOp, moved


def _core(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def _variable_to_initializer(match: WeightMatch, initializer_shape: tuple[int, ...]) -> Any:
    def forward(value: np.ndarray) -> np.ndarray:
        return np.transpose(value.reshape(_core(value.shape)), match.permutation).reshape(initializer_shape)

    return forward


def _bound(match: WeightMatch, initializer_shape: tuple[int, ...], transpose: bool) -> Binding:
    """Variable <-> the ONNX convention's tensor; ``transpose`` turns a MatMul's [in, out] into Gemm's [out, in]."""
    to_initializer = _variable_to_initializer(match, initializer_shape)
    if transpose:
        return moved(match.source_name, lambda v: to_initializer(v).T, lambda w: match.to_source_layout(w.T))
    return moved(match.source_name, to_initializer, match.to_source_layout)


def record(adapter: Any, inputs: Any, device: str) -> ModelStructure:
    import onnx.numpy_helper

    model_proto = bridge.export_tensorflow(adapter, inputs)
    graph = model_proto.graph
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in graph.initializer}
    values = adapter.weights()
    # Only exact copies: a tf.Module's weights reach the graph unchanged (transposed at most).
    exact = [m for m in match_weights(values, initializers).matches
             if np.array_equal(m.to_source_layout(initializers[m.target_name]), values[m.source_name])]
    by_initializer = {m.target_name: m for m in exact}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    ops: list[ParamOp] = []
    for node in graph.node:
        weight = next((by_initializer[name] for name in node.input[1:2] if name in by_initializer), None)
        if weight is None or node.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        shape = initializers[weight.target_name].shape
        transposed_gemm = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
        bindings = {"W": _bound(weight, shape, transpose=node.op_type == "MatMul" or
                                (node.op_type == "Gemm" and not transposed_gemm))}
        bias = _bias_of(node, consumers, by_initializer)
        if bias is not None:
            bindings["B"] = _bound(bias, initializers[bias.target_name].shape, transpose=False)
        op = "Conv" if node.op_type == "Conv" else "Gemm"
        ops.append(ParamOp(op, weight.source_name, f"{node.op_type} of tf.Variables", bindings))
    used = {name for op in ops for name in op.variables()}
    left = [name for name in adapter.trainable_names() if name not in used]
    if left:
        raise ParityUsageError(
            f"port mode read {adapter.description} through its ONNX graph (it has no Keras layers) and could not "
            f"place the variables {left} in a MatMul, Gemm or Conv with its bias. Build the model from Keras layers "
            f"to port it, or check it in convert mode: parity.check(model, inputs=...)")
    return ModelStructure(ops, calls=[])


def _bias_of(node: Any, consumers: dict[str, list[Any]], by_initializer: dict[str, WeightMatch]) -> WeightMatch | None:
    if node.op_type in ("Gemm", "Conv"):
        return by_initializer.get(node.input[2]) if len(node.input) > 2 else None
    following = consumers.get(node.output[0], [])
    if len(following) == 1 and following[0].op_type == "Add":
        return next((by_initializer[name] for name in following[0].input if name in by_initializer), None)
    return None
