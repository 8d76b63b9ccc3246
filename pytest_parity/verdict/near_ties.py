"""Near-ties: a gradient difference that comes from the inputs' luck, not from the models, is confirmed by moving the
inputs and checking again.

At a MaxPool window holding two values equal to within float rounding, or a ReLU input within rounding of 0, the two
frameworks' few-ulp differences pick different subgradients, so the gradient flows to a different element: the
outputs agree, a handful of elements of the input gradient differ (and of the weight gradients they feed; deep in a
model only the weight gradients, the difference diluted on its way back to the input). With random weights
and inputs this hits about 2% of checks of a correct CIFAR CNN port, and whether a given near-tie flips depends on
rounding that changes with thread scheduling, so a CI gate on a correct port would fail now and then.

A defect stays when the inputs move; a near-tie does not. So when a failed check has exactly that signature
(``messages.subgradient_hint``), it is run again with every float input moved by a seeded relative 1e-3, which
breaks ties of 1e-7 while leaving the check's meaning unchanged, and the elements that differed are looked at
there. The question is element by element, not "does the re-check pass": a large network (keras.applications'
InceptionV3, InceptionResNetV2) has near-ties on almost any inputs, so the moved inputs bring their own, elsewhere.
Every element that differed on the given inputs must agree on some moved inputs (up to MAX_RECHECKS draws); then the
check passes with the given inputs' figures, those comparisons marked with their near-ties
(``Comparison.near_ties``) and a note that says so. Every element was then compared with the check's tolerance and
agreed, on the given inputs or, for the near-ties, on inputs 1e-3 away; a zeroed, halved or wrongly routed gradient
differs at the same elements on any inputs and fails. If an element differs again each time, or the moved inputs
make the check fail in anything but gradients, the first failure stands and says so. ``near_tie_retry=False``
switches this off.

Why a move of 1e-3 tells them apart: a systematic error (a wrong op, a gradient off by a factor, an approximate GELU)
changes by about 1e-3 of itself, so the elements it pushes over the tolerance are the same ones again; ties and
float32 rounding live at 1e-7 and are drawn anew. So float32 rounding that crosses the tolerance at an element or two
moves with the inputs as well (torchvision's swin_v2_t: 1 element of a 96-element bias, 1.4e-3 off where the
model's own float64 run is 1.3e-3 away), and passes the same way; the note names both causes rather than guessing
which one it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from pytest_parity.errors import ParityError
from pytest_parity.result import Comparison, ParityResult
from pytest_parity.verdict.messages import subgradient_hint

# Relative size of the move: far above float32 rounding (1e-7), far below anything that changes what a check means.
INPUT_MOVE = 1e-3
# Moved-input draws at most. One settles a small model; a large one can meet a fresh near-tie at an element that
# differed before (a BatchNorm beta that a flip anywhere downstream touches), which a second draw settles: of the 7
# coverage-suite checks that pass with near-ties, 5 settled on the first draw, torchvision inception_v3 and swin_v2_b
# on the second. A defect differs at the same elements on every draw: a draw that confirms none of them ends the
# re-check.
MAX_RECHECKS = 2


def check_confirming_near_ties(attempt: Callable[[Any], ParityResult], inputs: Any, enabled: bool,
                               generator: np.random.Generator) -> ParityResult:
    """``attempt(inputs)``; a failure with the near-tie signature is re-checked on moved inputs, element by element."""
    try:
        return attempt(inputs)
    except ParityError as failure:
        first = failure.result
        if not enabled or first is None or not _only_gradients_failed(first) or subgradient_hint(first) is None:
            raise
        unconfirmed = _differing_elements(first)
        if unconfirmed is None:
            raise
        first_figures = _gradient_figures(first)
        draws = 0
        while unconfirmed and draws < MAX_RECHECKS:
            moved = move_float_inputs(inputs, generator)
            if moved is None:
                raise
            draws += 1
            try:
                again = attempt(moved)
            except ParityError as moved_failure:
                if moved_failure.result is None or not _only_gradients_failed(moved_failure.result):
                    what = _describe_failure(moved_failure.result)
                    raise _not_a_near_tie(failure, f"with every float input moved by a relative {INPUT_MOVE:g} the "
                                                   f"check fails in more than gradients ({what})") from None
                again = moved_failure.result
            before = sum(indices.size for indices in unconfirmed.values())
            unconfirmed = _still_differing(unconfirmed, again)
            if sum(indices.size for indices in unconfirmed.values()) == before:
                break  # not one element moved away: a defect, which the next draw would only repeat
        if unconfirmed:
            still = ", ".join(f"{name!r} {indices.size} of {first.grads[name].total}"  # type: ignore[index]
                              for name, indices in list(unconfirmed.items())[:3])
            raise _not_a_near_tie(failure, f"with every float input moved by a relative {INPUT_MOVE:g} the gradients "
                                           f"still differ at the same elements ({still}"
                                           f"{', ...' if len(unconfirmed) > 3 else ''}; {draws} draw(s))") from None
        confirmed = {name: replace(c, passed=True, near_ties=c.mismatched)
                     for name, c in (first.grads or {}).items() if not c.passed}
        noun = "draw" if draws == 1 else "draws"
        note = (f"near-tie: on the given inputs {first_figures}, with the outputs agreeing; each of those elements "
                f"agreed on inputs moved by a relative {INPUT_MOVE:g} ({draws} {noun}): differences that move with "
                f"the inputs, as near-ties at a kink do (a ReLU input within rounding of 0, a max-pool window of "
                f"near-equal values, where each framework picks its own subgradient) and float32 rounding at the "
                f"edge of the tolerance; a defect would not. The figures are the given inputs' (near_tie_retry=False "
                f"turns this off)")
        return replace(first, grads={**(first.grads or {}), **confirmed}, diagnosis=None, float32_rounding=None,
                       notes=[*first.notes, note])


def _differing_elements(result: ParityResult) -> dict[str, np.ndarray] | None:
    """Failing gradient name -> flat indices of its differing elements; None when some failing gradient has none
    recorded (it could not be compared element by element, or too many elements differ)."""
    differing = {}
    for name, comparison in (result.grads or {}).items():
        if comparison.passed:
            continue
        if comparison.problem or comparison.mismatched_at is None:
            return None
        differing[name] = comparison.mismatched_at
    return differing


def _still_differing(unconfirmed: dict[str, np.ndarray], again: ParityResult) -> dict[str, np.ndarray]:
    """The elements that differ again on the moved inputs: where the tensor fails there, at those same indices."""
    still = {}
    for name, indices in unconfirmed.items():
        comparison: Comparison | None = (again.grads or {}).get(name)
        if comparison is not None and comparison.passed:
            continue
        if comparison is None or comparison.mismatched_at is None:
            still[name] = indices  # not compared element by element there: nothing confirmed
            continue
        common = np.intersect1d(indices, comparison.mismatched_at, assume_unique=True)
        if common.size:
            still[name] = common
    return still


def _not_a_near_tie(failure: ParityError, finding: str) -> ParityError:
    # The re-check answers the near-tie hint's question, so its answer replaces that hint.
    lines = [line for line in str(failure).splitlines() if not line.startswith("hint: ")]
    lines.append(f"near-tie re-check: {finding}: not a near-tie")
    return ParityError("\n".join(lines), failure.result).with_traceback(None)


def _describe_failure(result: ParityResult | None) -> str:
    if result is None:
        return "it failed"
    if not result.outputs.passed:
        return f"the outputs differ, max abs {result.outputs.max_abs:.3g}"
    failing = [what for what, failed in (
        ("a transferred weight differs", any(not c.passed for c in result.weights.values())),
        ("weights went uncompared", result.weight_account is not None and bool(result.weight_account.uncompared)),
        ("the speed gate", result.speed is not None and not result.speed.passed),
        ("the diagnosis explains the gradients", bool(result.explained_gradients))) if failed]
    return ", ".join(failing) or "it failed"


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
    # A failure the diagnosis already explained (port mode's padding rows) is not a near-tie either.
    return (result.outputs.passed and not result.explained_gradients and all(c.passed for c in result.weights.values())
            and (result.speed is None or result.speed.passed) and not result.drift
            and (result.weight_account is None or not result.weight_account.uncompared))


def _gradient_figures(result: ParityResult) -> str:
    failing = [c for c in (result.grads or {}).values() if not c.passed]
    if not failing:
        return "the gradients agree"
    listed = ", ".join(f"{c.name!r} {c.mismatched} of {c.total} elements, max abs {c.max_abs:.3g}"
                       for c in failing[:3])
    return f"{len(failing)} gradient(s) differed: {listed}" + (", ..." if len(failing) > 3 else "")
