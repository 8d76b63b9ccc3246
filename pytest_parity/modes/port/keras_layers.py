"""Keras layers <-> ONNX conventions, and a recording run that says which layers a model calls, in order.

Each rule reads one Keras layer into ParamOps (see ``ops``). Keras layouts: Dense kernel [in, out]; ConvND kernel
[*kernel, in/groups, out]; DepthwiseConv kernel [*kernel, in, multiplier]; ConvNDTranspose kernel [*kernel, out, in];
LSTM kernel [in, 4H] with gates i,f,c,o and one bias [4H]; GRU gates z,r,h with bias [2, 3H] when reset_after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity.errors import ParityUsageError
from pytest_parity.modes.port.ops import (
    GRU_KERAS_TO_ONNX,
    LSTM_KERAS_TO_ONNX,
    Binding,
    LayerCall,
    ModelStructure,
    ParamOp,
    moved,
    reorder_gates,
    restore_gates,
    same,
    same_padding,
    stacked,
)

FRAMEWORK = "Keras"


def _activation_name(function: Any) -> str:
    return getattr(function, "__name__", type(function).__name__)


def _conv_pads(layer: Any, call: LayerCall | None) -> list[int] | None:
    """ONNX pads [begin..., end...] that this Keras convolution applies (known once an input size has been seen)."""
    kernel = layer.kernel_size
    if layer.padding == "valid":
        return [0] * (2 * len(kernel))
    if layer.padding == "causal":
        return [(kernel[0] - 1) * layer.dilation_rate[0], 0]
    if call is None or call.input is None:
        return None
    spatial = call.input.shape[1:-1] if layer.data_format == "channels_last" else call.input.shape[2:]
    pairs = [same_padding(int(size), k, s, d)
             for size, k, s, d in zip(spatial, kernel, layer.strides, layer.dilation_rate)]
    return [begin for begin, _ in pairs] + [end for _, end in pairs]


def _fused_activation(layer: Any) -> dict[str, Any]:
    return {"activation": _activation_name(layer.activation)} if getattr(layer, "activation", None) else {}


def _bias(layer: Any, names: dict[int, str], bindings: dict[str, Binding]) -> None:
    if getattr(layer, "use_bias", True) and getattr(layer, "bias", None) is not None:
        bindings["B"] = same(names[id(layer.bias)])


def _dense(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    bindings = {"W": moved(names[id(layer.kernel)], lambda k: k.T, lambda w: w.T)}
    _bias(layer, names, bindings)
    return [ParamOp("Gemm", layer.path, type(layer).__name__, bindings, _fused_activation(layer))]


def _conv_attributes(layer: Any, call: LayerCall | None) -> dict[str, Any]:
    return {"strides": list(layer.strides), "dilations": list(layer.dilation_rate), "pads": _conv_pads(layer, call),
            **_fused_activation(layer)}


def _kernel_to_oi(rank: int) -> tuple[int, ...]:
    # [*kernel, in, out] -> [out, in, *kernel]
    return (rank - 1, rank - 2, *range(rank - 2))


def _conv(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    rank = len(layer.kernel.shape)
    forward = _kernel_to_oi(rank)
    backward = tuple(int(i) for i in np.argsort(forward))
    bindings = {"W": moved(names[id(layer.kernel)], lambda k: np.transpose(k, forward),
                           lambda w: np.transpose(w, backward))}
    _bias(layer, names, bindings)
    attributes = {**_conv_attributes(layer, call), "group": layer.groups}
    return [ParamOp("Conv", layer.path, type(layer).__name__, bindings, attributes)]


def _depthwise_binding(variable: str, kernel_shape: tuple[int, ...]) -> Binding:
    # [*kernel, in, multiplier] -> [in * multiplier, 1, *kernel]: output channel c * multiplier + m, like torch's
    # Conv2d(groups=in).
    *spatial, channels, multiplier = kernel_shape
    rank = len(kernel_shape)

    def to_onnx(kernel: np.ndarray) -> np.ndarray:
        flat = kernel.reshape(*spatial, channels * multiplier)
        return np.transpose(flat, (rank - 2, *range(rank - 2)))[:, None]

    def from_onnx(weight: np.ndarray) -> np.ndarray:
        return np.transpose(weight[:, 0], (*range(1, rank - 1), 0)).reshape(kernel_shape)

    return moved(variable, to_onnx, from_onnx)


def _depthwise(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    kernel = layer.kernel
    bindings = {"W": _depthwise_binding(names[id(kernel)], tuple(kernel.shape))}
    _bias(layer, names, bindings)
    attributes = {**_conv_attributes(layer, call), "group": int(kernel.shape[-2])}
    return [ParamOp("Conv", layer.path, type(layer).__name__, bindings, attributes)]


def _separable(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    """Depthwise then pointwise: two Conv ops, the bias with the second (as a depthwise + 1x1 pair in torch)."""
    depthwise, pointwise = layer.depthwise_kernel, layer.pointwise_kernel
    rank = len(pointwise.shape)
    forward = _kernel_to_oi(rank)
    backward = tuple(int(i) for i in np.argsort(forward))
    attributes = _conv_attributes(layer, call)
    first = ParamOp("Conv", layer.path + "[depthwise]", type(layer).__name__,
                    {"W": _depthwise_binding(names[id(depthwise)], tuple(depthwise.shape))},
                    {**attributes, "activation": "linear", "group": int(depthwise.shape[-2])})
    second_bindings = {"W": moved(names[id(pointwise)], lambda k: np.transpose(k, forward),
                                  lambda w: np.transpose(w, backward))}
    _bias(layer, names, second_bindings)
    second = ParamOp("Conv", layer.path + "[pointwise]", type(layer).__name__, second_bindings,
                     {"strides": [1] * (rank - 2), "pads": [0] * (2 * (rank - 2)), "group": 1,
                      **_fused_activation(layer)})
    return [first, second]


def _conv_transpose(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    rank = len(layer.kernel.shape)
    forward = _kernel_to_oi(rank)  # [*kernel, out, in] -> [in, out, *kernel], ONNX ConvTranspose's layout
    backward = tuple(int(i) for i in np.argsort(forward))
    bindings = {"W": moved(names[id(layer.kernel)], lambda k: np.transpose(k, forward),
                           lambda w: np.transpose(w, backward))}
    _bias(layer, names, bindings)
    attributes = {"strides": list(layer.strides), "dilations": list(layer.dilation_rate), "padding": layer.padding,
                  "output_padding": getattr(layer, "output_padding", None), **_fused_activation(layer)}
    return [ParamOp("ConvTranspose", layer.path, type(layer).__name__, bindings, attributes)]


def _batch_norm(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    bindings: dict[str, Binding] = {}
    if layer.scale:
        bindings["scale"] = same(names[id(layer.gamma)])
    if layer.center:
        bindings["B"] = same(names[id(layer.beta)])
    bindings["mean"] = same(names[id(layer.moving_mean)])
    bindings["var"] = same(names[id(layer.moving_variance)])
    return [ParamOp("BatchNormalization", layer.path, type(layer).__name__, bindings,
                    {"epsilon": float(layer.epsilon), "axis": layer.axis})]


def _layer_norm(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    bindings: dict[str, Binding] = {}
    if getattr(layer, "gamma", None) is not None:
        bindings["scale"] = same(names[id(layer.gamma)])
    if getattr(layer, "rms_scaling", False):
        # LayerNormalization(rms_scaling=True) (deprecated for RMSNormalization): no centring, no beta.
        return [ParamOp("RMSNormalization", layer.path, type(layer).__name__, bindings,
                        {"epsilon": float(layer.epsilon), "axis": layer.axis})]
    if getattr(layer, "beta", None) is not None:
        bindings["B"] = same(names[id(layer.beta)])
    return [ParamOp("LayerNormalization", layer.path, type(layer).__name__, bindings,
                    {"epsilon": float(layer.epsilon), "axis": layer.axis})]


def _rms_norm(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    epsilon = layer.epsilon
    if epsilon is None:
        import keras

        epsilon = keras.config.epsilon()
    return [ParamOp("RMSNormalization", layer.path, type(layer).__name__, {"scale": same(names[id(layer.scale)])},
                    {"epsilon": float(epsilon), "axis": layer.axis})]


def _einsum_as_gemm(layer: Any) -> tuple[tuple[int, ...], str, str] | str:
    """(kernel axes in Gemm order: contracted then free, the output's free axes, the batch axes), or why the
    equation is no matrix product.

    An EinsumDense is a Gemm when the kernel's contracted axes are the input's trailing axes and its free axes the
    output's trailing axes, with the same leading (batch) axes before both: MultiHeadAttention's "abc,cde->abde"
    (q/k/v: [hidden] -> [heads, head_dim]) and "abcd,cde->abe" (output: [heads, head_dim] -> [hidden])."""
    equation = layer.equation.replace(" ", "")
    inputs, _, output = equation.partition("->")
    input_spec, _, kernel_spec = inputs.partition(",")
    if input_spec.startswith("...") and output.startswith("..."):
        input_spec, output = input_spec[3:], output[3:]
    if "." in input_spec + kernel_spec + output:
        return "an ellipsis elsewhere than before the input's and output's leading axes"
    contracted = "".join(char for char in input_spec if char in kernel_spec and char not in output)
    free = "".join(char for char in output if char in kernel_spec)
    batch = input_spec[: len(input_spec) - len(contracted)]
    if any(char in input_spec and char in output for char in kernel_spec):
        return f"kernel axes {kernel_spec!r} shared by the input and the output (a batched product)"
    if not input_spec.endswith(contracted) or output != batch + free or \
            sorted(contracted + free) != sorted(kernel_spec):
        return (f"the kernel's contracted axes {contracted!r} must be the input's trailing axes and its other axes "
                f"{free!r} the output's, after the same leading axes")
    return tuple(kernel_spec.index(char) for char in contracted + free), free, batch


def _einsum_dense(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    """EinsumDense as a Gemm: W = kernel with its contracted axes first, reshaped to [in, out], transposed to ONNX's
    [out, in]; the bias, over the output's free axes, flattened to B [out]."""
    analysed = _einsum_as_gemm(layer)
    if isinstance(analysed, str):
        raise ParityUsageError(
            f"Keras layer {layer.path!r} (EinsumDense, equation {layer.equation!r}) is no matrix product port mode can "
            f"carry as a Gemm: {analysed}.")
    order, free, _ = analysed
    shape = tuple(int(size) for size in layer.kernel.shape)
    ordered = tuple(shape[axis] for axis in order)
    inverse = tuple(int(axis) for axis in np.argsort(order))
    size_in = int(np.prod(ordered[: len(order) - len(free)]))

    def to_onnx(kernel: np.ndarray) -> np.ndarray:
        return np.transpose(kernel, order).reshape(size_in, -1).T

    def from_onnx(weight: np.ndarray) -> np.ndarray:
        return np.transpose(weight.T.reshape(ordered), inverse)

    bindings = {"W": moved(names[id(layer.kernel)], to_onnx, from_onnx)}
    if getattr(layer, "bias", None) is not None:
        bias_shape = tuple(int(size) for size in layer.bias.shape)
        if sorted(layer.bias_axes) != sorted(free) or len(bias_shape) != len(free):
            raise ParityUsageError(
                f"Keras layer {layer.path!r} (EinsumDense, equation {layer.equation!r}) has a bias over axes "
                f"{layer.bias_axes!r}, broadcast over the output's other axes {free!r}; a Gemm bias covers every "
                f"output feature, so port mode cannot carry it. Use bias_axes={free!r}.")
        bindings["B"] = moved(names[id(layer.bias)], lambda b: b.reshape(-1), lambda b: b.reshape(bias_shape))
    return [ParamOp("Gemm", layer.path, type(layer).__name__, bindings,
                    {"equation": layer.equation, **_fused_activation(layer)})]


def _attention_roles(model: Any) -> dict[int, dict[str, Any]]:
    """The EinsumDense sublayers of each MultiHeadAttention -> their role and head split (as nn.MultiheadAttention's
    ops say theirs), so that a head count that differs is named before anything runs."""
    roles: dict[int, dict[str, Any]] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not any(cls.__name__ == "MultiHeadAttention" and cls.__module__.startswith("keras")
                   for cls in type(layer).__mro__):
            continue
        for role, sublayer in (("query", "_query_dense"), ("key", "_key_dense"), ("value", "_value_dense"),
                               ("output", "_output_dense")):
            dense = getattr(layer, sublayer, None)
            if dense is not None:
                roles[id(dense)] = {"attention": role, "heads": int(layer.num_heads),
                                    "head_dim": int(layer.value_dim if role in ("value", "output") else layer.key_dim)}
    return roles


def _embedding(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    return [ParamOp("Gather", layer.path, type(layer).__name__, {"data": same(names[id(layer.embeddings)])})]


def _position_embedding(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    """keras-hub's PositionEmbedding: a table whose first rows are taken for a sequence, as an nn.Embedding looks up
    arange(length)."""
    return [ParamOp("Gather", layer.path, type(layer).__name__,
                    {"data": same(names[id(layer.position_embeddings)])})]


# -- recurrent layers ------------------------------------------------------------------------------------------------

RECURRENT_OPS = {"LSTM": ("LSTM", 4, LSTM_KERAS_TO_ONNX), "GRU": ("GRU", 3, GRU_KERAS_TO_ONNX),
                 "SimpleRNN": ("RNN", 1, (0,))}


def _single_bias(variable: str, order: tuple[int, ...]) -> Binding:
    """Keras' one bias b <-> ONNX B = [Wb, Rb]: export b into Wb with Rb = 0; load b = Wb + Rb (see ops)."""
    def export(values: dict[str, np.ndarray]) -> np.ndarray:
        gates = reorder_gates(values[variable], order, 0)
        return np.concatenate([gates, np.zeros_like(gates)])

    def load(tensor: np.ndarray) -> dict[str, np.ndarray]:
        half = tensor.shape[0] // 2
        return {variable: restore_gates(tensor[:half] + tensor[half:], order, 0)}

    def export_adjoint(gradient: np.ndarray) -> dict[str, np.ndarray]:
        return {variable: restore_gates(gradient[: gradient.shape[0] // 2], order, 0)}

    def load_adjoint(gradients: dict[str, np.ndarray]) -> np.ndarray:
        gates = reorder_gates(gradients[variable], order, 0)
        return np.concatenate([gates, gates])

    return Binding((variable,), export, load, export_adjoint, load_adjoint)


def _recurrent_direction(layer: Any, names: dict[int, str]) -> dict[str, Binding]:
    """One direction of an LSTM/GRU/SimpleRNN as unstacked ONNX tensors ([gates*H, in], [gates*H, H], [2*gates*H])."""
    _, _, order = RECURRENT_OPS[type(layer).__name__]
    cell = layer.cell

    def gate_moved(variable: Any) -> Binding:
        return moved(names[id(variable)], lambda k: reorder_gates(k.T, order, 0),
                     lambda w: restore_gates(w, order, 0).T)

    bindings = {"W": gate_moved(cell.kernel), "R": gate_moved(cell.recurrent_kernel)}
    if cell.use_bias:
        bias = names[id(cell.bias)]
        if len(cell.bias.shape) == 2:  # GRU reset_after: [input bias, recurrent bias], exactly ONNX's [Wb, Rb]
            bindings["B"] = moved(bias, lambda b: np.concatenate([reorder_gates(b[0], order, 0),
                                                                  reorder_gates(b[1], order, 0)]),
                                  lambda t: np.stack([restore_gates(half, order, 0) for half in np.split(t, 2)]))
        else:
            bindings["B"] = _single_bias(bias, order)
    return bindings


def _recurrent_attributes(layer: Any) -> dict[str, Any]:
    cell = layer.cell
    activations = [_activation_name(cell.activation)]
    if hasattr(cell, "recurrent_activation"):
        activations.insert(0, _activation_name(cell.recurrent_activation))
    attributes: dict[str, Any] = {"hidden_size": int(cell.units), "activations": activations,
                                  "direction": "reverse" if layer.go_backwards else "forward",
                                  "return_sequences": bool(layer.return_sequences)}
    if type(layer).__name__ == "GRU":
        attributes["linear_before_reset"] = int(bool(cell.reset_after))
    return attributes


STRUCTURAL_RECURRENT = ("hidden_size", "activations", "direction", "linear_before_reset")


def _recurrent(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    op, _, _ = RECURRENT_OPS[type(layer).__name__]
    bindings = {key: stacked([binding]) for key, binding in _recurrent_direction(layer, names).items()}
    return [ParamOp(op, layer.path, type(layer).__name__, bindings, _recurrent_attributes(layer),
                    STRUCTURAL_RECURRENT)]


def _bidirectional(layer: Any, names: dict[int, str], call: LayerCall | None) -> list[ParamOp]:
    forward, backward = layer.forward_layer, layer.backward_layer
    inner = type(forward).__name__
    if inner not in RECURRENT_OPS:
        raise ParityUsageError(f"Keras layer {layer.path!r}: Bidirectional({inner}) has no ONNX recurrent "
                               f"equivalent; port mode carries Bidirectional LSTM, GRU and SimpleRNN")
    op, _, _ = RECURRENT_OPS[inner]
    parts = [_recurrent_direction(forward, names), _recurrent_direction(backward, names)]
    bindings = {key: stacked([part[key] for part in parts]) for key in parts[0]}
    attributes = {**_recurrent_attributes(forward), "direction": "bidirectional", "merge_mode": layer.merge_mode}
    return [ParamOp(op, layer.path, f"Bidirectional({inner})", bindings, attributes, STRUCTURAL_RECURRENT)]


Rule = Callable[[Any, dict[int, str], "LayerCall | None"], list[ParamOp]]

RULES: dict[str, Rule] = {
    "Dense": _dense,
    "Conv1D": _conv, "Conv2D": _conv, "Conv3D": _conv,
    "DepthwiseConv1D": _depthwise, "DepthwiseConv2D": _depthwise,
    "SeparableConv1D": _separable, "SeparableConv2D": _separable,
    "Conv1DTranspose": _conv_transpose, "Conv2DTranspose": _conv_transpose, "Conv3DTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "RMSNormalization": _rms_norm,
    "EinsumDense": _einsum_dense,
    "Embedding": _embedding,
    "PositionEmbedding": _position_embedding,  # keras_hub.layers
    "LSTM": _recurrent, "GRU": _recurrent, "SimpleRNN": _recurrent,
    "Bidirectional": _bidirectional,
}
# Layers whose output is recorded before their built-in activation, so it compares with a torch layer's output.
FUSED_ACTIVATION = {"Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                    "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"}


def _rule_for(layer: Any) -> Rule | None:
    for cls in type(layer).__mro__:
        if cls.__module__.split(".")[0] in ("keras", "tf_keras", "keras_hub") and cls.__name__ in RULES:
            return RULES[cls.__name__]
    return None


def leaf_layers(model: Any) -> list[Any]:
    """Layers port mode treats as one unit: those with a rule, and weightless or unknown layers without sublayers."""
    leaves: list[Any] = []

    def visit(layer: Any) -> None:
        children = [child for child in layer._flatten_layers(include_self=False, recursive=False)
                    if type(child).__name__ != "InputLayer"]
        if _rule_for(layer) is not None or not children:
            leaves.append(layer)
            return
        for child in children:
            visit(child)

    visit(model)
    return leaves


def _to_numpy(value: Any) -> np.ndarray | None:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]  # recurrent layers with return_state: the sequence output comes first
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return None


def record(adapter: Any, inputs: Any, device: str) -> ModelStructure:
    """Run the model once in inference mode with every leaf layer's call recorded, then read the ops in call order."""
    import keras

    model = adapter.model
    if not hasattr(model, "_flatten_layers"):
        from pytest_parity.modes.port import onnx_graph

        return onnx_graph.record(adapter, inputs, device)  # a tf.Module of raw variables: no layers to record
    leaves = leaf_layers(model)
    calls: list[LayerCall] = []
    originals: dict[int, Any] = {}

    def wrap(layer: Any) -> Callable[..., Any]:
        original = layer.call

        def recording_call(*args: Any, **kwargs: Any) -> Any:
            fused = type(layer).__name__ in FUSED_ACTIVATION and getattr(layer, "activation", None) is not None
            activation = layer.activation if fused else None
            if fused:
                # Record the output before the built-in activation: a torch port applies it as a separate module.
                layer.activation = keras.activations.linear
            try:
                output = original(*args, **kwargs)
            finally:
                if fused:
                    layer.activation = activation
            calls.append(LayerCall(layer.path, type(layer).__name__, _to_numpy(args[0] if args else None),
                                   _to_numpy(output)))
            return activation(output) if activation is not None else output

        return recording_call

    for layer in leaves:
        originals[id(layer)] = layer.__dict__.get("call")
        layer.call = wrap(layer)
    try:
        adapter.run(inputs, device, None)
    finally:
        for layer in leaves:
            del layer.call
            if originals[id(layer)] is not None:
                layer.call = originals[id(layer)]
    return read_structure(adapter, leaves, calls)


def read_structure(adapter: Any, leaves: list[Any], calls: list[LayerCall]) -> ModelStructure:
    names = {id(variable): name for name, variable in adapter._variables.items()}
    by_path = {layer.path: layer for layer in leaves}
    roles = _attention_roles(adapter.model)
    ops: list[ParamOp] = []
    seen: set[str] = set()
    for call in calls:
        if call.layer in seen:
            continue  # a layer called twice shares its weights: carry them once
        seen.add(call.layer)
        layer = by_path[call.layer]
        rule = _rule_for(layer)
        if rule is None:
            if layer.weights:
                raise ParityUsageError(
                    f"Keras layer {layer.path!r} ({type(layer).__name__}) holds weights "
                    f"{[v.path for v in layer.weights]} but port mode has no ONNX rule for it, so they cannot be "
                    f"carried across. Supported: {', '.join(sorted(RULES))}.")
            continue
        layer_ops = rule(layer, names, call)
        for op in layer_ops:
            if id(layer) in roles:
                op.attributes.update(roles[id(layer)])
                op.structural = (*op.structural, "heads")
        ops.extend(layer_ops)
    unused = {layer.path: "never called on these inputs" for layer in leaves
              if layer.path not in seen and layer.weights}
    return ModelStructure(ops, calls, unused)


def run_perturbed(adapter: Any, inputs: Any, device: str, layers: frozenset[str],
                  noise_like: Callable[[tuple[int, ...], float, str], np.ndarray]) -> Any:
    """The model's outputs (numpy) on a forward run with seeded noise added to every floating-point output of the
    named leaf layers (port/reachability: which layers reach the compared outputs; ``noise_like(shape, scale of the
    output, layer)`` makes it)."""
    import tensorflow as tf

    model = adapter.model
    chosen = [layer for layer in leaf_layers(model) if layer.path in layers] if hasattr(model, "_flatten_layers") \
        else []

    def perturb(value: Any, label: str) -> Any:
        if tf.is_tensor(value) and value.dtype.is_floating:
            scale = float(tf.reduce_max(tf.abs(value))) if value.shape.num_elements() else 0.0
            return value + tf.constant(noise_like(tuple(value.shape), scale, label), dtype=value.dtype)
        return value

    def wrap(layer: Any) -> Callable[..., Any]:
        original = layer.call

        def perturbed_call(*args: Any, **kwargs: Any) -> Any:
            return tf.nest.map_structure(lambda value: perturb(value, layer.path), original(*args, **kwargs))

        return perturbed_call

    originals = {id(layer): layer.__dict__.get("call") for layer in chosen}
    for layer in chosen:
        layer.call = wrap(layer)
    try:
        return adapter.run(inputs, device, None)[0]
    finally:
        for layer in chosen:
            del layer.call
            if originals[id(layer)] is not None:
                layer.call = originals[id(layer)]
