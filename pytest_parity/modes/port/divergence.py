"""Where a failed port diverges: compare the recorded activations of each layer pair, name the first that differs.

Both models are recorded with the same weights (the target's carried from the source). Walking the pairs in order:
- a pair whose inputs agree but whose outputs differ is the culprit; its attributes tell why where they can
  (``epsilon differs: 0.001 vs 1e-05``, ``pads differ: [0, 0, 1, 1] vs [1, 1, 1, 1]``);
- a pair whose inputs already differ while the previous pair's outputs agreed points at what runs between two
  parametrised layers (activations, pooling, reshapes); the likely activation on each side is told by trying the
  common ones on the previous output.
Between an attention's value and output projections, the attention each side computes is found by recomputing the
common variants (head count, head split order, score scaling) from the agreeing q/k/v projections.
Keras layers are recorded before their built-in activation, so a Dense(activation="relu") output compares with the
Linear's output, and the relu shows up between the layers, where the PyTorch port applies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity.layouts import LayoutPair
from pytest_parity.modes.port.ops import LayerCall, ModelStructure, ParamOp
from pytest_parity.modes.port.transfer import FlattenPermutation, TransferPlan
from pytest_parity.verdict import compare

# Attributes whose difference is worth naming as a cause, in the order they are reported.
TELLING_ATTRIBUTES = ("heads", "head_dim", "epsilon", "pads", "strides", "dilations", "group", "padding_mode",
                      "output_padding")


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "no activation": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softmax": _softmax,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "leaky_relu(0.01)": lambda x: np.where(x > 0, x, 0.01 * x),
    "leaky_relu(0.2)": lambda x: np.where(x > 0, x, 0.2 * x),
    # The two differ by up to 5e-4 (at |x| near 2), well outside the tolerance these are tried at.
    "exact gelu (erf; nn.GELU(), keras gelu(approximate=False))": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "tanh-approximate gelu (nn.GELU(approximate='tanh'), keras gelu(approximate=True))": _gelu_tanh,
}


def _call_for(structure: ModelStructure, op: ParamOp) -> LayerCall | None:
    # "attn[query]" has a call of its own (ModelStructure.part_calls); "sequential/separable[depthwise]" and
    # "lstm[layer 1]" belong to the call of "sequential/separable" / "lstm".
    return structure.call_of(op.layer) or structure.call_of(op.layer.split("[", 1)[0])


def _in_source_layout(array: np.ndarray, layouts: LayoutPair | None,
                      flatten: FlattenPermutation | None = None) -> np.ndarray:
    if flatten is not None and array.ndim == 2:
        return flatten.features_to_source(array)
    return layouts.target_to_source(array) if layouts is not None else array


def _comparable(source: np.ndarray | None, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    if source is None or target is None:
        return None
    if source.shape == target.shape:
        return source, target
    # A Keras recurrent layer without return_sequences returns the last step; nn.LSTM always returns every step.
    if source.ndim == 2 and target.ndim == 3 and target.shape[0] == source.shape[0] and \
            target.shape[2] == source.shape[1]:
        return source, target[:, -1]
    if target.ndim == 2 and source.ndim == 3 and source.shape[0] == target.shape[0] and \
            source.shape[2] == target.shape[1]:
        return source[:, -1], target
    # An EinsumDense's [batch, seq, heads, head_dim] is a Linear's [batch, seq, heads * head_dim] (Gemm order); a
    # table looked up with ids [seq] or [1, seq] gives [seq, E] or [1, seq, E].
    for common in range(min(source.ndim, target.ndim), 1, -1):
        if source.shape[:common] == target.shape[:common] and source.size == target.size:
            shape = (*source.shape[:common], -1)
            return source.reshape(shape), target.reshape(shape)
    # keras-hub's PositionEmbedding gives its rows broadcast to [batch, seq, E]; an nn.Embedding on arange gives
    # [1, seq, E].
    for small, large, swap in ((target, source, False), (source, target, True)):
        if small.ndim == large.ndim and small.shape[0] == 1 and small.shape[1:] == large.shape[1:]:
            small = np.broadcast_to(small, large.shape)
            return (small, large) if swap else (large, small)
    squeezed = np.squeeze(source), np.squeeze(target)
    if squeezed[0].shape == squeezed[1].shape:
        return squeezed
    return None


def _figures(comparison: compare.Comparison) -> str:
    return (f"max abs {comparison.max_abs:.3g}, {comparison.mismatched} / {comparison.total} elements outside "
            f"atol {comparison.atol:g} + rtol {comparison.rtol:g}")


def _attribute_causes(source: ParamOp, target: ParamOp) -> list[str]:
    causes = []
    for attribute in TELLING_ATTRIBUTES:
        if attribute in source.attributes and attribute in target.attributes:
            ours, theirs = source.attributes[attribute], target.attributes[attribute]
            if ours is not None and theirs is not None and ours != theirs:
                causes.append(f"{attribute} differs: {ours!r} vs {theirs!r}")
    if "pads" in source.attributes and "pads" in target.attributes and any(c.startswith("pads") for c in causes):
        causes.append("(pads are ONNX's [begin..., end...]; TF's padding='same' with stride > 1 pads more at the end, "
                      "which a symmetric torch padding cannot express: pad explicitly with F.pad(x, (0, 1, 0, 1)) and "
                      "padding=0)")
    return causes


def _last_step_causes(source: ParamOp, target: ParamOp, outputs: tuple[np.ndarray, np.ndarray], atol: float,
                      rtol: float) -> list[str]:
    """Keras Bidirectional without return_sequences vs torch's output[:, -1]: only the backward half differs."""
    if source.attributes.get("direction") != "bidirectional" or outputs[0].ndim != 2:
        return []
    if source.attributes.get("return_sequences", True) and target.attributes.get("return_sequences", True):
        return []
    half = outputs[0].shape[1] // 2
    forward = compare.compare_arrays("forward", outputs[1][:, :half], outputs[0][:, :half], atol=atol, rtol=rtol)
    backward = compare.compare_arrays("backward", outputs[1][:, half:], outputs[0][:, half:], atol=atol, rtol=rtol)
    if not forward.passed or backward.passed:
        return []
    return ["the forward half agrees and the backward half differs: a Keras Bidirectional layer without "
            "return_sequences returns the backward direction's state after reading the whole sequence, while "
            "output[:, -1] of a bidirectional nn.LSTM/GRU holds it after one step; use "
            "torch.cat([h_n[-2], h_n[-1]], dim=1) in the PyTorch model"]


def _activation_between(before: np.ndarray, after: np.ndarray) -> str | None:
    if before.shape != after.shape:
        return None
    for name, function in ACTIVATIONS.items():
        with np.errstate(over="ignore"):
            if np.allclose(function(before.astype(np.float64)), after, atol=1e-5, rtol=1e-4):
                return name
    return None


def _calls_between(structure: ModelStructure, first: LayerCall | None, second: LayerCall | None) -> list[str]:
    calls = structure.calls
    start = calls.index(first) + 1 if first in calls else 0
    stop = calls.index(second) if second in calls else len(calls)
    return [call.kind for call in calls[start:stop]]


def locate(plan: TransferPlan, source: ModelStructure, target: ModelStructure, layouts: LayoutPair | None,
           atol: float, rtol: float, layers: list[dict[str, Any]] | None = None) -> str | None:
    """One paragraph naming the first layer pair that diverges, with its figures and the likely cause.

    ``layers``, when given, receives one plain-dict row per layer pair compared, up to and including the one that
    diverges (the per-layer table of the HTML report)."""
    rows = layers if layers is not None else []
    projections: dict[str, np.ndarray] = {}  # the agreeing query/key/value projections of the attention being walked
    previous: tuple[ParamOp, ParamOp, LayerCall | None, LayerCall | None, np.ndarray, np.ndarray] | None = None
    for pair in plan.pairs:
        source_call, target_call = _call_for(source, pair.source), _call_for(target, pair.target)
        if source_call is None or target_call is None:
            continue
        label = f"{pair.source.label()} / {pair.target.label()}"
        inputs = _comparable(source_call.input, None if target_call.input is None else
                             _in_source_layout(target_call.input, layouts, pair.flatten))
        row: dict[str, Any] = {"source": pair.source.label(), "target": pair.target.label(), "inputs_max_abs": None,
                               "outputs_max_abs": None, "agrees": True}
        rows.append(row)
        unrecorded = source_call.input is None or target_call.input is None
        if inputs is not None and np.issubdtype(inputs[0].dtype, np.floating):
            agreement = compare.compare_arrays("input", inputs[1], inputs[0], atol=atol, rtol=rtol)
            row["inputs_max_abs"] = _plain(agreement.max_abs)
            if not agreement.passed:
                row["agrees"] = False
                text = _between(previous, pair.source, pair.target, source, target, source_call, target_call,
                                inputs, agreement)
                if _role(pair) == "output":
                    text += _causes_text(_attention_causes(projections, inputs))
                return text
        outputs = _comparable(source_call.output, None if target_call.output is None else
                              _in_source_layout(target_call.output, layouts))
        if outputs is None:
            if source_call.output is not None and target_call.output is not None:
                row["agrees"] = False
                return (f"first divergence at {label}: output shapes differ, {list(source_call.output.shape)} vs "
                        f"{list(target_call.output.shape)} (target shown in its own layout)"
                        + _causes_text(_attribute_causes(pair.source, pair.target)))
            continue
        agreement = compare.compare_arrays("output", outputs[1], outputs[0], atol=atol, rtol=rtol)
        row["outputs_max_abs"] = _plain(agreement.max_abs)
        if not agreement.passed:
            row["agrees"] = False
            causes = _attribute_causes(pair.source, pair.target) + _last_step_causes(pair.source, pair.target,
                                                                                      outputs, atol, rtol)
            if unrecorded and previous is not None:
                return (f"first divergence at {label}: its outputs differ ({_figures(agreement)}), those of "
                        f"{previous[0].label()} / {previous[1].label()} before it agree (its own input is computed "
                        f"inside a module and not recorded, so what differs is it or what runs just before it)"
                        + _causes_text(causes))
            return (f"first divergence at {label}: its inputs agree but its outputs differ ({_figures(agreement)})"
                    + _causes_text(causes))
        previous = (pair.source, pair.target, source_call, target_call, outputs[0], outputs[1])
        role = _role(pair)
        if role in ATTENTION_INPUTS:
            projections[str(role)] = outputs[0]
    if previous is None:
        return None
    source_after = _calls_between(source, previous[2], None)
    target_after = _calls_between(target, previous[3], None)
    return (f"every parametrised layer agrees up to and including {previous[0].label()} / {previous[1].label()}; the "
            f"difference arises after it: source runs {source_after or 'nothing more'}, target runs "
            f"{target_after or 'nothing more'} (an activation such as the final softmax, or what the model does "
            f"outside its layers, differs)")


ATTENTION_INPUTS = ("query", "key", "value")


def _role(pair: Any) -> str | None:
    """What a Gemm does in an attention ("query", ..., "output"), as whichever side knows it says."""
    return pair.source.attributes.get("attention") or pair.target.attributes.get("attention")


def _attention(query: np.ndarray, key: np.ndarray, value: np.ndarray, heads: int, heads_first: bool,
               scale: float) -> np.ndarray:
    """Scaled dot-product attention without mask on [batch, seq, features] projections, the features split into
    ``heads`` as [heads, head_dim] (``heads_first``) or [head_dim, heads], merged back the same way."""
    def split(x: np.ndarray) -> np.ndarray:
        batch, length, size = x.shape
        if heads_first:
            return x.reshape(batch, length, heads, size // heads).transpose(0, 2, 1, 3)
        return x.reshape(batch, length, size // heads, heads).transpose(0, 3, 1, 2)

    scores = split(query) @ split(key).transpose(0, 1, 3, 2) * scale
    weights = _softmax(scores)
    merged = weights @ split(value)
    batch, _, length, head_dim = merged.shape
    if heads_first:
        return merged.transpose(0, 2, 1, 3).reshape(batch, length, heads * head_dim)
    return merged.transpose(0, 2, 3, 1).reshape(batch, length, heads * head_dim)


def _attention_variants(size: int, key_size: int) -> list[tuple[str, int, bool, float]]:
    variants = []
    for heads in (h for h in range(1, size + 1) if size % h == 0 and key_size % h == 0):
        head_dim = key_size // heads
        for heads_first in (True, False) if 1 < heads < size else (True,):
            layout = "[heads, head_dim]" if heads_first else "[head_dim, heads] (heads swapped in the reshape)"
            for scaling, scale in ((f"scaled by 1/sqrt(head_dim) = 1/sqrt({head_dim})", 1 / math.sqrt(head_dim)),
                                   ("not scaled (the 1/sqrt(head_dim) scaling missing)", 1.0),
                                   (f"scaled by 1/sqrt(hidden) = 1/sqrt({key_size})", 1 / math.sqrt(key_size)),
                                   (f"scaled by 1/head_dim = 1/{head_dim}", 1 / head_dim)):
                if heads == 1 and scaling.startswith("scaled by 1/sqrt(hidden)"):
                    continue  # the same as 1/sqrt(head_dim)
                variants.append((f"{heads} head(s), features split as {layout}, scores {scaling}", heads,
                                 heads_first, scale))
    return variants


def _attention_causes(projections: dict[str, np.ndarray],
                      inputs: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """Which attention each side computes between its (agreeing) q/k/v projections and its output projection, found
    by recomputing the common variants (head count and split order, scaling) and keeping the one that reproduces each
    side's recorded input of the output projection. Said only when both sides are reproduced: a mask or an attention
    not among the variants gives no cause rather than a wrong one."""
    if set(projections) != set(ATTENTION_INPUTS) or inputs[0].ndim != 3:
        return []
    query, key, value = (projections[role].reshape(*projections[role].shape[:2], -1).astype(np.float64)
                         for role in ATTENTION_INPUTS)
    if query.shape[-1] != key.shape[-1] or value.shape[-1] != inputs[0].shape[-1] or \
            key.shape[:2] != value.shape[:2]:
        return []
    found: list[str | None] = []
    for side in inputs:
        scale = max(float(np.max(np.abs(side))), 1e-30)
        found.append(next((text for text, count, heads_first, factor in
                           _attention_variants(value.shape[-1], query.shape[-1])
                           if np.allclose(_attention(query, key, value, count, heads_first, factor), side,
                                          rtol=1e-3, atol=1e-4 * scale)), None))
    if found[0] is None or found[1] is None or found[0] == found[1]:
        return []
    return [f"the attention between the value and the output projections differs; recomputed from the agreeing "
            f"query/key/value projections, the source's is {found[0]}, the target's {found[1]}"]


def padding_rows(plan: TransferPlan, grads: dict[str, compare.Comparison], source_grads: dict[str, np.ndarray],
                 carried: dict[str, np.ndarray | None], atol: float,
                 rtol: float) -> tuple[str | None, tuple[str, ...]]:
    """Embedding gradients that differ only in an nn.Embedding's padding_idx row, which PyTorch never trains and Keras
    does: (the diagnosis, the gradients it explains), or (None, ()) where that is not what the data shows."""
    texts, explained = [], []
    for pair in plan.pairs:
        paddings = {pair.source.attributes.get("padding_idx"), pair.target.attributes.get("padding_idx")} - {None}
        if pair.source.op != "Gather" or len(paddings) != 1 or \
                pair.source.attributes.get("padding_idx") == pair.target.attributes.get("padding_idx"):
            continue
        (name,) = pair.source.bindings["data"].variables
        ours, theirs = source_grads.get(name), carried.get(name)
        if name not in grads or grads[name].passed or ours is None or theirs is None:
            continue
        differing = np.flatnonzero(np.any(np.abs(theirs - ours) > atol + rtol * np.abs(ours), axis=1))
        padding = next(int(value) for value in paddings if value is not None)
        if list(differing) != [padding]:
            continue
        torch_side = pair.source if "padding_idx" in pair.source.attributes else pair.target
        texts.append(f"the gradient of {name!r} differs only in row {padding}: {torch_side.label()} is an "
                     f"nn.Embedding with padding_idx={padding}, whose row {padding} gets no gradient (it is never "
                     f"trained), while the Keras Embedding trains every row; the outputs agree, but training "
                     f"would move that row on one side only. Drop padding_idx, or keep that row from training on the "
                     f"Keras side, for the two to train alike")
        explained.append(name)
    return ("; ".join(texts) or None), tuple(explained)


def _plain(figure: float) -> float | str:
    # The rows go into the JSON report as they are: no NaN/Infinity there (see result._json_float).
    return figure if math.isfinite(figure) else str(figure)


def _between_text(calls: list[str]) -> str:
    # Functions (F.max_pool2d, view, reshape, permute, flatten, tf ops) are not layers and leave no record.
    return str(calls) if calls else "no recorded layer (only functions or tensor methods, if anything)"


def _causes_text(causes: list[str]) -> str:
    return "; likely cause: " + " ".join(causes) if causes else ""


def _between(previous: tuple[ParamOp, ParamOp, LayerCall | None, LayerCall | None, np.ndarray, np.ndarray] | None,
             source_op: ParamOp, target_op: ParamOp, source: ModelStructure, target: ModelStructure,
             source_call: LayerCall, target_call: LayerCall, inputs: tuple[np.ndarray, np.ndarray],
             agreement: compare.Comparison) -> str:
    label = f"{source_op.label()} / {target_op.label()}"
    if previous is None:
        return (f"the first parametrised layers {label} already receive different inputs ({_figures(agreement)}): "
                f"check the inputs' layout (layouts=...) and what each model does before its first layer")
    source_between = _calls_between(source, previous[2], source_call)
    target_between = _calls_between(target, previous[3], target_call)
    text = (f"first divergence between {previous[0].label()} / {previous[1].label()} and {label}: the outputs of the "
            f"former agree, the inputs of the latter differ ({_figures(agreement)}); in between the source runs "
            f"{_between_text(source_between)}"
            + (f" after its built-in {previous[0].attributes['activation']!r} activation"
               if previous[0].attributes.get("activation") not in (None, "linear") else "")
            + f", the target runs {_between_text(target_between)}")
    if inputs[0].ndim == 2 and any(call is not None and call.output is not None and call.output.ndim >= 3
                                   for call in (previous[2], previous[3])):
        text += ("; a feature map is flattened in between: check that flatten (the order of view/reshape/permute) "
                 "first")
    source_activation = _activation_between(previous[4], inputs[0])
    target_activation = _activation_between(previous[5], inputs[1])
    if source_activation and target_activation and source_activation != target_activation:
        text += f"; likely cause: the source applies {source_activation}, the target {target_activation}"
    return text


# The backward pass is compared on the same shapes and layouts (gradient_divergence).
comparable = _comparable
in_source_layout = _in_source_layout
