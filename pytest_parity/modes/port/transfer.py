"""Pair the two models' parametrised ops, carry the source's weights into the target, and carry gradients back.

Pairing is by order of use: the i-th parametrised op the source calls corresponds to the i-th of the target, except
within a run of consecutive embedding lookups, paired by table shape (embeddings added together are called in any
order). A pair must agree in ONNX op type, in which tensors it has (a bias on one side only is a port defect, not a
detail) and in their shapes, and in the attributes that decide what a recurrent op or an attention computes. Where
they part, the error shows both models side by side and marks the row.

Flatten after a convolution: Keras flattens an NHWC feature map in (H, W, C) order, PyTorch an NCHW one in (C, H, W)
order, unless the port permutes first on purpose, so the Dense/Linear that follows may see its inputs permuted. With the
layers before it carried across, the order is read from the recorded activations (settle_flatten_orders), that Gemm's
input axis is permuted accordingly, and the result's notes say so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pytest_parity.errors import WeightTransferError
from pytest_parity.modes.port import reachability, recurrent_cells
from pytest_parity.modes.port.ops import (
    Binding,
    ModelStructure,
    ParamOp,
    Values,
    merge_into,
    shape_text,
    split_rows,
)

# Why a structural attribute must agree, in words a user porting a model recognises.
ATTRIBUTE_HINTS = {
    "linear_before_reset": "Keras GRU(reset_after=False) applies the reset gate before the recurrent matmul "
                           "(ONNX linear_before_reset=0); nn.GRU always applies it after (reset_after=True, "
                           "linear_before_reset=1) and has no option for the other. Build the Keras GRU with "
                           "reset_after=True (the Keras default) or write a custom GRU cell in PyTorch.",
    "direction": "Keras go_backwards=True runs the sequence backwards; nn.LSTM/GRU/RNN have no backwards-only "
                 "option (only bidirectional=True). Reverse the input with torch.flip in the PyTorch model, or drop "
                 "go_backwards.",
    "activations": "the recurrent activations differ; nn.LSTM and nn.GRU are fixed to sigmoid/tanh and nn.RNN offers "
                   "tanh or relu.",
    "hidden_size": "the number of units differs.",
    "heads": "the number of attention heads differs; the projections' weights have the same shapes, but split into "
             "heads of another size they compute another attention. Build both with the same num_heads.",
}


@dataclass(frozen=True)
class FlattenPermutation:
    """A Gemm whose input is a flattened feature map, flattened in a different axis order on each side."""

    source_shape: tuple[int, ...]   # the feature map per example, source order, e.g. (5, 5, 64)
    permutation: tuple[int, ...]    # target feature map = source feature map transposed by this

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.source_shape[axis] for axis in self.permutation)

    def to_target(self, weight: np.ndarray) -> np.ndarray:
        """Gemm W [out, in] with ``in`` in source flatten order -> in target flatten order."""
        out = weight.shape[0]
        moved = weight.reshape(out, *self.source_shape).transpose(0, *(axis + 1 for axis in self.permutation))
        return moved.reshape(out, -1)

    def to_source(self, weight: np.ndarray) -> np.ndarray:
        out = weight.shape[0]
        inverse = np.argsort(self.permutation)
        moved = weight.reshape(out, *self.target_shape).transpose(0, *(int(axis) + 1 for axis in inverse))
        return moved.reshape(out, -1)

    def features_to_source(self, features: np.ndarray) -> np.ndarray:
        """A flattened activation [N, in] in target order -> source order (for per-layer comparisons)."""
        inverse = np.argsort(self.permutation)
        moved = features.reshape(features.shape[0], *self.target_shape).transpose(0, *(int(a) + 1 for a in inverse))
        return moved.reshape(features.shape[0], -1)


@dataclass
class OpPair:
    source: ParamOp
    target: ParamOp
    flatten: FlattenPermutation | None = None


@dataclass
class TransferPlan:
    pairs: list[OpPair]
    notes: list[str] = field(default_factory=list)
    # Source variables of layers that were never called: nothing to carry, no gradient to compare.
    unused: dict[str, str] = field(default_factory=dict)

    def transfer(self, source_values: Values) -> Values:
        """Source variable values -> the target variable values that compute the same function."""
        target_values: Values = {}
        for pair in self.pairs:
            transfer_pair(pair, source_values, pair.flatten, target_values)
        return target_values

    def to_source(self, target_values: Values) -> Values:
        """Target variable values -> the source variable values they stand for: ``transfer`` run backwards. Where the
        target splits what the source keeps in one tensor (torch's bias_ih and bias_hh for Keras' one LSTM bias) the
        source's tensor is their sum, so ``transfer(to_source(v))`` is the target values in the split the transfer
        makes: two values of the target that compute the same function give the same."""
        source_values: Values = {}
        for pair in self.pairs:
            tensors = pair.target.export(target_values)
            if pair.flatten is not None and "W" in tensors:
                tensors["W"] = pair.flatten.to_source(tensors["W"])
            for key, binding in pair.source.bindings.items():
                merge_into(source_values, binding, binding.load(tensors[key]))
        return source_values

    def gradients_to_source(self, target_grads: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        """Gradients w.r.t. the target's variables -> w.r.t. the source's variables (None where one is missing)."""
        found: Values = {}
        missing: set[str] = set()
        for pair in self.pairs:
            for key, target_binding in pair.target.bindings.items():
                source_binding = pair.source.bindings[key]
                grads = {name: target_grads.get(name) for name in target_binding.variables}
                if any(grad is None for grad in grads.values()):
                    missing.update(source_binding.variables)
                    continue
                onnx_grad = target_binding.load_gradient(grads)  # type: ignore[arg-type]
                if key == "W" and pair.flatten is not None:
                    onnx_grad = pair.flatten.to_source(onnx_grad)
                merge_into(found, source_binding, source_binding.export_gradient(onnx_grad))
        # A variable split over several ONNX tensors (a fused in_proj) is missing if any of its blocks is.
        source_grads: dict[str, np.ndarray | None] = {name: grad for name, grad in found.items() if name not in missing}
        source_grads.update((name, None) for name in missing)
        return source_grads

    def target_names(self) -> dict[str, str]:
        """Source variable -> the target variable(s) its values went to."""
        names: dict[str, str] = {}
        for pair in self.pairs:
            for key, source_binding in pair.source.bindings.items():
                target_binding = pair.target.bindings[key]
                for source_part, target_part in matching_parts(source_binding, target_binding):
                    target_text = " + ".join(_block_text(name, target_part) for name in target_part.variables)
                    for name in source_part.variables:
                        if source_part.block is not None and name in names:
                            target_text = f"{names[name]} + {target_text}"  # the blocks of a fused variable
                        names[name] = target_text
        return names


def transfer_pair(pair: OpPair, source_values: Values, flatten: FlattenPermutation | None,
                  into: Values | None = None) -> Values:
    """One pair's share of ``TransferPlan.transfer``, with the flatten order given (the pair's own, or another to
    see what a converter that used it would have written)."""
    into = {} if into is None else into
    tensors = pair.source.export(source_values)
    if flatten is not None:
        tensors["W"] = flatten.to_target(tensors["W"])
    for key, binding in pair.target.bindings.items():
        merge_into(into, binding, binding.load(tensors[key]))
    return into


def _block_text(name: str, binding: Binding) -> str:
    return f"{name}[{binding.block.describe()}]" if binding.block is not None else name


def matching_parts(source: Binding, target: Binding) -> list[tuple[Binding, Binding]]:
    if source.parts and target.parts and len(source.parts) == len(target.parts):
        return list(zip(source.parts, target.parts))
    return [(source, target)]


def plan_transfer(source: ModelStructure, target: ModelStructure, source_values: Values, target_values: Values,
                  source_label: str, target_label: str,
                  unreached: Callable[[], tuple[dict[str, str], dict[str, str]]] | None = None) -> TransferPlan:
    """The pairs of ops, by order of use (see the module's note). Where the layers do not pair, ``unreached`` (when
    given) says which layers of each side (source, target) do not reach the compared outputs (port/reachability): they
    are left out, named as unused, and the rest paired again; the refusal stands, naming what was left out, where
    that does not make them pair."""
    try:
        return _paired(source, target, source_values, target_values, source_label, target_label)
    except WeightTransferError as refusal:
        if unreached is None:
            raise
        source_unreached, target_unreached = unreached()
        if not source_unreached and not target_unreached:
            raise refusal from None
        try:
            plan = _paired(reachability.pruned(source, source_unreached), reachability.pruned(target, target_unreached),
                           source_values, target_values, source_label, target_label)
        except WeightTransferError as still:
            raise WeightTransferError(str(still) + reachability.pruned_text(source_unreached, target_unreached)) \
                from None
    for side, layers, values in (("source", source_unreached, source_values), ("target", target_unreached,
                                                                                target_values)):
        for layer, why in layers.items():
            names = _variables_of_layer(layer, values)
            plan.notes.append(
                f"{side} layer {layer!r} {why}: left out of the pairing; its weights ({', '.join(names) or 'none'}) "
                + ("were neither carried nor compared" if side == "target" else "are reported unused"))
    return plan


def _paired(source: ModelStructure, target: ModelStructure, source_values: Values, target_values: Values,
            source_label: str, target_label: str) -> TransferPlan:
    source_shapes = [_tensor_shapes(op, source_values) for op in source.ops]
    target_shapes = [_tensor_shapes(op, target_values) for op in target.ops]
    order, notes = _embeddings_paired_by_shape(source.ops, target.ops, source_shapes, target_shapes)
    target = ModelStructure([target.ops[i] for i in order], target.calls, target.unused, target.part_calls)
    target_shapes = [target_shapes[i] for i in order]
    source_ops, target_ops = list(source.ops), list(target.ops)
    notes += recurrent_cells.fuse_hand_written_cells(source_ops, target_ops, source_shapes, target_shapes)
    notes += _fused_projections_split(source_ops, target_ops, source_shapes, target_shapes)
    source = ModelStructure(source_ops, source.calls, source.unused, source.part_calls)
    target = ModelStructure(target_ops, target.calls, target.unused, target.part_calls)
    for index in range(max(len(source.ops), len(target.ops))):
        problem = None
        if index >= len(source.ops) or index >= len(target.ops):
            extra = "target" if index >= len(source.ops) else "source"
            problem = (f"the {extra} has more parametrised layers than the other; the models must use the same "
                       f"parametrised layers in the same order")
        else:
            problem = _pair_problem(source.ops[index], target.ops[index], source_shapes[index],
                                    target_shapes[index])
        if problem:
            raise WeightTransferError(_mismatch_table(source.ops, target.ops, source_shapes, target_shapes, index,
                                                      problem, source_label, target_label))
    plan = TransferPlan([OpPair(s, t) for s, t in zip(source.ops, target.ops)], notes)
    plan.unused = {name: f"layer {layer!r} {why}" for layer, why in source.unused.items()
                   for name in _variables_of_layer(layer, source_values)}
    if not plan.pairs:
        raise WeightTransferError(f"{source_label} has no parametrised layers port mode knows, so there are no weights "
                                  f"to carry into {target_label}; check it in convert mode instead")
    return plan


FUSED_COUNTS = (3, 2)  # q, k, v in one weight (GPT-2's c_attn, timm's qkv); k, v in one (cross-attention's kv)


def _fused_projections_split(source_ops: list[ParamOp], target_ops: list[ParamOp],
                             source_shapes: list[dict[str, tuple[int, ...]]],
                             target_shapes: list[dict[str, tuple[int, ...]]]) -> list[str]:
    """Where one side computes several projections of the same input in one Gemm (W [k*E, in]) and the other side
    has k consecutive Gemms of W [E, in] at that place, the fused one is split into k row blocks, in order, to pair
    with them (the lists are changed in place); a note for each. The blocks are taken in order (q, k, v): a fused
    weight that interleaves them per head would fail the check at that layer."""
    notes: list[str] = []
    index = 0
    while index < min(len(source_ops), len(target_ops)):
        for fused, fused_shapes, other, other_shapes in ((source_ops, source_shapes, target_ops, target_shapes),
                                                         (target_ops, target_shapes, source_ops, source_shapes)):
            count = _fused_count(fused[index], fused_shapes[index], other, other_shapes, index)
            parts = None if count is None else split_rows(fused[index], count, fused_shapes[index])
            if parts is None or count is None:
                continue
            notes.append(f"fused projection {fused[index].label()} split into {count} row blocks, in order, to pair "
                         f"with {', '.join(op.label() for op in other[index:index + count])}")
            shapes = fused_shapes[index]
            fused[index:index + 1] = parts
            fused_shapes[index:index + 1] = [{key: (shape[0] // count, *shape[1:]) for key, shape in shapes.items()}
                                             for _ in parts]
            break
        index += 1
    return notes


def _fused_count(op: ParamOp, shapes: dict[str, tuple[int, ...]], others: list[ParamOp],
                 other_shapes: list[dict[str, tuple[int, ...]]], index: int) -> int | None:
    if op.op != "Gemm" or others[index].op != "Gemm" or shapes == other_shapes[index]:
        return None
    for count in FUSED_COUNTS:
        run = other_shapes[index:index + count]
        if len(run) < count or any(o.op != "Gemm" for o in others[index:index + count]) or \
                any(shape != run[0] for shape in run) or set(run[0]) != set(shapes):
            continue
        if all(shapes[key][0] == count * run[0][key][0] and shapes[key][1:] == run[0][key][1:] for key in shapes):
            return count
    return None


def _embeddings_paired_by_shape(source_ops: list[ParamOp], target_ops: list[ParamOp],
                                source_shapes: list[dict[str, tuple[int, ...]]],
                                target_shapes: list[dict[str, tuple[int, ...]]]) -> tuple[list[int], list[str]]:
    """The target's ops in the order that pairs them with the source's, and a note for each run reordered.

    Embeddings added together (token, position, segment) commute, so two implementations call them in any order (HF
    BERT: word, token_type, position; keras-hub: token, position, segment). Within a run of consecutive Gather ops at
    the same rows on both sides, each source table pairs with the first unpaired target table of its shape; the run is
    left as it is where the shapes do not pair up (the mismatch table then shows it). Equal shapes keep their order:
    shapes are all there is to tell them apart by, so a port that swaps two tables of one shape is not corrected."""
    order = list(range(len(target_ops)))
    notes: list[str] = []
    start = 0
    while start < min(len(source_ops), len(target_ops)):
        if source_ops[start].op != "Gather" or target_ops[start].op != "Gather":
            start += 1
            continue
        stop = start
        while stop < min(len(source_ops), len(target_ops)) and \
                source_ops[stop].op == "Gather" and target_ops[stop].op == "Gather":
            stop += 1
        run_ends_together = all(len(ops) == stop or ops[stop].op != "Gather" for ops in (source_ops, target_ops))
        free = list(range(start, stop))
        chosen: list[int] = []
        for index in range(start, stop):
            match = next((t for t in free if target_shapes[t] == source_shapes[index]), None)
            if match is None:
                break
            free.remove(match)
            chosen.append(match)
        if run_ends_together and len(chosen) == stop - start and chosen != list(range(start, stop)):
            order[start:stop] = chosen
            notes.append(
                "embeddings paired by table shape, not call order: "
                + ", ".join(f"{source_ops[s].label()} -> {target_ops[t].label()}"
                            for s, t in zip(range(start, stop), chosen)))
        start = stop
    return order, notes


def _variables_of_layer(layer: str, values: Values) -> list[str]:
    return [name for name in values if name.startswith(layer + "/") or name.startswith(layer + ".")]


def _tensor_shapes(op: ParamOp, values: Values) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in op.export(values).items()}


def _pair_problem(source: ParamOp, target: ParamOp, source_shapes: dict[str, tuple[int, ...]],
                  target_shapes: dict[str, tuple[int, ...]]) -> str | None:
    if source.op != target.op:
        cells = {source.op, target.op} & set(recurrent_cells.GATES)
        return (f"different operations: {source.op} ({source.kind}) vs {target.op} ({target.kind})"
                + (f"; {recurrent_cells.SUPPORTED}" if cells and {source.op, target.op} & {"Gemm"} else ""))
    for key in sorted(set(source_shapes) | set(target_shapes)):
        if key not in target_shapes:
            return (f"{source.layer!r} has {_tensor_word(key)} {key}{shape_text(source_shapes[key])} "
                    f"({', '.join(source.bindings[key].variables)}) but {target.layer!r} has none: "
                    f"{_missing_hint(key, 'target')}")
        if key not in source_shapes:
            return (f"{target.layer!r} has {_tensor_word(key)} {key}{shape_text(target_shapes[key])} "
                    f"({', '.join(target.bindings[key].variables)}) but {source.layer!r} has none: "
                    f"{_missing_hint(key, 'source')}")
        if source_shapes[key] != target_shapes[key]:
            return (f"{_tensor_word(key)} {key} has shape {shape_text(source_shapes[key])} in {source.layer!r} "
                    f"but {shape_text(target_shapes[key])} in {target.layer!r} (both in ONNX layout)")
    for attribute in dict.fromkeys(source.structural + target.structural):
        if attribute in source.attributes and attribute in target.attributes and \
                source.attributes[attribute] != target.attributes[attribute]:
            return (f"{attribute} is {source.attributes[attribute]!r} in {source.label()} but "
                    f"{target.attributes[attribute]!r} in {target.label()}: {ATTRIBUTE_HINTS.get(attribute, '')}")
    return None


def _tensor_word(key: str) -> str:
    return {"B": "a bias", "W": "a weight", "R": "a recurrent weight", "scale": "a scale", "mean": "a running mean",
            "var": "a running variance", "data": "a table"}.get(key, "a tensor")


def _missing_hint(key: str, side: str) -> str:
    if key == "B":
        return (f"a missing bias in the {side} (e.g. bias=False / use_bias=False) changes every output by the "
                f"bias; give both sides a bias or neither")
    if key in ("scale", "B"):
        return "the normalisation's affine parameters (scale/center, elementwise_affine) must match"
    return "the two layers are not configured alike"


def _mismatch_table(source_ops: list[ParamOp], target_ops: list[ParamOp],
                    source_shapes: list[dict[str, tuple[int, ...]]], target_shapes: list[dict[str, tuple[int, ...]]],
                    where: int, problem: str, source_label: str, target_label: str) -> str:
    def cell(ops: list[ParamOp], shapes: list[dict[str, tuple[int, ...]]], index: int) -> str:
        if index >= len(ops):
            return "-"
        tensors = " ".join(f"{key}{shape_text(shape)}" for key, shape in shapes[index].items())
        return f"{ops[index].label()} {ops[index].op} {tensors}"

    rows = max(len(source_ops), len(target_ops))
    left = [cell(source_ops, source_shapes, i) for i in range(rows)]
    right = [cell(target_ops, target_shapes, i) for i in range(rows)]
    width = max([len(text) for text in left] + [len("source: " + source_label)])
    lines = [
        f"port mode cannot carry the weights of {source_label} into {target_label}: the parametrised layers do not "
        f"correspond at row {where + 1}.",
        f"  {where + 1}: {problem}",
        "Parametrised layers in order of use, weights in ONNX layout:",
        f"       {'source: ' + source_label:<{width}}   target: {target_label}",
    ]
    for index in range(rows):
        marker = "->" if index == where else "  "
        relation = "!=" if index == where else ("==" if index < where else "  ")
        lines.append(f"  {marker}{index + 1:>3} {left[index]:<{width}} {relation} {right[index]}")
    return "\n".join(lines)


def pre_flatten_shape(structure: ModelStructure, layer: str) -> tuple[int, ...] | None:
    """The per-example shape of the feature map that was flattened into ``layer``'s input, if it was."""
    position = next((i for i, call in enumerate(structure.calls) if call.layer == layer), None)
    if position is None:
        return None
    call = structure.calls[position]
    if call.input is None or call.input.ndim != 2:
        return None
    features = call.input.shape[1]
    for earlier in reversed(structure.calls[:position]):
        output = earlier.output
        if output is not None and output.ndim >= 3:
            return tuple(output.shape[1:]) if math.prod(output.shape[1:]) == features else None
    return None


def settle_flatten_orders(plan: TransferPlan, source: ModelStructure, target: ModelStructure, source_values: Values,
                          record_target: Callable[[], ModelStructure], assign_target: Callable[[Values], None],
                          loaded: bool = False) -> None:
    """Decide, from the recorded activations, the order in which the target flattened each feature map that feeds a
    Gemm, and carry that Gemm's weight in it.

    With every layer before the Gemm carried across, the target's flattened features are the source's in some order.
    The candidates are the axis orders of the feature map (Keras flattens NHWC as (H, W, C), PyTorch NCHW as
    (C, H, W); a port may permute before flattening on purpose); the one that makes the source's features equal the
    target's is the order. Shapes alone cannot tell: a port that flattens in Keras order needs no permutation at all.
    The feature map's shape comes from whichever side recorded it (pooling written as a function records nothing).
    ``target`` is the target's recording before the transfer (its shapes are all that is read from it);
    ``record_target`` runs the target with the weights carried so far and returns what it recorded, only when a Gemm
    is fed by a flattened feature map. ``loaded`` (target_weights='loaded'): the target is to keep the user's weights,
    so the note says the user's kernel must be in that order rather than that the check permuted it.
    """
    recorded: ModelStructure | None = None
    for pair in plan.pairs:
        if pair.source.op != "Gemm":
            continue
        source_call = source.call_of(pair.source.layer)
        if source_call is None or source_call.input is None or source_call.input.ndim != 2:
            continue
        source_map = pre_flatten_shape(source, pair.source.layer)
        target_map = pre_flatten_shape(target, pair.target.layer)
        if source_map is None and target_map is None:
            continue  # no feature map is flattened into this Gemm: a difference here is another layer's to explain
        recorded = recorded or record_target()
        target_call = recorded.call_of(pair.target.layer)
        if target_call is None or target_call.input is None or target_call.input.shape != source_call.input.shape:
            continue
        flatten, why = _flatten_from_data(source_call.input, target_call.input, source_map, target_map)
        if flatten is None and why is None:
            continue  # the same order on both sides
        if flatten is None:
            plan.notes.append(f"{pair.source.label()} -> {pair.target.label()}: {why}")
            continue
        pair.flatten = flatten
        plan.notes.append(f"{pair.source.label()} -> {pair.target.label()}: the input is a flattened feature map, "
                          f"{shape_text(flatten.source_shape)} in the source's flatten order and "
                          f"{shape_text(flatten.target_shape)} in the target's (read from the activations), so "
                          + ("the target's kernel needs its input axis permuted to match: your loaded kernel was "
                             "compared with the kernel in that order" if loaded
                             else "the weight's input axis was permuted to match"))
        assign_target(plan.transfer(source_values))
        recorded = None  # the target's later activations change with this weight: record again when needed


# A flatten order is taken when its features match the target's to within float32 rounding of their scale, and this
# many times better than any other order's: a wrong order moves features between positions, an error of O(scale).
ORDER_MARGIN = 100.0
ORDER_ROUNDING = 1e-4


def _flatten_from_data(source_features: np.ndarray, target_features: np.ndarray, source_map: tuple[int, ...] | None,
                       target_map: tuple[int, ...] | None) -> tuple[FlattenPermutation | None, str | None]:
    """(the permutation, None), (None, None) for the same order, or (None, why) when no order explains the data."""
    count = len(source_features)
    scale = max(float(np.max(np.abs(source_features))), 1e-30)
    candidates: list[tuple[float, FlattenPermutation | None]] = [
        (float(np.max(np.abs(source_features - target_features))), None)]
    for order in itertools.permutations(range(len(source_map or ()))):
        if source_map is not None and order != tuple(range(len(source_map))):
            moved = source_features.reshape(count, *source_map).transpose(0, *(a + 1 for a in order))
            candidates.append((float(np.max(np.abs(moved.reshape(count, -1) - target_features))),
                               FlattenPermutation(source_map, order)))
    for order in itertools.permutations(range(len(target_map or ()))):
        if target_map is not None and order != tuple(range(len(target_map))):
            # The source's map is the target's transposed by ``order``; the target is the source by its inverse.
            moved = target_features.reshape(count, *target_map).transpose(0, *(a + 1 for a in order))
            shape = tuple(target_map[a] for a in order)
            candidates.append((float(np.max(np.abs(moved.reshape(count, -1) - source_features))),
                               FlattenPermutation(shape, tuple(int(a) for a in np.argsort(order)))))
    candidates.sort(key=lambda candidate: candidate[0])
    (best_error, best), runner_up = candidates[0], next(
        (error for error, flatten in candidates[1:] if flatten != candidates[0][1]), float("inf"))
    if best_error <= ORDER_ROUNDING * scale and best_error * ORDER_MARGIN <= runner_up:
        return best, None
    if any(error <= ORDER_ROUNDING * scale for error, flatten in candidates if flatten is None):
        return None, None  # the carried order fits, and nothing tells orders apart (e.g. constant features)
    maps = " or ".join(shape_text(m) for m in (source_map, target_map) if m is not None) or "feature map"
    return None, (f"the flattened features reaching it are no reordering of the feature map ({maps}; closest "
                  f"order off by {best_error:.3g} at a scale of {scale:.3g}): check the flatten (view, reshape, "
                  f"permute) before it, or the layer before that")
