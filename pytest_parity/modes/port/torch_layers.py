"""PyTorch modules <-> ONNX conventions, and a recording run that says which modules a model calls, in order.

torch's layouts are mostly ONNX's already (Linear weight [out, in], ConvNd [out, in/groups, *kernel], ConvTransposeNd
[in, out/groups, *kernel]); recurrent modules differ only in gate order (LSTM i,f,g,o; GRU r,z,n) and in keeping one
tensor per layer and direction (``weight_ih_l0_reverse``) where ONNX stacks directions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity.errors import ParityUsageError
from pytest_parity.modes.port.ops import (
    GRU_TORCH_TO_ONNX,
    LSTM_TORCH_TO_ONNX,
    Binding,
    Block,
    LayerCall,
    ModelStructure,
    ParamOp,
    block_of,
    moved,
    reorder_gates,
    restore_gates,
    same,
    stacked,
)


def _name(names: dict[int, str], tensor: Any) -> str:
    return names[id(tensor)]


def _bias(module: Any, names: dict[int, str], bindings: dict[str, Binding]) -> None:
    if getattr(module, "bias", None) is not None:
        bindings["B"] = same(_name(names, module.bias))


def _linear(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    bindings = {"W": same(_name(names, module.weight))}
    _bias(module, names, bindings)
    return [ParamOp("Gemm", path, type(module).__name__, bindings)]


def _transposed_linear(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    """transformers' Conv1D (GPT-2's projections): a Linear that keeps its weight as [in, out], ONNX MatMul's order."""
    bindings = {"W": moved(_name(names, module.weight), lambda a: a.T, lambda a: a.T)}
    _bias(module, names, bindings)
    return [ParamOp("Gemm", path, type(module).__name__, bindings)]


def _conv_pads(module: Any) -> list[int]:
    kernel, dilation = module.kernel_size, module.dilation
    if module.padding == "valid":
        return [0] * (2 * len(kernel))
    if module.padding == "same":
        # torch's 'same' puts the odd element at the end, like TF.
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [t // 2 for t in totals] + [t - t // 2 for t in totals]
    return list(module.padding) * 2


def _conv(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    bindings = {"W": same(_name(names, module.weight))}
    _bias(module, names, bindings)
    attributes = {"strides": list(module.stride), "dilations": list(module.dilation), "pads": _conv_pads(module),
                  "group": module.groups}
    if module.padding_mode != "zeros":
        attributes["padding_mode"] = module.padding_mode
    return [ParamOp("Conv", path, type(module).__name__, bindings, attributes)]


def _conv_transpose(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    bindings = {"W": same(_name(names, module.weight))}
    _bias(module, names, bindings)
    attributes = {"strides": list(module.stride), "dilations": list(module.dilation), "pads": list(module.padding) * 2,
                  "output_padding": list(module.output_padding), "group": module.groups}
    return [ParamOp("ConvTranspose", path, type(module).__name__, bindings, attributes)]


def _batch_norm(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    if module.running_mean is None:
        raise ParityUsageError(
            f"PyTorch module {path!r} ({type(module).__name__}) has track_running_stats=False: it normalises with "
            f"the batch's own statistics even in eval mode, which no inference-mode BatchNormalization (Keras or "
            f"ONNX) computes. Use track_running_stats=True to port it.")
    bindings: dict[str, Binding] = {}
    if module.affine:
        bindings["scale"] = same(_name(names, module.weight))
        bindings["B"] = same(_name(names, module.bias))
    bindings["mean"] = same(_name(names, module.running_mean))
    bindings["var"] = same(_name(names, module.running_var))
    return [ParamOp("BatchNormalization", path, type(module).__name__, bindings, {"epsilon": float(module.eps)})]


def _layer_norm(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    bindings: dict[str, Binding] = {}
    if module.weight is not None:
        bindings["scale"] = same(_name(names, module.weight))
    _bias(module, names, bindings)
    return [ParamOp("LayerNormalization", path, type(module).__name__, bindings,
                    {"epsilon": float(module.eps), "normalized_shape": list(module.normalized_shape)})]


def _rms_norm(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    bindings: dict[str, Binding] = {}
    if module.weight is not None:
        bindings["scale"] = same(_name(names, module.weight))
    # eps=None is the input dtype's machine epsilon (the float32 one for the float32 models port mode runs).
    epsilon = float(np.finfo(np.float32).eps) if module.eps is None else float(module.eps)
    return [ParamOp("RMSNormalization", path, type(module).__name__, bindings,
                    {"epsilon": epsilon, "normalized_shape": list(module.normalized_shape)})]


ATTENTION_ROLES = ("query", "key", "value")


def _attention(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    """nn.MultiheadAttention as four Gemms, in the order the projections run: q, k, v (rows 0:E, E:2E, 2E:3E of the
    fused in_proj_weight and in_proj_bias, or q/k/v_proj_weight when kdim/vdim differ), then out_proj."""
    if module.bias_k is not None or module.add_zero_attn:
        raise ParityUsageError(
            f"PyTorch module {path!r} (MultiheadAttention) has add_bias_kv=True or add_zero_attn=True: they append a "
            f"learned or zero key/value to the sequence, which Keras MultiHeadAttention has no equivalent of")
    attributes = {"heads": int(module.num_heads), "head_dim": int(module.head_dim)}
    ops = []
    for index, role in enumerate(ATTENTION_ROLES):
        block = Block(index, 3)
        if module._qkv_same_embed_dim:
            bindings = {"W": block_of(_name(names, module.in_proj_weight), block)}
        else:
            bindings = {"W": same(_name(names, getattr(module, f"{role[0]}_proj_weight")))}
        if module.in_proj_bias is not None:
            bindings["B"] = block_of(_name(names, module.in_proj_bias), block)
        ops.append(ParamOp("Gemm", f"{path}[{role}]", type(module).__name__, bindings,
                           {**attributes, "attention": role}, ("heads",)))
    out = {"W": same(_name(names, module.out_proj.weight))}
    if module.out_proj.bias is not None:
        out["B"] = same(_name(names, module.out_proj.bias))
    ops.append(ParamOp("Gemm", f"{path}[output]", type(module).__name__, out, {**attributes, "attention": "output"},
                       ("heads",)))
    return ops


def _attention_part_calls(path: str, module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> list[LayerCall]:
    """What the q, k, v projections inside nn.MultiheadAttention take and give (computed as the module does, with
    F.linear on its own weights; the module calls no submodule for them), and the module's output as out_proj's. The
    input of out_proj (the heads merged after attention) is not exposed, so it is left unrecorded."""
    import torch

    inputs = list(args) + [kwargs.get(name) for name in ("query", "key", "value")[len(args):]]
    calls = []
    with torch.no_grad():
        for index, (role, tensor) in enumerate(zip(ATTENTION_ROLES, inputs)):
            if tensor is None:
                continue
            if module._qkv_same_embed_dim:
                weight = module.in_proj_weight.chunk(3)[index]
            else:
                weight = getattr(module, f"{role[0]}_proj_weight")
            bias = None if module.in_proj_bias is None else module.in_proj_bias.chunk(3)[index]
            batch_second = not module.batch_first and tensor.dim() == 3
            calls.append(LayerCall(f"{path}[{role}]", type(module).__name__, _to_numpy(tensor, batch_second),
                                   _to_numpy(torch.nn.functional.linear(tensor, weight, bias), batch_second)))
    batch_second = not module.batch_first and _first_tensor(output).dim() == 3
    calls.append(LayerCall(f"{path}[output]", type(module).__name__, None, _to_numpy(output, batch_second)))
    return calls


def _embedding(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    # padding_idx: that row gets no gradient (HF BERT's word embeddings, padding_idx=pad_token_id), unlike Keras'.
    attributes = {} if module.padding_idx is None else {"padding_idx": int(module.padding_idx)}
    return [ParamOp("Gather", path, type(module).__name__, {"data": same(_name(names, module.weight))}, attributes)]


RECURRENT = {"LSTM": ("LSTM", LSTM_TORCH_TO_ONNX, ["sigmoid", "tanh"]),
             "GRU": ("GRU", GRU_TORCH_TO_ONNX, ["sigmoid", "tanh"])}
STRUCTURAL_RECURRENT = ("hidden_size", "activations", "direction", "linear_before_reset")


def _recurrent(path: str, module: Any, names: dict[int, str]) -> list[ParamOp]:
    kind = type(module).__name__
    order: tuple[int, ...]
    if kind == "RNN":
        op, order, activations = "RNN", (0,), [module.nonlinearity]
    else:
        op, order, activations = RECURRENT[kind]
    if getattr(module, "proj_size", 0):
        raise ParityUsageError(f"PyTorch module {path!r} (LSTM) has proj_size={module.proj_size}: projected LSTMs "
                               f"have no ONNX LSTM or Keras equivalent, so port mode cannot carry its weights")

    def gate_moved(tensor: Any) -> Binding:
        return moved(_name(names, tensor), lambda w: reorder_gates(w, order, 0), lambda w: restore_gates(w, order, 0))

    ops = []
    directions = ["", "_reverse"] if module.bidirectional else [""]
    for index in range(module.num_layers):
        parts = []
        for suffix in directions:
            part = {"W": gate_moved(getattr(module, f"weight_ih_l{index}{suffix}")),
                    "R": gate_moved(getattr(module, f"weight_hh_l{index}{suffix}"))}
            if module.bias:
                part["B"] = _bias_pair(_name(names, getattr(module, f"bias_ih_l{index}{suffix}")),
                                       _name(names, getattr(module, f"bias_hh_l{index}{suffix}")), order)
            parts.append(part)
        bindings = {key: stacked([part[key] for part in parts]) for key in parts[0]}
        attributes: dict[str, Any] = {"hidden_size": module.hidden_size, "activations": activations,
                                      "direction": "bidirectional" if module.bidirectional else "forward"}
        if op == "GRU":
            attributes["linear_before_reset"] = 1  # nn.GRU applies the reset gate after the recurrent matmul
        label = f"{path}[layer {index}]" if module.num_layers > 1 else path
        ops.append(ParamOp(op, label, kind, bindings, attributes, STRUCTURAL_RECURRENT))
    return ops


def _bias_pair(input_bias: str, hidden_bias: str, order: tuple[int, ...]) -> Binding:
    """bias_ih, bias_hh <-> ONNX B = [Wb, Rb] (both gate-reordered): the same split as ONNX, so elements only move."""
    def export(values: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([reorder_gates(values[input_bias], order, 0),
                               reorder_gates(values[hidden_bias], order, 0)])

    def load(tensor: np.ndarray) -> dict[str, np.ndarray]:
        first, second = np.split(tensor, 2)
        return {input_bias: restore_gates(first, order, 0), hidden_bias: restore_gates(second, order, 0)}

    return Binding((input_bias, hidden_bias), export, load)


Rule = Callable[[str, Any, dict[int, str]], list[ParamOp]]

RULES: dict[str, Rule] = {
    "Linear": _linear,
    "Conv1d": _conv, "Conv2d": _conv, "Conv3d": _conv,
    "ConvTranspose1d": _conv_transpose, "ConvTranspose2d": _conv_transpose, "ConvTranspose3d": _conv_transpose,
    "BatchNorm1d": _batch_norm, "BatchNorm2d": _batch_norm, "BatchNorm3d": _batch_norm,
    "LayerNorm": _layer_norm,
    "RMSNorm": _rms_norm,
    "MultiheadAttention": _attention,
    "Embedding": _embedding,
    "LSTM": _recurrent, "GRU": _recurrent, "RNN": _recurrent,
}


# Layers of model libraries that hold weights in a standard op under another class, by module and qualified name (no
# import of the library: a model that uses one has imported it already).
LIBRARY_RULES: dict[str, Rule] = {
    "transformers.pytorch_utils.Conv1D": _transposed_linear,
}


def _rule_for(module: Any) -> Rule | None:
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ in RULES:
            return RULES[cls.__name__]
        if f"{cls.__module__}.{cls.__qualname__}" in LIBRARY_RULES:
            return LIBRARY_RULES[f"{cls.__module__}.{cls.__qualname__}"]
    return None


def leaf_modules(model: Any) -> list[tuple[str, Any]]:
    """Modules port mode treats as one unit: those with a rule, and modules without children."""
    leaves: list[tuple[str, Any]] = []

    def visit(path: str, module: Any) -> None:
        children = list(module.named_children())
        if _rule_for(module) is not None or not children:
            leaves.append((path, module))
            return
        own = [name for name, _ in module.named_parameters(recurse=False)]
        if own:
            raise ParityUsageError(
                f"PyTorch module {path or type(module).__name__!r} ({type(module).__name__}) holds parameters {own} "
                f"directly, outside any layer port mode knows, so they cannot be carried across. Keep weights in "
                f"standard modules ({', '.join(sorted(RULES))}).")
        for name, child in children:
            visit(f"{path}.{name}" if path else name, child)

    visit("", model)
    return leaves


def _first_tensor(value: Any) -> Any:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]  # nn.LSTM returns (output, (h, c)): the sequence output comes first
    return value


def _to_numpy(value: Any, batch_second: bool) -> np.ndarray | None:
    value = _first_tensor(value)
    if not hasattr(value, "detach"):
        return None
    array = value.detach().cpu().numpy()
    if batch_second and array.ndim == 3:
        array = np.swapaxes(array, 0, 1)  # recorded batch-first, as Keras records it
    return array


def record(adapter: Any, inputs: Any, device: str) -> ModelStructure:
    """Run the model once in eval mode with a forward hook on every leaf module, then read the ops in call order."""
    leaves = leaf_modules(adapter.module)
    calls: list[LayerCall] = []
    part_calls: list[LayerCall] = []

    def hook_for(path: str) -> Callable[..., None]:
        def hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
            batch_second = _rule_for(module) is _recurrent and not module.batch_first
            label = path or type(module).__name__
            calls.append(LayerCall(label, type(module).__name__, _to_numpy(args, batch_second),
                                   _to_numpy(output, batch_second)))
            if _rule_for(module) is _attention:
                part_calls.extend(_attention_part_calls(label, module, args, kwargs, output))
        return hook

    handles = [module.register_forward_hook(hook_for(path), with_kwargs=True) for path, module in leaves]
    try:
        adapter.run(inputs, device, None)
    finally:
        for handle in handles:
            handle.remove()
    structure = read_structure(adapter, leaves, calls)
    structure.part_calls = part_calls
    return structure


def read_structure(adapter: Any, leaves: list[tuple[str, Any]], calls: list[LayerCall]) -> ModelStructure:
    names = {id(tensor): name for name, tensor in adapter._named_tensors().items()}
    by_path = {(path or type(module).__name__): (path, module) for path, module in leaves}
    ops: list[ParamOp] = []
    seen: set[str] = set()
    for call in calls:
        if call.layer in seen:
            continue  # a module called twice shares its weights: carry them once
        seen.add(call.layer)
        _, module = by_path[call.layer]
        rule = _rule_for(module)
        has_weights = any(True for _ in module.parameters())
        if rule is None:
            if has_weights:
                raise ParityUsageError(
                    f"PyTorch module {call.layer!r} ({type(module).__name__}) holds parameters "
                    f"{[n for n, _ in module.named_parameters()]} but port mode has no ONNX rule for it, so they "
                    f"cannot be carried across. Supported: {', '.join(sorted(RULES))}.")
            continue
        ops.extend(rule(call.layer, module, names))
    unused = {key: "never called on these inputs" for key, (_, module) in by_path.items()
              if key not in seen and any(True for _ in module.parameters())}
    return ModelStructure(ops, calls, unused)


def run_perturbed(adapter: Any, inputs: Any, device: str, layers: frozenset[str],
                  noise_like: Callable[[tuple[int, ...], float, str], np.ndarray]) -> Any:
    """The model's outputs (numpy) on a forward run with seeded noise added to every floating-point output of the
    named leaf modules (port/reachability: which layers reach the compared outputs; ``noise_like(shape, scale of the
    output, layer)`` makes it)."""
    import torch

    def perturb(value: Any, label: str) -> Any:
        if torch.is_tensor(value) and value.is_floating_point():
            scale = float(value.detach().abs().max()) if value.numel() else 0.0
            noise = torch.from_numpy(noise_like(tuple(value.shape), scale, label))
            return value + noise.to(value.device, value.dtype)
        if isinstance(value, (tuple, list)):
            return type(value)(perturb(item, label) for item in value)
        return value

    def hook_for(label: str) -> Callable[..., Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            return perturb(output, label)
        return hook

    handles = [module.register_forward_hook(hook_for(path or type(module).__name__))
               for path, module in leaf_modules(adapter.module) if (path or type(module).__name__) in layers]
    try:
        return adapter.run(inputs, device, None)[0]
    finally:
        for handle in handles:
            handle.remove()
