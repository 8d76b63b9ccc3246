"""When a check fails: is the difference the model's own float32 rounding? Run the source once more in float64.

A converted graph computes the same sums in another order, so the two sides differ by float32 rounding. For small
models that stays far inside the default tolerances; for deep ones it need not: in torchvision's swin_v2_s the
float32 source itself differs from its float64 run by up to 1.4e-2 in a bias gradient of scale 400, and 974 of its 49
M gradient elements lie outside the default gradient tolerances (measured once, seed 0, batch 2 at 32x32). When every
failing tensor differs from the source by no more than the source's own float32 error in that tensor, the failure is
rounding, and the message says so with the figures and the tolerances that would fit.

PyTorch sources only (a module converts to float64 with .double(); a Keras model would have to be rebuilt with
another dtype policy). Run only on failure, on a copy of the module; anything it cannot do leaves no hint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.frameworks import ModelAdapter, ModelInputs
from pytest_parity.trees import flatten_tree

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


def source_float32_error(source: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any] | None,
                         outputs32: Any, input_grads32: list[np.ndarray | None] | None,
                         weight_grads32: dict[str, np.ndarray | None] | None, input_labels: list[str],
                         tolerances: tuple[float, float, float, float]) -> Float32Error | None:
    """The float32 source's error against its float64 run, or None where that cannot be had (not PyTorch, no memory
    for a copy, an op without float64 support...)."""
    if source.framework != "torch":
        return None
    try:
        from pytest_parity.frameworks.torch import TorchModel

        module64 = copy.deepcopy(source.module).double()  # type: ignore[attr-defined]
        adapter64 = TorchModel(module64, positional_inputs=source.positional_inputs)  # type: ignore[attr-defined]
        inputs64 = ModelInputs(inputs.kind, inputs.names,
                               tuple(a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs.arrays))
        cotangents64 = None if cotangents is None else [None if c is None else np.asarray(c, np.float64)
                                                        for c in cotangents]
        outputs64, input_grads64, weight_grads64 = adapter64.run(
            inputs64, device, cotangents64, grad_weights=list((weight_grads32 or {}).keys()))
    except Exception:  # a diagnostic: whatever fails here, the check's own failure stands as it is
        return None
    atol, rtol, grad_atol, grad_rtol = tolerances
    pairs: list[tuple[str, Any, Any, float, float]] = [
        (name, leaf32, leaf64, atol, rtol) for (name, leaf32), (_, leaf64)
        in zip(flatten_tree(outputs32, "output"), flatten_tree(outputs64, "output"))]
    pairs += [(label, g32, g64, grad_atol, grad_rtol)
              for label, g32, g64 in zip(input_labels, input_grads32 or [], input_grads64 or [])]
    pairs += [(name, g32, (weight_grads64 or {}).get(name), grad_atol, grad_rtol)
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
    return Float32Error(max_abs, outside, total)
