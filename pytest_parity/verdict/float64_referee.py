"""Float64 runs that tell rounding from error.

1. When a check fails: is the difference the model's own float32 rounding? Run the source once more in float64 (a
Keras source: the converted model, the same function in PyTorch).

A converted graph computes the same sums in another order, so the two sides differ by float32 rounding. For small
models that stays far inside the default tolerances; for deep ones it need not: in torchvision's swin_v2_s the
float32 source itself differs from its float64 run by up to 1.4e-2 in a bias gradient of scale 400, and 974 of its 49
M gradient elements lie outside the default gradient tolerances (measured once, seed 0, batch 2 at 32x32). When every
failing tensor differs from the source by no more than the source's own float32 error in that tensor, the failure is
rounding, and the message says so with the figures and the tolerances that would fit.

PyTorch models only (a module converts to float64 with .double(); a Keras model would have to be rebuilt with another
dtype policy), so for a Keras source the converted model is the one run: it rounds its own way, and a difference
within twice its own float32 error is rounding just the same. Run only on failure, on a copy of the module; anything
it cannot do leaves no hint.

2. When a gradient is so small that a halved or zeroed target would pass its comparison (``rejudge_near_zero``): is it
zero in exact arithmetic, or a real gradient that vanished through the layers (MobileNet's early layers at 32x32 sit
near 1e-16 of the model's largest gradient, far below the check's float32 rounding floor)? A float64 run of a PyTorch
side (the source, or else the converted model) says how much float32 rounding that very tensor carries, and the
tensor is judged against that instead of the floor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.frameworks import ModelAdapter, ModelInputs
from pytest_parity.result import Comparison
from pytest_parity.trees import flatten_tree
from pytest_parity.verdict import compare, tolerances

# A failing tensor whose difference is within this factor of the source's own float32 error counts as rounding: the
# converted model, rounding differently, may land on the other side of the float64 value.
ROUNDING_FACTOR = 2.0


@dataclass(frozen=True)
class Float32Error:
    """How far the float32 source is from its float64 run, per tensor (output leaves, input and weight gradients)."""

    max_abs: dict[str, float]
    # Elements outside the check's tolerances, over all tensors compared: float32 alone fails the check this often.
    outside_tolerance: int
    total: int
    # Which model was run in float64, as the hint names it: the source itself, or the converted model (the same
    # function in PyTorch) when the source is a Keras model, which has no float64 run here.
    witness: str = "the source itself"


def source_float32_error(source: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any] | None,
                         outputs32: Any, input_grads32: list[np.ndarray | None] | None,
                         weight_grads32: dict[str, np.ndarray | None] | None, input_labels: list[str],
                         tolerances: tuple[float, float, float, float], *, witness: str = "the source itself",
                         source_names: dict[str, str] | None = None) -> Float32Error | None:
    """The float32 model's error against its float64 run, or None where that cannot be had (not PyTorch, no memory
    for a copy, an op without float64 support...). ``source_names``: weight name -> the name the check reports it
    under, when the model run is the converted one (its weights carry the converter's names)."""
    run64 = run_in_float64(source, inputs, device, cotangents, list((weight_grads32 or {}).keys()))
    if run64 is None:
        return None
    outputs64, input_grads64, weight_grads64 = run64
    rename = source_names or {}
    atol, rtol, grad_atol, grad_rtol = tolerances
    pairs: list[tuple[str, Any, Any, float, float]] = [
        (name, leaf32, leaf64, atol, rtol) for (name, leaf32), (_, leaf64)
        in zip(flatten_tree(outputs32, "output"), flatten_tree(outputs64, "output"))]
    pairs += [(label, g32, g64, grad_atol, grad_rtol)
              for label, g32, g64 in zip(input_labels, input_grads32 or [], input_grads64 or [])]
    # A layout change between the two models only moves elements, so the largest difference is the same either way.
    pairs += [(rename.get(name, name), g32, (weight_grads64 or {}).get(name), grad_atol, grad_rtol)
              for name, g32 in (weight_grads32 or {}).items()]
    max_abs: dict[str, float] = {}
    outside = total = 0
    for name, value32, value64, tensor_atol, tensor_rtol in pairs:
        if value32 is None or value64 is None:
            continue
        value32, value64 = np.asarray(value32, np.float64), np.asarray(value64, np.float64)
        if value32.shape != value64.shape or not np.all(np.isfinite(value64)):
            continue
        difference = np.abs(value32 - value64)
        max_abs[name] = float(np.max(difference, initial=0.0))
        outside += int(np.count_nonzero(difference > tensor_atol + tensor_rtol * np.abs(value64)))
        total += int(value64.size)
    return Float32Error(max_abs, outside, total, witness)


def run_in_float64(model: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any] | None,
                   grad_weights: list[str]) -> tuple[Any, list[np.ndarray | None] | None,
                                                     dict[str, np.ndarray | None] | None] | None:
    """A PyTorch model run on a float64 copy of itself: outputs, input and weight gradients (named as the model
    names them), or None where that cannot be had (not PyTorch, no memory for a copy, an op without float64
    support, a converted op that makes float32 constants of its own...)."""
    if model.framework != "torch":
        return None
    try:
        from pytest_parity.frameworks.torch import TorchModel

        module64 = copy.deepcopy(model.module).double()  # type: ignore[attr-defined]
        adapter64 = TorchModel(module64, positional_inputs=model.positional_inputs)  # type: ignore[attr-defined]
        inputs64 = ModelInputs(inputs.kind, inputs.names,
                               tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs.arrays))
        cotangents64 = None if cotangents is None else [None if c is None else np.asarray(c, np.float64)
                                                        for c in cotangents]
        return adapter64.run(inputs64, device, cotangents64, grad_weights=grad_weights)
    except Exception:  # a second opinion: whatever fails here leaves the check's own verdict as it was
        return None


# How many times one side's own float32 error in a tensor (|float32 - float64| of that side) the two sides may
# differ by: each side rounds its own way, and the other side's error is not measured (a Keras source has no float64
# run). Measured in benchmarks/rounding_reference.py: over 292 such tensors of 47 models the ratio reaches 6.87 (99th
# percentile 3.92), so 100 leaves a margin of 14, while a zeroed or halved gradient (off by 50% or more of itself,
# ~5e5 times its float32 rounding) still fails.
ROUNDING_MARGIN = 100.0


@dataclass(frozen=True)
class NearZeroRejudged:
    """The gradient comparisons after the near-zero tensors were judged against their own float32 rounding."""

    grads: dict[str, Comparison]
    # Tensors whose float64 gradient is itself within that rounding of zero: the exact gradient is zero (a bias
    # ahead of a softmax or a normalisation), and the comparison checked that the target's is zero too.
    zero_in_exact_arithmetic: tuple[str, ...]
    # Near-zero tensors the float64 run could not speak for (no float64 run, or no gradient from it).
    unresolved: tuple[str, ...]


def judge_near_zero(grads: dict[str, Comparison], input_labels: list[str],
                    source32: tuple[list[np.ndarray | None], dict[str, Any]],
                    target32: tuple[list[np.ndarray | None], dict[str, Any]], source_is_torch: bool,
                    run64: Callable[[], tuple[list[np.ndarray | None], dict[str, Any]] | None], *,
                    grad_atol: float) -> NearZeroRejudged:
    """rejudge_near_zero for one check, with the float64 run made only when a comparison needs it. ``source32`` and
    ``target32``: (input gradients, weight gradients by source name), in the source's layout; ``run64``: the PyTorch
    side run in float64, its gradients given the same way (None where it cannot run). The PyTorch side is the source
    when ``source_is_torch``, else the target."""
    if not any(tolerances.halved_would_pass(comparison) for comparison in grads.values()):
        return NearZeroRejudged(grads, (), ())

    def by_label(gradients: tuple[list[np.ndarray | None], dict[str, Any]]) -> dict[str, Any]:
        return {**dict(zip(input_labels, gradients[0])), **gradients[1]}

    sources, targets = by_label(source32), by_label(target32)
    own64 = run64()
    return rejudge_near_zero(grads, sources, targets, sources if source_is_torch else targets,
                             None if own64 is None else by_label(own64), grad_atol=grad_atol)


def rejudge_near_zero(grads: dict[str, Comparison], source32: dict[str, np.ndarray | None],
                      target32: dict[str, np.ndarray | None], own32: dict[str, np.ndarray | None] | None,
                      own64: dict[str, np.ndarray | None] | None, *, grad_atol: float) -> NearZeroRejudged:
    """Every gradient comparison a halved (or zeroed) target would pass (tolerances.halved_would_pass: the rounding
    floor decides it, not the tensor's own scale) is judged again with the absolute tolerance
    min(grad_atol, max(SCALE_SHARE * max|source|, ROUNDING_MARGIN * max|own32 - own64|)): the scale of the tensor
    itself, or the float32 rounding one side measurably carries in it, whichever is larger, under the user's grad_atol
    as every gradient tolerance is. For a gradient that vanished through the layers that is tighter than the floor;
    for one that is zero in exact arithmetic it can be looser (its float32 noise may exceed the floor: a conv bias
    right before an InstanceNorm, 1.4e-7 G) and it is then named as such. ``source32``/``target32``: the gradients
    compared, in the source's layout, by comparison name; ``own32``/``own64``: the same tensors of one PyTorch side
    in float32 and in float64 (None: no float64 run)."""
    rejudged = dict(grads)
    exact_zero: list[str] = []
    unresolved: list[str] = []
    for name, comparison in grads.items():
        if not tolerances.halved_would_pass(comparison):
            continue
        value32 = None if own32 is None else own32.get(name)
        value64 = None if own64 is None else own64.get(name)
        source, target = source32.get(name), target32.get(name)
        if value32 is None or value64 is None or source is None or target is None \
                or np.shape(value32) != np.shape(value64):
            unresolved.append(name)
            continue
        rounding = float(np.max(np.abs(np.asarray(value32, np.float64) - np.asarray(value64, np.float64)),
                                initial=0.0))
        atol = min(grad_atol, max(tolerances.SCALE_SHARE * comparison.source_max_abs, ROUNDING_MARGIN * rounding))
        again = compare.compare_arrays(name, target, source, atol=atol, rtol=comparison.rtol)
        rejudged[name] = again
        if tolerances.halved_would_pass(again):
            # Even at its own rounding the tensor is within a factor 2 of zero: its exact gradient is zero.
            exact_zero.append(name)
    return NearZeroRejudged(rejudged, tuple(exact_zero), tuple(unresolved))
