"""The failure message: what differs, with figures, then the diagnosis and the hints that name a likely cause."""

from __future__ import annotations

import numpy as np

from pytest_parity.result import Comparison, ParityResult
from pytest_parity.verdict import compare, float64_referee, timing
from pytest_parity.verdict.weight_accounting import uncompared_section

# How many failing tensors of each kind a failure message lists before it summarises the rest.
MAX_LISTED_FAILURES = 8


def _section(title: str, kind: str, comparisons: list[Comparison], aliases: dict[str, str]) -> list[str]:
    failing = [c for c in comparisons if not c.passed]
    if not failing:
        return []
    lines = [f"{title}: {len(failing)} of {len(comparisons)} tensor(s) differ"]
    for comparison in failing[:MAX_LISTED_FAILURES]:
        text = compare.describe(kind, comparison)
        alias = aliases.get(comparison.name)
        if alias and alias != comparison.name:
            text = text.replace(f"{comparison.name!r}:", f"{comparison.name!r} (target: {alias!r}):", 1)
        lines.extend("  " + line for line in text.splitlines())
    if len(failing) > MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(failing) - MAX_LISTED_FAILURES} more")
    return lines


def failure_message(result: ParityResult, source_description: str, target_description: str) -> str:
    lines = [f"parity check failed: {result.route} on {result.device} "
             f"({source_description} vs {target_description})"]
    if result.outputs.passed:
        lines.append(f"outputs: agree within tolerance (max abs {result.outputs.max_abs:.3g}, atol "
                     f"{result.outputs.atol:g}, rtol {result.outputs.rtol:g})")
    lines += _section("outputs", "output", list(result.outputs.leaves.values()), {})
    lines += _section("transferred weights", "weight", list(result.weights.values()), result.weight_names)
    lines += _section("gradients", "gradient", list((result.grads or {}).values()), result.weight_names)
    if result.weight_account is not None:
        lines += uncompared_section(result.weight_account, MAX_LISTED_FAILURES)
    if result.speed is not None and (not result.speed.passed or result.speed.inconclusive):
        lines.append(timing.describe(result.speed))
    if result.activations is not None and not result.activations.passed:
        failing = result.activations.failures()
        lines.append(f"activations: {len(failing)} of {len(result.activations.probes)} paired activation(s) compute "
                     f"different functions")
        lines.extend(f"  {probe.cause}" for probe in failing)
    if result.diagnosis:
        lines.append(f"diagnosis: {result.diagnosis}")
    subgradient = subgradient_hint(result)
    if subgradient:
        lines.append(f"hint: {subgradient}")
    scale = scale_hint(result)
    if scale:
        lines.append(f"hint (scale): {scale}")
    if result.float32_rounding:
        lines.append(f"hint (float32 rounding): {result.float32_rounding}")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)


# Gradients differing, together, in fewer than this share of their elements, with the outputs agreeing, are the
# signature of a near-tie at a non-differentiable point rather than of a wrong layer (which changes most elements).
SPARSE_GRADIENT_SHARE = 0.05


# Differences no larger than this share of a tensor's largest value are float32 rounding in sums at that scale.
ROUNDING_SHARE = 1e-4
# From this magnitude on, fixed absolute tolerances (grad_atol 1e-4) sit below float32 rounding of the sums.
LARGE_MAGNITUDE = 1e3


def _failing_outputs_and_gradients(result: ParityResult) -> list[Comparison]:
    return [*result.outputs.failures, *(c for c in (result.grads or {}).values() if not c.passed)]


def scale_hint(result: ParityResult) -> str | None:
    """Every differing tensor differs by rounding-sized amounts of a very large scale: say so, and where it comes from.

    A model whose activations grow far from unit scale (torchvision's Inception3 at its fresh initialisation reaches
    outputs of 2e8 and gradients of 4e8) has float32 rounding errors of tens or thousands in absolute terms, which
    elementwise tolerances read as differences; summing in another order (a converted graph) makes them differ."""
    failing = _failing_outputs_and_gradients(result)
    if not failing or any(c.problem or c.source_max_abs < LARGE_MAGNITUDE
                          or c.max_abs > ROUNDING_SHARE * c.source_max_abs for c in failing):
        return None
    worst = max(failing, key=lambda c: c.max_abs / c.source_max_abs)
    share = worst.max_abs / worst.source_max_abs
    return (f"every difference is float32 rounding at the scale of its tensor: {worst.name!r} reaches "
            f"{worst.source_max_abs:.3g} and differs by at most {worst.max_abs:.3g}, {share:.1g} of that. Values "
            f"this far from unit scale (check the model's initialisation and normalisation) make "
            f"absolute and elementwise tolerances meaningless; compare at a realistic scale, or set the tolerances "
            f"for it (grad_atol, atol)")


def _float32_step(magnitude: float) -> float:
    """The spacing of float32 values at ``magnitude`` (one unit in the last place)."""
    return float(np.spacing(np.float32(abs(magnitude))))


def float32_rounding_hint(result: ParityResult, own_error: float64_referee.Float32Error | None) -> str | None:
    """Every failing tensor differs from the source by no more than the float32 source differs from its own float64
    run (times ROUNDING_FACTOR): the failure is the model's float32 rounding, not the conversion. Say so, with the
    tolerances that would fit.

    The source's own error is measured against float64 and can be a fraction of one float32 step at the tensor's
    scale, while two float32 runs differ by whole steps: an attention stack's norm bias (values near 8) had an own
    error of 3.8e-7 and differed from its conversion by one step, 9.5e-7 (ratio 2.5, which failed this hint on some
    machines and not on others). So the allowance is never below one step at the tensor's largest value; a defect of
    1e-5 on unit-scale outputs (steps of 4.8e-7) stays far outside it."""
    if own_error is None or any(not c.passed for c in result.weights.values()):
        return None  # a transferred weight that differs is a defect, whatever the rounding
    failing = _failing_outputs_and_gradients(result)
    if not failing or any(c.problem or c.name not in own_error.max_abs
                          or c.max_abs > float64_referee.ROUNDING_FACTOR * max(own_error.max_abs[c.name],
                                                                                _float32_step(c.source_max_abs))
                          for c in failing):
        return None
    worst = max(failing, key=lambda c: c.max_abs)
    gradients_fail = any(not c.passed for c in (result.grads or {}).values())
    outputs_fail = bool(result.outputs.failures)
    knobs = [knob for knob, failed in (("atol", outputs_fail), ("grad_atol", gradients_fail)) if failed]
    suggested = 10.0 ** np.ceil(np.log10(2 * max(c.max_abs for c in failing)))
    return (f"the differences are float32 rounding of this model, not the conversion: {own_error.witness}, run in "
            f"float64, differs from its float32 run by up to {own_error.max_abs[worst.name]:.3g} in {worst.name!r}, "
            f"where the converted model differs by {worst.max_abs:.3g} (and so for every failing tensor), and "
            f"{own_error.outside_tolerance} of its {own_error.total} elements fall outside these tolerances in "
            f"float32 alone. What you can do: loosen {' and '.join(knobs)} for this model (about {suggested:g} would "
            f"fit), or check it in float64.")


def subgradient_hint(result: ParityResult) -> str | None:
    """Outputs agree and only a few elements of the differing gradients differ: likely a near-tie, not a defect.

    At a MaxPool window holding two values equal to within float rounding, or a ReLU input within rounding of 0, the
    two frameworks' few-ulp differences pick different subgradients, so the gradient flows to a different element.
    With random weights this happened in about 2% of checks of a correct CIFAR CNN port (3 of ~140 seeds).

    The share is taken over the differing tensors together: a flip deep inside a network reaches a few elements of
    every weight gradient upstream, which can be a fifth of a small BatchNorm beta (InceptionResNetV2: 35 of 192)
    while it is well under 1% of the kernels around it.
    """
    if not result.outputs.passed or not result.grads:
        return None
    # Input gradients, or in a deep model only weight gradients (a ReLU near-tie deep inside is diluted on its way
    # back to the input): the sign is the same, few elements of the differing tensors.
    failing = [c for c in result.grads.values() if not c.passed and c.name not in result.explained_gradients]
    mismatched, total = sum(c.mismatched for c in failing), sum(c.total for c in failing)
    if not failing or any(c.problem for c in failing) or mismatched > SPARSE_GRADIENT_SHARE * total:
        return None
    worst = max(failing, key=lambda c: c.mismatched / max(c.total, 1))
    where = (f"{worst.mismatched} of {worst.total} elements of {worst.name!r} differ" if len(failing) == 1 else
             f"{mismatched} of {total} elements of the {len(failing)} differing gradients differ (most in "
             f"{worst.name!r}: {worst.mismatched} of {worst.total})")
    return (f"the outputs agree and only {where}: "
            f"typical of a near-tie at a non-differentiable point (a max-pool window holding two near-equal values, a "
            f"ReLU input within rounding of 0), where each framework picks a different subgradient; a wrong layer "
            f"changes most elements. Check with another seed= or other inputs: a near-tie moves, a defect stays.")


def training_failure_message(result: ParityResult, source_description: str, target_description: str) -> str:
    """A failed training check: the configuration differences, the first divergence, then the steps that failed."""
    figures = result.training
    assert figures is not None
    lines = [f"training parity failed: {result.route} on {result.device} ({source_description} vs "
             f"{target_description}), {len(figures.steps)} step(s), {figures.tensors} tensor(s) compared per step"]
    if figures.configuration:
        lines.append(f"configuration: {len(figures.configuration)} difference(s) (each fails the check, even where the "
                     f"steps taken cannot show it yet):")
        lines.extend(f"  - {entry}" for entry in figures.configuration)
    if figures.first_divergence:
        lines.append(f"first divergence: {figures.first_divergence}")
    lines.append("losses (source / target): " + ", ".join(
        f"{step.step}: {step.source_loss:.6g} / {step.target_loss:.6g}" for step in figures.steps))
    failing_steps = [step for step in figures.steps if not step.passed]
    for step in failing_steps[:2]:
        comparisons = [step.loss, *step.weights.values(), *step.updates.values()]
        lines += _section(f"step {step.step}", "weight", comparisons, result.weight_names)
    if len(failing_steps) > 2:
        lines.append(f"... and {len(failing_steps) - 2} later failing step(s): "
                     + ", ".join(str(step.step) for step in failing_steps[2:]))
    if result.weight_account is not None:
        lines += uncompared_section(result.weight_account, MAX_LISTED_FAILURES)
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)
