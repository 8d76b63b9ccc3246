"""target_weights='loaded': the weights the user loaded into the target, compared tensor by tensor with the check's own
transfer, each difference named with the layout change that would make it equal.

The user's checkpoint converter is the code under test here: the target keeps its weights, and every tensor the check
would carry (trainable or not: a BatchNorm's running statistics too) is compared with what the check's transfer writes.
A tensor that differs fails the check even where the outputs agree on these inputs. For each one the known layout
mistakes of a converter are tried on the check's value: another gate block order (LSTM, GRU), the axes transposed,
the kernel after a flatten in another flatten order, a bias pair holding the whole bias twice or one of two summed
biases left out, the value meant for another tensor. The first that reproduces the user's value is named.

Two values of a target can compute the same function: torch's LSTM adds bias_ih and bias_hh, so any split of Keras'
one bias between them is right. Such tensors are compared as the model uses them (``TransferPlan.to_source`` sums
them), and a split other than the check's passes with a note.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from pytest_parity.modes.port.ops import ModelStructure, Values, reorder_gates, shape_text
from pytest_parity.modes.port.transfer import (
    FlattenPermutation,
    OpPair,
    TransferPlan,
    pre_flatten_shape,
    transfer_pair,
)
from pytest_parity.result import Comparison
from pytest_parity.verdict import compare

# A loaded weight is a copy of the check's value with elements moved, or a sum of two: float32 rounding of its scale.
WEIGHT_RTOL = 1e-6
WEIGHT_SCALE_ATOL = 1e-6

# Each framework's name for the gates of its recurrent layers, in the order its weights hold them.
GATE_NAMES = {("torch", "LSTM"): ("i", "f", "g", "o"), ("tensorflow", "LSTM"): ("i", "f", "c", "o"),
              ("torch", "GRU"): ("r", "z", "n"), ("tensorflow", "GRU"): ("z", "r", "h")}
# The same gates by one letter on both sides (torch's g and n are Keras' c and h), to tell when a converter copied the
# other framework's blocks without reordering them.
SHARED_GATES = {("torch", "LSTM"): "ifco", ("tensorflow", "LSTM"): "ifco", ("torch", "GRU"): "rzh",
                ("tensorflow", "GRU"): "zrh"}
POSSESSIVE = {"torch": "PyTorch's", "tensorflow": "Keras'"}
# TensorFlow 1's LSTMCell kept its gates as i, c (the candidate), f, o: a converter from a TF1 checkpoint must reorder.
TF1_LSTM_ORDER = (0, 2, 1, 3)
GATE_COUNTS = {"LSTM": 4, "GRU": 3}
# Recurrent ops whose two biases (torch's bias_ih, bias_hh) the layer only adds; a GRU's new-gate recurrent bias is
# multiplied by the reset gate, so its two are not interchangeable.
SUMMED_BIASES = ("LSTM", "RNN")


def compare_loaded(plan: TransferPlan, source_values: Values, loaded: Values, source_structure: ModelStructure,
                   target_framework: str) -> tuple[dict[str, Comparison], list[str]]:
    """Every target tensor the plan carries: the user's value against the check's transfer (by the target's name), and
    notes for tensors that differ only in a split the model cannot tell apart."""
    expected = plan.transfer(source_values)
    try:
        canonical = plan.transfer({**source_values, **plan.to_source(loaded)})
    except Exception:  # a rule whose load cannot take every value: compare as loaded
        canonical = dict(loaded)
    comparisons: dict[str, Comparison] = {}
    notes: list[str] = []
    for pair in plan.pairs:
        for key, binding in pair.target.bindings.items():
            group = [name for name in binding.variables if name in expected and name in loaded]
            group_agrees = all(_close(canonical.get(name, loaded[name]), expected[name]) for name in group)
            for name in group:
                if name in comparisons:
                    continue
                want = np.asarray(expected[name]).astype(np.asarray(loaded[name]).dtype, copy=False)
                comparison = _compare(name, loaded[name], want)
                if comparison.passed:
                    comparisons[name] = comparison
                elif group_agrees:
                    comparisons[name] = _compare(name, canonical[name], want)
                    note = (f"loaded weights {' + '.join(repr(n) for n in group)} are split otherwise than the "
                            f"check's transfer splits {', '.join(repr(n) for n in pair.source.bindings[key].variables)}"
                            f", and their sum is the same: the layer uses only the sum, so they were compared as such")
                    if note not in notes:
                        notes.append(note)
                else:
                    fix = _named_fix(name, loaded, expected, pair, key, group, source_values, source_structure,
                                     target_framework)
                    source_names = ", ".join(repr(n) for n in pair.source.bindings[key].variables)
                    problem = (f"your loaded value is not the check's transfer of {source_names} "
                               f"({pair.source.label()} -> {pair.target.label()}): {fix}")
                    comparisons[name] = replace(comparison, problem="; ".join(
                        part for part in (problem, comparison.problem) if part))
    return comparisons, notes


def _tolerance(expected: np.ndarray) -> float:
    return WEIGHT_SCALE_ATOL * float(np.max(np.abs(expected))) if expected.size else 0.0


def _compare(name: str, actual: np.ndarray, expected: np.ndarray) -> Comparison:
    return compare.compare_arrays(name, actual, expected, atol=_tolerance(np.asarray(expected, np.float64)),
                                  rtol=WEIGHT_RTOL)


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        return False
    return bool(np.all(np.abs(actual - expected) <= _tolerance(expected) + WEIGHT_RTOL * np.abs(expected)))


def _named_fix(name: str, loaded: Values, expected: Values, pair: OpPair, key: str, group: list[str],
               source_values: Values, source_structure: ModelStructure, target_framework: str) -> str:
    value = np.asarray(loaded[name])
    for description, alternative in _alternatives(name, value, loaded, expected, pair, key, group, source_values,
                                                  source_structure, target_framework):
        if _close(value, alternative):
            return description
    return ("no layout mistake the check knows (gate block order, transposed axes, flatten order, bias split, another "
            "tensor's value) reproduces it: check how your converter computes this tensor")


def _alternatives(name: str, value: np.ndarray, loaded: Values, expected: Values, pair: OpPair, key: str,
                  group: list[str], source_values: Values, source_structure: ModelStructure,
                  target_framework: str) -> Iterator[tuple[str, np.ndarray]]:
    """(what the converter did, the value that would then be loaded), the likeliest first."""
    want = np.asarray(expected[name])
    gates = GATE_COUNTS.get(pair.target.op)
    if gates is not None:
        names = GATE_NAMES.get((target_framework, pair.target.op), tuple("abcd"[:gates]))
        for axis in range(want.ndim):
            if want.shape[axis] % gates or want.shape[axis] == 0:
                continue
            for order in itertools.permutations(range(gates)):
                if order == tuple(range(gates)):
                    continue
                yield (f"{_axis_words(axis, want.ndim)} are in {_gates_text(order, names)} order "
                       f"({_order_words(order, pair.target.op, target_framework)}); {pair.target.kind} expects "
                       f"{','.join(names)}: reorder the blocks", reorder_gates(want, order, axis))
    if pair.target.op in SUMMED_BIASES and len(group) == 2 and all(np.shape(expected[n]) == want.shape
                                                                   for n in group):
        other = next(n for n in group if n != name)
        total = np.asarray(expected[group[0]]) + np.asarray(expected[group[1]])
        also = _close(np.asarray(loaded[other]), total)
        yield (f"it holds the whole bias the layer uses ({name!r} + {other!r} together)"
               + (f", and {other!r} holds it too: the layer adds the two, so the bias counts twice. Keep it in one "
                  f"of them and zeros in the other" if also else
                  f"; {other!r} holds another value, and the layer adds the two: their sum must be the source's "
                  f"bias"), total)
    source_binding = pair.source.bindings[key]
    if len(source_binding.variables) > 1:
        for left_out in source_binding.variables:
            without = {**source_values, left_out: np.zeros_like(source_values[left_out])}
            kept = [n for n in source_binding.variables if n != left_out]
            yield (f"it holds {' + '.join(repr(n) for n in kept)} without {left_out!r}: {pair.target.label()} has one "
                   f"tensor where the source adds {' + '.join(repr(n) for n in source_binding.variables)}, so it "
                   f"must hold their sum", transfer_pair(pair, without, pair.flatten)[name])
    yield from _flatten_alternatives(name, pair, key, source_values, source_structure)
    for axes in itertools.permutations(range(want.ndim)):
        if axes != tuple(range(want.ndim)) and want.transpose(axes).shape == want.shape and want.ndim <= 4:
            yield (("it is transposed" if want.ndim == 2 else f"its axes are in order {axes} of the expected layout")
                   + f" ({name!r} is {shape_text(want.shape)} in the target's own layout): transpose it",
                   want.transpose(axes))
    for other_name, other_value in expected.items():
        if other_name != name and np.shape(other_value) == want.shape:
            yield (f"it holds the value meant for {other_name!r}: the converter wrote one tensor into another's place",
                   np.asarray(other_value))


def _flatten_alternatives(name: str, pair: OpPair, key: str, source_values: Values,
                          source_structure: ModelStructure) -> Iterator[tuple[str, np.ndarray]]:
    if pair.target.op != "Gemm" or key != "W":
        return
    feature_map = pair.flatten.source_shape if pair.flatten is not None else pre_flatten_shape(source_structure,
                                                                                                pair.source.layer)
    if feature_map is None:
        return
    expected_order = pair.flatten.target_shape if pair.flatten is not None else feature_map
    if pair.flatten is not None:
        yield (f"its input axis is in the source's flatten order (feature map {shape_text(feature_map)}), but this "
               f"target flattens the map as {shape_text(expected_order)}: permute the kernel's input features to the "
               f"target's flatten order (or permute the feature map before flattening in the port)",
               transfer_pair(pair, source_values, None)[name])
    for order in itertools.permutations(range(len(feature_map))):
        flatten = FlattenPermutation(feature_map, order)
        if order == tuple(range(len(feature_map))) or flatten == pair.flatten:
            continue
        yield (f"its input axis is in flatten order {shape_text(flatten.target_shape)} (the source's feature map "
               f"{shape_text(feature_map)} with axes {order}), but this target flattens it as "
               f"{shape_text(expected_order)}: permute the kernel's input features to match",
               transfer_pair(pair, source_values, flatten)[name])


def _axis_words(axis: int, ndim: int) -> str:
    if ndim == 1:
        return "its gate blocks"
    if ndim == 2:
        return "its gate blocks (rows)" if axis == 0 else "its gate blocks (columns)"
    return f"its gate blocks along axis {axis}"


def _gates_text(order: tuple[int, ...], names: tuple[str, ...]) -> str:
    return ",".join(names[i] for i in order)


def _order_words(order: tuple[int, ...], op: str, framework: str) -> str:
    if op == "LSTM" and order == TF1_LSTM_ORDER:
        return "TensorFlow 1's LSTMCell order i,c,f,o, with c the candidate"
    other = "tensorflow" if framework == "torch" else "torch"
    mine, theirs = SHARED_GATES.get((framework, op)), SHARED_GATES.get((other, op))
    if mine and theirs and order == tuple(mine.index(gate) for gate in theirs):
        names = GATE_NAMES[(other, op)]
        return f"{POSSESSIVE[other]} own order {','.join(names)}, copied without reordering"
    return "a gate order of another framework or checkpoint"
