"""Where a port's backward pass first differs, for gradient-only failures (the outputs agree, gradients do not).

The forward divergence (divergence.py) follows activations and, with the outputs agreeing, can only report that
every layer agrees. Here both models are run once more with the check's own cotangents while the gradient reaching
each paired layer's output and the gradient it passes to its input are recorded (torch: tensor hooks from forward
hooks; Keras: an identity with a custom gradient around each leaf layer's input and output, under the adapter's own
GradientTape). Walking the pairs from the outputs back:
- no gradient reaches a layer's output on one side: its output took no part in autograd (torch.no_grad(): the output
  does not require grad) or the path from it to the outputs is cut (.detach(), .data, tf.stop_gradient);
- the gradient reaching its output agrees but the one it passes back differs: its own backward differs (a custom
  torch.autograd.Function or tf.custom_gradient inside it);
- the gradient reaching its output agrees but its weights' gradients differ: the weight is detached or frozen inside
  it;
- the gradient reaching its output differs while each later layer passes back the same gradient: the difference is in
  what joins its output to them (an op between them, a residual connection; the torch graph's custom Functions
  between them are named).
Gradients are compared with the check's gradient tolerances (tolerances.gradient_atol at each tensor's own scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_parity.frameworks import ModelAdapter, ModelInputs
from pytest_parity.layouts import LayoutPair
from pytest_parity.modes.port.divergence import comparable, in_source_layout
from pytest_parity.modes.port.transfer import TransferPlan
from pytest_parity.result import Comparison
from pytest_parity.verdict import compare, tolerances


@dataclass
class LayerGradients:
    """One layer's first call during the recording backward pass."""

    output: np.ndarray | None = None        # d loss / d its output (None: no gradient reached it)
    input: np.ndarray | None = None         # d loss / d its input
    output_requires_grad: bool = True       # False: the output was computed outside autograd (torch.no_grad())
    custom_functions: list[str] = field(default_factory=list)  # torch: custom autograd Functions in its own graph
    # torch: custom autograd Functions between the previous paired layer's output and this layer's input.
    functions_before: list[str] = field(default_factory=list)


def _base(layer: str) -> str:
    return layer.split("[", 1)[0]


def _layers(plan: TransferPlan, side: str) -> list[str]:
    return list(dict.fromkeys(_base((pair.source if side == "source" else pair.target).layer) for pair in plan.pairs))


# -- torch -------------------------------------------------------------------------------------------------------------

def _first_tensor(value: Any) -> Any:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def _custom_nodes(start: Any, stop: set[Any], limit: int = 400) -> list[str]:
    """Class names of custom autograd Functions' backward nodes reachable from ``start`` before ``stop``."""
    import torch

    found: list[str] = []
    seen: set[int] = set()
    queue = [start]
    while queue and len(seen) < limit:
        node = queue.pop()
        if node is None or id(node) in seen or node in stop:
            continue
        seen.add(id(node))
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            found.append(type(node).__name__.removesuffix("Backward"))
        queue.extend(next_node for next_node, _ in getattr(node, "next_functions", ()))
    return list(dict.fromkeys(found))


def _torch_record(adapter: Any, inputs: ModelInputs, device: str, cotangents: list[Any], layers: list[str],
                  weights: list[str]) -> dict[str, LayerGradients]:
    import torch

    modules = dict(adapter.module.named_modules())
    recorded: dict[str, LayerGradients] = {}
    graph: dict[str, tuple[Any, Any]] = {}  # layer -> (its input's grad_fn, its output's grad_fn)

    inputs_seen: dict[str, Any] = {}

    def pre_hook_for(path: str) -> Any:
        def pre_hook(_module: Any, args: Any) -> Any:
            if path in inputs_seen or not args or not torch.is_tensor(args[0]) or not args[0].requires_grad:
                return None
            # A hook on the input tensor itself would get its whole gradient, from every use (a residual adds
            # another); a view of it, used by this layer only, gets this layer's share, as Keras' tap does.
            own = args[0].view_as(args[0])
            inputs_seen[path] = own
            return (own, *args[1:])

        return pre_hook

    def hook_for(path: str) -> Any:
        def hook(_module: Any, args: Any, output: Any) -> None:
            if path in recorded:
                return  # a module called again: its first call stands for it
            entry = recorded[path] = LayerGradients()
            out, inp = _first_tensor(output), inputs_seen.get(path)
            if torch.is_tensor(out):
                entry.output_requires_grad = bool(out.requires_grad)
                if out.requires_grad:
                    out.register_hook(lambda g: setattr(entry, "output", g.detach().float().cpu().numpy()))
            if torch.is_tensor(inp) and inp.requires_grad:
                inp.register_hook(lambda g: setattr(entry, "input", g.detach().float().cpu().numpy()))
            graph[path] = (getattr(inp, "grad_fn", None), getattr(out, "grad_fn", None))

        return hook

    handles = [modules[path].register_forward_pre_hook(pre_hook_for(path)) for path in layers if path in modules]
    handles += [modules[path].register_forward_hook(hook_for(path)) for path in layers if path in modules]
    try:
        adapter.run(inputs, device, cotangents, grad_weights=weights)
    finally:
        for handle in handles:
            handle.remove()
    previous_output: Any = None
    for path in layers:
        if path not in graph:
            continue
        input_node, output_node = graph[path]
        recorded[path].custom_functions = _custom_nodes(output_node, {input_node} if input_node else set())
        if input_node is not None:
            recorded[path].functions_before = _custom_nodes(input_node, {previous_output} if previous_output else set())
        previous_output = output_node
    return recorded


# -- Keras -------------------------------------------------------------------------------------------------------------

def _keras_record(adapter: Any, inputs: ModelInputs, device: str, cotangents: list[Any], layers: list[str],
                  weights: list[str]) -> dict[str, LayerGradients]:
    import tensorflow as tf

    from pytest_parity.modes.port import keras_layers

    if not hasattr(adapter.model, "_flatten_layers"):
        return {}
    wanted = set(layers)
    leaves = [layer for layer in keras_layers.leaf_layers(adapter.model) if layer.path in wanted]
    recorded: dict[str, LayerGradients] = {}

    def tap(entry: LayerGradients, slot: str) -> Any:
        @tf.custom_gradient
        def identity(x: Any) -> Any:
            def gradient(upstream: Any) -> Any:
                setattr(entry, slot, np.asarray(upstream.numpy()))
                return upstream

            return tf.identity(x), gradient

        return identity

    def wrap(layer: Any) -> Any:
        original = layer.call

        def recording_call(*args: Any, **kwargs: Any) -> Any:
            if layer.path in recorded or not args or not tf.is_tensor(args[0]) or not args[0].dtype.is_floating:
                return original(*args, **kwargs)
            entry = recorded[layer.path] = LayerGradients()
            activation = getattr(layer, "activation", None)
            if type(layer).__name__ in keras_layers.FUSED_ACTIVATION and activation is not None:
                # The gradient at the output before the built-in activation, where a torch port's Linear ends (as the
                # forward divergence records it).
                layer.activation = lambda x: activation(tap(entry, "output")(x))
                try:
                    return original(tap(entry, "input")(args[0]), *args[1:], **kwargs)
                finally:
                    layer.activation = activation
            output = original(tap(entry, "input")(args[0]), *args[1:], **kwargs)
            if tf.is_tensor(output) and output.dtype.is_floating:
                return tap(entry, "output")(output)
            return output

        return recording_call

    before = {id(layer): layer.__dict__.get("call") for layer in leaves}
    for layer in leaves:
        layer.call = wrap(layer)
    try:
        adapter.run(inputs, device, cotangents, grad_weights=weights)
    finally:
        for layer in leaves:
            del layer.call
            if before[id(layer)] is not None:
                layer.call = before[id(layer)]
    return recorded


def record(adapter: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any], plan: TransferPlan,
           side: str, weights: list[str]) -> dict[str, LayerGradients]:
    layers = _layers(plan, side)
    if adapter.framework == "torch":
        return _torch_record(adapter, inputs, device, cotangents, layers, weights)
    return _keras_record(adapter, inputs, device, cotangents, layers, weights)


# -- the walk ----------------------------------------------------------------------------------------------------------

def _agree(source: np.ndarray, target: np.ndarray, overall: float, grad_atol: float, grad_rtol: float) -> bool:
    own = float(np.max(np.abs(source))) if source.size else 0.0
    atol = tolerances.gradient_atol(own, grad_atol, overall)
    return compare.compare_arrays("gradient", target, source, atol=atol, rtol=grad_rtol).passed


def _no_gradient_cause(side: str, framework: str, entry: LayerGradients) -> str:
    if framework == "torch" and not entry.output_requires_grad:
        return (f"on the {side} its output does not require grad: it ran under torch.no_grad() (or "
                f"torch.inference_mode(), or on detached inputs and frozen weights), so nothing before or inside it "
                f"gets a gradient through it; run it with autograd on")
    if framework == "torch":
        return (f"on the {side} its output takes part in autograd but no gradient comes back to it: the path from it "
                f"to the outputs is cut after it (.detach(), .data, or a tensor rebuilt from numpy); keep that path in "
                f"the graph")
    return (f"on the {side} no gradient comes back to its output: tf.stop_gradient (or an op without a gradient) "
            f"after it cuts the path to the outputs")


def locate(plan: TransferPlan, source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs,
           target_inputs: ModelInputs, layouts: LayoutPair | None, source_cotangents: list[Any],
           target_cotangents: list[Any], device: str, grads: dict[str, Comparison], grad_atol: float,
           grad_rtol: float, source_weights: list[str], target_weights: list[str]) -> str | None:
    """One paragraph naming the layer pair where the backward pass first differs, walking from the outputs back, with
    the likely cause; None where the recorded gradients show no difference."""
    ours = record(source, inputs, device, source_cotangents, plan, "source", source_weights)
    theirs = record(target, target_inputs, device, target_cotangents, plan, "target", target_weights)
    frameworks = {"source": source.framework, "target": target.framework}
    overall = max([float(np.max(np.abs(g))) for entry in ours.values() for g in (entry.output, entry.input)
                   if g is not None and g.size] or [0.0])
    pairs: list[tuple[str, str, Any]] = []
    for pair in plan.pairs:
        names = (_base(pair.source.layer), _base(pair.target.layer))
        if names not in [(a, b) for a, b, _ in pairs]:
            pairs.append((*names, pair))
    later: tuple[str, str] | None = None  # the pair walked just before (nearer the outputs), whose gradients agreed
    for source_layer, target_layer, pair in reversed(pairs):
        mine, other = ours.get(source_layer), theirs.get(target_layer)
        if mine is None or other is None:
            continue
        label = f"{pair.source.label()} / {pair.target.label()}"
        if (mine.output is None) != (other.output is None):
            side, entry = ("source", mine) if mine.output is None else ("target", other)
            return (f"backward pass first differs at {label}: the gradient reaches its output on one side only; "
                    f"likely cause: {_no_gradient_cause(side, frameworks[side], entry)}")
        outputs = comparable(mine.output, None if other.output is None else in_source_layout(other.output, layouts))
        if outputs is not None and not _agree(*outputs, overall, grad_atol, grad_rtol):
            where = (f"{later[0]} / {later[1]}, the next paired layers, pass back the same gradient" if later else
                     "it is the last paired layer before the outputs")
            functions = [f"{side}: {', '.join(names)}" for side, names in
                         (("source", _functions_after(ours, source_layer)),
                          ("target", _functions_after(theirs, target_layer))) if names]
            return (f"backward pass first differs after {label}: the gradient reaching its output differs while "
                    f"{where}, so the difference is in what joins its output to them (an op between them, a residual "
                    f"connection: a .detach() or tf.stop_gradient there cuts one path"
                    + (f"; custom autograd Functions there: {'; '.join(functions)}" if functions else "") + ")")
        if outputs is not None and (mine.input is None) != (other.input is None):
            side = "source" if mine.input is None else "target"
            return (f"backward pass first differs at {label}: the gradient reaching its output agrees, but on the "
                    f"{side} its input gets no gradient from it; likely cause: the input was detached before it "
                    f"(.detach(), .data, tf.stop_gradient), so nothing before it trains through this path")
        inputs_pair = comparable(mine.input, None if other.input is None else
                                 in_source_layout(other.input, layouts, pair.flatten))
        if inputs_pair is not None and not _agree(*inputs_pair, overall, grad_atol, grad_rtol):
            customs = [f"{side}: {', '.join(entry.custom_functions)}" for side, entry in
                       (("source", mine), ("target", other)) if entry.custom_functions]
            return (f"backward pass first differs at {label}: the gradient reaching its output agrees, the gradient "
                    f"it passes back to its input differs; likely cause: its own backward differs"
                    + (f" (custom autograd Functions in it: {'; '.join(customs)})" if customs else
                       " (a custom torch.autograd.Function or tf.custom_gradient inside it)"))
        failing = [name for name in pair.source.variables() if name in grads and not grads[name].passed]
        if failing:
            return (f"backward pass first differs at {label}: the gradient reaching its output agrees and so does "
                    f"the one it passes back, but the gradient of its weight(s) {', '.join(map(repr, failing))} "
                    f"differs; likely cause: the weight is used detached or frozen inside the layer (weight.detach(), "
                    f"requires_grad=False, trainable=False, a custom Function that returns no weight gradient)")
        if mine.input is None and other.input is None and mine.output is None:
            continue
        later = (pair.source.label(), pair.target.label())
    return None


def _functions_after(recorded: dict[str, LayerGradients], layer: str) -> list[str]:
    """The custom Functions recorded between ``layer``'s output and the next recorded layer's input."""
    names = list(recorded)
    if layer not in names or names.index(layer) + 1 >= len(names):
        return []
    return recorded[names[names.index(layer) + 1]].functions_before
