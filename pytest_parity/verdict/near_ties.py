"""Near-ties: a gradient difference that comes from the inputs' luck, not from the models, is confirmed by moving the
inputs and checking again.

At a MaxPool window holding two values equal to within float rounding, or a ReLU input within rounding of 0, the two
frameworks' few-ulp differences pick different subgradients, so the gradient flows to a different element: the
outputs agree, a handful of elements of the input gradient differ (and of the weight gradients they feed; deep in a
model only the weight gradients, the difference diluted on its way back to the input). With random weights
and inputs this hits about 2% of checks of a correct CIFAR CNN port, and whether a given near-tie flips depends on
rounding that changes with thread scheduling, so a CI gate on a correct port would fail now and then.

A defect stays when the inputs move; a near-tie does not. So when a failed check has exactly that signature
(``messages.subgradient_hint``), it is run once more with every float input moved by a seeded relative 1e-3, which
breaks ties of 1e-7 while leaving the check's meaning unchanged. If the re-check passes, its result is the check's,
with a note quoting the first figures; if it fails too, the first failure stands and says so. ``near_tie_retry=False``
switches this off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity.errors import ParityError
from pytest_parity.result import ParityResult
from pytest_parity.verdict.messages import subgradient_hint

# Relative size of the move: far above float32 rounding (1e-7), far below anything that changes what a check means.
INPUT_MOVE = 1e-3


def check_confirming_near_ties(attempt: Callable[[Any], ParityResult], inputs: Any, enabled: bool,
                               generator: np.random.Generator) -> ParityResult:
    """``attempt(inputs)``; a failure with the near-tie signature is re-checked once on moved inputs."""
    try:
        return attempt(inputs)
    except ParityError as failure:
        first = failure.result
        if not enabled or first is None or not _only_gradients_failed(first) or subgradient_hint(first) is None:
            raise
        moved = move_float_inputs(inputs, generator)
        if moved is None:
            raise
        first_figures = _gradient_figures(first)
        try:
            second = attempt(moved)
        except ParityError as second_failure:
            second_figures = _gradient_figures(second_failure.result) if second_failure.result else "it failed"
            # The re-check answers the near-tie hint's question, so its answer replaces that hint.
            lines = [line for line in str(failure).splitlines() if not line.startswith("hint: ")]
            lines.append(f"near-tie re-check: with every float input moved by a relative {INPUT_MOVE:g} the "
                         f"gradients still differ ({second_figures}): not a near-tie")
            raise ParityError("\n".join(lines), first).with_traceback(None) from None
        second.notes.append(f"near-tie: on the given inputs {first_figures}, with the outputs agreeing; re-checked "
                            f"with every float input moved by a relative {INPUT_MOVE:g}, which agrees: the figures "
                            f"are the re-check's (near_tie_retry=False turns this off)")
        return second


def move_float_inputs(inputs: Any, generator: np.random.Generator) -> Any:
    """The inputs with each floating-point array scaled elementwise by 1 + 1e-3 * N(0, 1); None when none is float
    (integer token ids cannot be moved without changing what they mean)."""
    moved_any = False

    def move(value: Any) -> Any:
        nonlocal moved_any
        if isinstance(value, dict):
            return {key: move(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(move(item) for item in value)
        array = np.asarray(value)
        if not np.issubdtype(array.dtype, np.floating):
            return value
        moved_any = True
        scale = 1.0 + INPUT_MOVE * generator.standard_normal(array.shape)
        return (array * scale).astype(array.dtype)

    moved = move(inputs)
    return moved if moved_any else None


def _only_gradients_failed(result: ParityResult) -> bool:
    return (result.outputs.passed and all(c.passed for c in result.weights.values())
            and (result.speed is None or result.speed.passed) and not result.drift
            and (result.weight_account is None or not result.weight_account.uncompared))


def _gradient_figures(result: ParityResult) -> str:
    failing = [c for c in (result.grads or {}).values() if not c.passed]
    if not failing:
        return "the gradients agree"
    listed = ", ".join(f"{c.name!r} {c.mismatched} of {c.total} elements, max abs {c.max_abs:.3g}"
                       for c in failing[:3])
    return f"{len(failing)} gradient(s) differed: {listed}" + (", ..." if len(failing) > 3 else "")
