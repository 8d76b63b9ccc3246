"""The steps both modes run around their own: seeded weights and cotangents, running the source and explaining its
failure, refusing a non-finite reference, measuring speed, explaining a converted model that fails to run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from pytest_parity import trees
from pytest_parity.errors import ConversionError, ParityUsageError, error_summary
from pytest_parity.frameworks import ModelAdapter, ModelInputs, for_model_precision
from pytest_parity.result import SpeedResult
from pytest_parity.seeding import seeded_generator
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import compare, timing

# How far randomize_constant_weights moves initializer-pattern weights: zeros -> N(0, ZERO_STD), other values times
# U(1 - SCALE_SPREAD, 1 + SCALE_SPREAD). Small on purpose: the values only need to be distinct and non-trivial (a
# dropped bias of 0.01 is still 1000x the default atol), while BatchNormalization's gain gamma / sqrt(variance)
# compounds through depth. With the first choice, N(0, 0.1) and U(0.5, 1.5), channel gains reached 2.1 and an untrained
# EfficientNetV2M's logits reached 1e5, a saturated softmax whose winning class float32 rounding decided
# (benchmarks/randomized_weight_scale.py measures every architecture of the coverage suite).
ZERO_STD = 0.01
SCALE_SPREAD = 0.1


def randomize_constant_weights(adapter: ModelAdapter, rng: np.random.Generator, *, zero_std: float = ZERO_STD,
                               scale_spread: float = SCALE_SPREAD) -> dict[str, np.ndarray]:
    """Give initializer-pattern weights seeded random values; returns the originals so the caller can restore them.

    Initializer patterns are all-constant weights (zero biases, BN moving means, unit scales and variances) and weights
    of only zeros and ones (Keras' LSTM bias with unit_forget_bias is [0, 1, 0, 0] blocks): converters drop or fold
    them, and tf2onnx merges equal ones into one tensor, so two layers would share a bias in the converted model.
    Zeros get N(0, zero_std); other values are scaled elementwise by U(1 - scale_spread, 1 + scale_spread), which
    keeps their sign, so variances stay positive. A single-element weight counts only when it is exactly 0 or 1: any
    other scalar was probably set on purpose.

    A weight that holds exactly the values of another, in any shape (keras-hub's Gemma starts its key and value kernels
    equal, and its query kernel [4, 32, 8] equal element for element to its output kernel [4, 8, 32]) is moved the
    same way, all but the first of each group: tf2onnx merges equal tensors into one, and the matcher, which follows a
    kernel through reshapes, could pair a weight with the other's tensor.
    """
    originals: dict[str, np.ndarray] = {}
    replacements: dict[str, np.ndarray] = {}
    seen: dict[tuple[str, int, bytes], str] = {}
    for name, value in adapter.weights().items():
        if value.size == 0:
            continue
        if not initializer_pattern(value):
            key = (str(value.dtype), value.size, hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
            if key not in seen:
                seen[key] = name
                continue
        fresh = np.where(value == 0, rng.normal(0.0, zero_std, value.shape),
                         value * rng.uniform(1.0 - scale_spread, 1.0 + scale_spread, value.shape))
        originals[name] = value
        replacements[name] = fresh.astype(value.dtype)
    if replacements:
        adapter.assign_weights(replacements)
    return originals


def initializer_pattern(value: np.ndarray) -> bool:
    first = value.reshape(-1)[0]
    if np.all(value == first):
        return value.size > 1 or first in (0, 1)
    return bool(np.all((value == 0) | (value == 1)))


def source_run_failure(source: ModelAdapter, inputs: ModelInputs, error: BaseException) -> ParityUsageError:
    """The source failing on the user's inputs is a usage error: say what was given and what the model expects."""
    expected = source.expected_inputs()
    hint = f" The model expects {expected}." if expected else ""
    if inputs.kind == "positional" and isinstance(error, TypeError) and "argument" in str(error):
        count = source.expected_input_count()
        takes = f" (it takes {count} input{'s' if count != 1 else ''})" if count is not None else ""
        return ParityUsageError(
            f"The source model ({source.description}) does not take the {len(inputs.names)} inputs given as "
            f"separate positional arguments{takes} ({inputs.describe()}): {error_summary(error)}\n"
            f"A list or tuple passed as inputs= is one argument per element: for a model with one input, pass one "
            f"array; for one with named inputs, a dict.{hint}")
    return ParityUsageError(
        f"Running the source model ({source.description}) on the given inputs ({inputs.describe()}) failed with "
        f"{error_summary(error)}\n"
        f"Check the inputs' number, rank, shape and dtype against the model.{hint}"
    )


def prepare_source(source: ModelAdapter, inputs: ModelInputs, device: str) -> ModelInputs:
    """Before any weight is read: build a model whose weights exist only after a first call, then give it its
    inputs at its own precision (frameworks.for_model_precision)."""
    try:
        source.build(for_model_precision(inputs, {}), device)
    except ParityUsageError:
        raise
    except Exception as error:
        raise source_run_failure(source, inputs, error) from None
    return for_model_precision(inputs, source.weights())


def input_notes(inputs: ModelInputs) -> list[str]:
    """What the result must say about the inputs the check changed: float64 inputs run in float32."""
    if not inputs.cast_from_float64:
        return []
    return [f"{', '.join(inputs.cast_from_float64)} given as float64 ran as float32, the model's precision (its "
            f"weights are not all float64); give float32 inputs, or a float64 model, to make this explicit"]


# Two runs of a model count as different when they part by more than this share of the outputs' largest value: random
# ops (dropout drops whole elements) move outputs by a sizeable share of their scale, while float32 rounding, which
# can differ run to run where threads split a reduction differently, stays near 1e-7 of it.
RERUN_SHARE = 1e-3


@contextmanager
def checked_model(adapter: ModelAdapter, inputs: ModelInputs, device: str, settings: ParitySettings,
                  seed_key: str) -> Iterator[ModelInputs]:
    """One model made ready for a check (built, its inputs at its precision, initializer-pattern weights given seeded
    values), yielding the inputs to use; afterwards, whatever happened, the model is as it was handed in: its own
    weights, device and train/eval mode. Port mode, with two models and a transfer, keeps its own."""
    restore_placement = adapter.remember_placement()
    originals: dict[str, np.ndarray] = {}
    try:
        inputs = prepare_source(adapter, inputs, device)
        if settings.randomize_constant_weights:
            originals = randomize_constant_weights(adapter, seeded_generator(seed_key, settings.seed, "weights"))
        yield inputs
    finally:
        if originals:
            adapter.assign_weights(originals)
        restore_placement()


def refuse_if_not_a_function_of_its_inputs(source: ModelAdapter, inputs: ModelInputs, device: str, outputs: Any,
                                           cotangents: list[np.ndarray | None] | None, role: str = "source") -> None:
    """Before a failure blames a conversion or a port: run the model once more on the same inputs, the same way (with
    the same cotangents when the first run took gradients: some layers take another kernel without autograd, e.g.
    nn.MultiheadAttention's fast path). Two runs that differ beyond rounding mean the model is random at inference or
    keeps changing state, and no other model could match it."""
    try:
        again, _, _ = source.run(inputs, device, cotangents)
    except Exception:
        return  # it ran a moment ago; whatever this is, the failure's own message stands
    scale = max((float(np.max(np.abs(np.asarray(leaf)))) for _, leaf in trees.flatten_tree(outputs, "output")
                 if np.size(leaf) and np.issubdtype(np.asarray(leaf).dtype, np.inexact)), default=0.0)
    same = compare.compare_trees(again, outputs, atol=RERUN_SHARE * scale, rtol=0.0)
    if same.passed:
        return
    worst = max(same.failures, key=lambda c: c.max_abs)
    raise ParityUsageError(
        f"The {role} model ({source.description}) is not a function of its inputs: it gives different outputs when "
        f"run twice on the same inputs, its "
        f"{worst.name} differs between the two runs by up to {worst.max_abs:.3g} (its outputs reach {scale:.3g}), "
        f"so no converted or "
        f"ported model could match it and the check cannot judge one. Typical causes: dropout or noise active at "
        f"inference (a layer called with training=True, F.dropout(x, training=True)), random ops, or state the "
        f"forward pass updates (a counter, running statistics). What you can do: check the model as it runs in "
        f"inference, with the random op removed or switched off.")


def run_source(source: ModelAdapter, inputs: ModelInputs, device: str,
                cotangents: Callable[[list[np.ndarray]], list[np.ndarray | None]] | None) -> Any:
    try:
        return source.run(inputs, device, cotangents)
    except ParityUsageError:
        raise
    except Exception as error:
        raise source_run_failure(source, inputs, error) from None


def make_cotangent_source(seed_key: str, seed: int) -> tuple[list[np.ndarray | None],
                                                             Callable[[list[np.ndarray]], list[np.ndarray | None]]]:
    """A list that fills with one seeded cotangent per output leaf when the source's outputs are first seen."""
    rng = seeded_generator(seed_key, seed, "cotangents")
    cotangents: list[np.ndarray | None] = []

    def make(leaves: list[np.ndarray]) -> list[np.ndarray | None]:
        # A seeded random cotangent, not sum(): the gradient of sum(softmax(x)) is zero and would hide any error.
        cotangents.extend(rng.standard_normal(leaf.shape).astype(leaf.dtype)
                          if np.issubdtype(leaf.dtype, np.floating) else None for leaf in leaves)
        return cotangents

    return cotangents, make


def measure_speed_if_asked(settings: ParitySettings, gated: bool, device: str, source: ModelAdapter,
                           source_inputs: ModelInputs, target: ModelAdapter,
                           target_inputs: ModelInputs) -> SpeedResult | None:
    if settings.speed is None:
        return None
    # CUDA events time the device's work, but only PyTorch has them: a ratio needs the same clock on both sides.
    event_timer = None
    if device == "cuda" and source.framework == target.framework == "torch":
        event_timer = source.cuda_event_timer()  # type: ignore[attr-defined]
    return timing.measure_speed(source.speed_call(source_inputs, device, settings.timed),
                                target.speed_call(target_inputs, device, settings.timed), settings.speed,
                                timed=settings.timed, gated=gated, inconclusive=settings.speed_inconclusive,
                                clocks=timing.clocks_for(device, event_timer))


def refuse_non_finite(tree: Any, what: str, description: str) -> None:
    for path, leaf in trees.flatten_tree(tree, what):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.inexact):
            bad = ~np.isfinite(leaf)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ParityUsageError(
                    f"The source model ({description}) returns NaN or Inf in {path} at {int(bad.sum())} of "
                    f"{leaf.size} elements (first at index {first}) for these inputs, so there is nothing to compare "
                    f"against. Check the model for log/sqrt of negative values, division by zero or overflow, and the "
                    f"inputs for NaN; parity needs a finite reference."
                )


def refuse_if_every_gradient_is_zero(input_grads: list[np.ndarray | None] | None, weight_grads: dict[str, Any] | None,
                                     outputs: Any, description: str) -> None:
    """A source whose every gradient is zero on these inputs gives the gradient comparison nothing a wrong value could
    fail: the check would pass claiming gradients it never tested. Refuse, saying why and what to check instead."""
    gradients = [g for g in [*(input_grads or []), *(weight_grads or {}).values()] if g is not None]
    # No gradient at all (outputs that are not differentiable: argmax ids) leaves every weight reported unused.
    if not weight_grads or not gradients or any(np.any(np.asarray(g)) for g in gradients):
        return
    floats = [np.asarray(leaf) for _, leaf in trees.flatten_tree(outputs, "output")
              if np.issubdtype(np.asarray(leaf).dtype, np.floating) and np.size(leaf)]
    saturated = sum(int(np.count_nonzero((leaf == 0) | (leaf == 1))) for leaf in floats)
    total = sum(int(leaf.size) for leaf in floats)
    shown = (f" {saturated} of its {total} output elements are exactly 0 or 1, the mark of a saturated softmax or "
             f"sigmoid." if total and saturated > total // 2 else "")
    raise ParityUsageError(
        f"Every gradient of the source model ({description}) is exactly zero on these inputs ({len(weight_grads)} "
        f"weight gradient(s), {len(input_grads or [])} input gradient(s)), so no gradient comparison could fail and "
        f"the check could not claim the gradients agree.{shown} Typical causes: outputs saturated by logits far from "
        f"unit scale (an untrained deep network's logits can reach 1e4 and more), or a model ending in argmax or "
        f"rounding. What you can do: check the logits (classifier_activation=None in keras.applications, the module "
        f"without its final softmax), with inputs and weights at a realistic scale; or pass grad=False for a check "
        f"of the outputs only, which the result reports as partial.")


def converted_run_failure(route: str, description: str, inputs: ModelInputs, error: Exception) -> ConversionError:
    """The source ran and the conversion succeeded, yet the converted model fails on the same inputs: a converter gap
    (an op imported with the wrong semantics, a graph input the export should not have had), not the user's model."""
    return ConversionError(
        f"The converted model ({description}, route {route}) failed to run on the inputs the source model ran on "
        f"({inputs.describe()}): {error_summary(error)}\nThis is a gap in the conversion, not in your model. What you "
        f"can do: check the model in port mode against a hand-written twin, and report it with the model's "
        f"definition.", step=f"running the converted model ({route})")
