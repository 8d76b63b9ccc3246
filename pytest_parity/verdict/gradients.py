"""Input and weight gradients compared, each tensor with its own scale-aware tolerance (tolerances.gradient_atol)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_parity.frameworks import ModelInputs
from pytest_parity.result import Comparison
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import compare, tolerances


def input_label(inputs: ModelInputs, name: str) -> str:
    return f"input[{name!r}]" if inputs.kind == "named" else name


def compare_gradients(inputs: ModelInputs, source_input_grads: list[np.ndarray | None],
                               target_input_grads: list[np.ndarray | None], source_weight_grads: dict[str, Any],
                               carried_grads: dict[str, np.ndarray | None], weight_names: list[str],
                               settings: ParitySettings, target_names: dict[str, str] | None = None,
                               ) -> dict[str, Comparison]:
    """Input gradients, then one comparison per source weight; ``carried_grads`` are the target's, already in the
    source weight's layout (None where no gradient reached the target tensor)."""
    # Each tensor's absolute tolerance scales with it (tolerances.gradient_atol): a fixed one would pass a zeroed
    # target for every gradient smaller than it.
    input_maxima = [tolerances.largest_magnitude([grad]) for grad in source_input_grads]
    weight_maxima = {name: tolerances.largest_magnitude([source_weight_grads.get(name)]) for name in weight_names}
    overall = max([*input_maxima, *weight_maxima.values()], default=0.0)

    def tolerance(own: float) -> tuple[float, float]:
        return tolerances.gradient_atol(own, settings.grad_atol, overall), settings.grad_rtol

    grads: dict[str, Comparison] = {}
    for name, source_grad, target_grad, own in zip(inputs.names, source_input_grads, target_input_grads,
                                                    input_maxima):
        label = input_label(inputs, name)
        if source_grad is None and target_grad is None:
            continue  # integer inputs (ids, masks) have no gradient on either side
        grads[label] = _gradient_comparison(label, label, source_grad, target_grad, tolerance(own))
    for name in weight_names:
        if source_weight_grads.get(name) is None and carried_grads.get(name) is None:
            continue  # no differentiable output depends on it on either side (an argmax model): accounted as unused
        grads[name] = _gradient_comparison(name, (target_names or {}).get(name, name), source_weight_grads.get(name),
                                           carried_grads.get(name), tolerance(weight_maxima[name]))
    return grads


def _gradient_comparison(name: str, target_name: str, source_grad: np.ndarray | None,
                         target_grad: np.ndarray | None, tolerance: tuple[float, float]) -> Comparison:
    atol, rtol = tolerance
    if target_grad is None and source_grad is not None:
        return Comparison(name=name, passed=False, max_abs=float("inf"), max_rel=float("inf"),
                          mismatched=int(source_grad.size), total=int(source_grad.size), atol=atol, rtol=rtol,
                          problem=f"no gradient reaches the target tensor {target_name!r}: it does not take part in "
                                  f"autograd in the target, although the source's output depends on it")
    if source_grad is None:
        # TensorFlow returns None for a variable the output does not depend on: that gradient is zero.
        assert target_grad is not None
        source_grad = np.zeros_like(target_grad)
    assert target_grad is not None
    return compare.compare_arrays(name, target_grad, source_grad, atol=atol, rtol=rtol)
