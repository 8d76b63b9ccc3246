"""One parity check, start to finish: prepare -> run the source -> bridge -> run the target -> compare -> result.

Data flows one way and only numpy crosses between frameworks. The source is always the reference.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity import bridge, compare, float64_referee, tolerances
from pytest_parity.conversion_cache import ConversionCache
from pytest_parity.errors import (
    ConversionError,
    DeviceUnavailable,
    FrameworkNotInstalled,
    ParityError,
    ParityUsageError,
    error_summary,
)
from pytest_parity.frameworks import ModelAdapter, ModelInputs, detect_framework, flatten_inputs, load_adapter
from pytest_parity.result import Comparison, ParityResult, SpeedResult
from pytest_parity.settings import ParitySettings
from pytest_parity.weight_accounting import account_weights, uncompared_section
from pytest_parity.weight_matching import WeightMatch, WeightMatching, match_weights

# A transferred weight must be a copy: float32 resolution is ~6e-8 relative, converters only move elements around.
WEIGHT_ATOL = 0.0
WEIGHT_RTOL = 1e-6
# How many failing tensors of each kind a failure message lists before it summarises the rest.
MAX_LISTED_FAILURES = 8

DEFAULT_TARGET = {"tensorflow": "torch", "torch": "torch"}


def seeded_generator(seed_key: str, seed: int, purpose: str) -> np.random.Generator:
    """The same stream for the same test, seed and purpose on every machine (no process-salted hash())."""
    digest = hashlib.sha256(f"{seed_key}|{seed}|{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def run_check(source_model: Any, target_model: Any, inputs: Any, settings: ParitySettings, device: str,
              seed_key: str, *, speed_gate: bool = True, cache: ConversionCache | None = None) -> ParityResult:
    """One parity check; ``speed_gate=False`` measures speed= without failing on it (--parity-speed=report);
    ``cache``: where convert mode finds and keeps exported ONNX graphs (None: export every time)."""
    source_framework = detect_framework(source_model)
    model_inputs = flatten_inputs(inputs)
    if target_model is not None:
        from pytest_parity.port.run import run_port

        target_framework = detect_framework(target_model)
        for framework in (source_framework, target_framework):
            _require_device(framework, device)
        return run_port(source_model, target_model, source_framework, target_framework, model_inputs, settings,
                        device, seed_key, speed_gate)
    if settings.layouts is not None:
        raise ParityUsageError("layouts=... applies to port mode (parity.check(source, target, ...)); in convert mode "
                               "the converted model takes the source's inputs as they are")
    target_framework = settings.target or DEFAULT_TARGET[source_framework]
    source = load_adapter(source_framework, source_model)
    _require_device(source_framework, device)

    originals: dict[str, np.ndarray] = {}
    if settings.randomize_constant_weights:
        originals = randomize_constant_weights(source, seeded_generator(seed_key, settings.seed, "weights"))
    try:
        return _compare_models(source, model_inputs, target_framework, settings, device, seed_key, speed_gate, cache)
    finally:
        if originals:
            source.assign_weights(originals)


def _require_device(framework: str, device: str) -> None:
    if device != "cuda" or framework != "tensorflow":
        return  # PyTorch's cuda availability was decided at fixture setup
    from pytest_parity import devices
    from pytest_parity.frameworks.tensorflow import import_tensorflow

    reason = devices.cuda_skip_reason_tensorflow(import_tensorflow())
    if reason:
        raise DeviceUnavailable(reason)


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

    A weight that holds exactly the values of another (keras-hub's Gemma starts its key and value kernels equal) is
    moved the same way, all but the first of each group: tf2onnx merges equal tensors into one, and neither weight
    could then be followed.
    """
    originals: dict[str, np.ndarray] = {}
    replacements: dict[str, np.ndarray] = {}
    seen: dict[tuple[str, tuple[int, ...], bytes], str] = {}
    for name, value in adapter.weights().items():
        if value.size == 0:
            continue
        if not _initializer_pattern(value):
            key = (str(value.dtype), value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
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


def _initializer_pattern(value: np.ndarray) -> bool:
    first = value.reshape(-1)[0]
    if np.all(value == first):
        return value.size > 1 or first in (0, 1)
    return bool(np.all((value == 0) | (value == 1)))


def source_run_failure(source: ModelAdapter, inputs: ModelInputs, error: BaseException) -> ParityUsageError:
    """The source failing on the user's inputs is a usage error: say what was given and what the model expects."""
    expected = source.expected_inputs()
    hint = f" The model expects {expected}." if expected else ""
    return ParityUsageError(
        f"Running the source model ({source.description}) on the given inputs ({inputs.describe()}) failed with "
        f"{error_summary(error)}\n"
        f"Check the inputs' number, rank, shape and dtype against the model.{hint}"
    )


def run_source(source: ModelAdapter, inputs: ModelInputs, device: str,
                cotangents: Callable[[list[np.ndarray]], list[np.ndarray | None]] | None) -> Any:
    try:
        return source.run(inputs, device, cotangents)
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
    from pytest_parity import timing

    # CUDA events time the device's work, but only PyTorch has them: a ratio needs the same clock on both sides.
    event_timer = None
    if device == "cuda" and source.framework == target.framework == "torch":
        event_timer = source.cuda_event_timer()  # type: ignore[attr-defined]
    return timing.measure_speed(source.speed_call(source_inputs, device, settings.timed),
                                target.speed_call(target_inputs, device, settings.timed), settings.speed,
                                timed=settings.timed, gated=gated, inconclusive=settings.speed_inconclusive,
                                clocks=timing.clocks_for(device, event_timer))


def refuse_non_finite(tree: Any, what: str, description: str) -> None:
    for path, leaf in compare.flatten_tree(tree, what):
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


def _compare_models(source: ModelAdapter, inputs: ModelInputs, target_framework: str, settings: ParitySettings,
                    device: str, seed_key: str, speed_gate: bool, cache: ConversionCache | None) -> ParityResult:
    from pytest_parity import devices

    source_cotangents, make_cotangents = make_cotangent_source(seed_key, settings.seed)
    with devices.exact_float32({source.framework, target_framework}, device):
        started = time.perf_counter()
        source_outputs, source_input_grads, source_weight_grads = run_source(
            source, inputs, device, make_cotangents if settings.grad else None)
        refuse_non_finite(source_outputs, "output", source.description)
        source_run_s = time.perf_counter() - started

        import_s = bridge.preload_converters(source.framework, target_framework)
        started = time.perf_counter()
        conversion = bridge.convert(source, inputs, target_framework, cache)
        target = conversion.target
        source_weights, target_weights = source.weights(), target.weights()
        matching = match_weights(source_weights, target_weights)
        conversion_s = time.perf_counter() - started

        started = time.perf_counter()
        trainable = set(source.trainable_names())
        grad_matches = [m for m in matching.matches if m.source_name in trainable]
        try:
            target_outputs, target_input_grads, target_weight_grads = target.run(
                inputs, device, source_cotangents if settings.grad else None,
                grad_weights=[m.target_name for m in grad_matches])
        except (ParityUsageError, FrameworkNotInstalled):
            raise
        except Exception as error:
            raise converted_run_failure(conversion.route, target.description, inputs, error) from None
        # A converted model returns its outputs flat, in the same order as the source's leaves.
        target_leaves = [leaf for _, leaf in compare.flatten_tree(target_outputs, "output")]
        source_leaves = compare.flatten_tree(source_outputs, "output")
        if len(target_leaves) == len(source_leaves):
            target_outputs = compare.unflatten_like(source_outputs, target_leaves)
        outputs = compare.compare_trees(target_outputs, source_outputs, atol=settings.atol, rtol=settings.rtol)

        grads = None
        if settings.grad:
            by_target = target_weight_grads or {}
            carried = {m.source_name: _in_source_layout(m, by_target.get(m.target_name)) for m in grad_matches}
            grads = compare_gradients(inputs, source_input_grads or [], target_input_grads or [],
                                               source_weight_grads or {}, carried,
                                               [m.source_name for m in grad_matches], settings,
                                               {m.source_name: m.target_name for m in grad_matches})
        weights = _compare_transferred_weights(source_weights, target_weights, matching)
        run_s = source_run_s + time.perf_counter() - started

        speed = measure_speed_if_asked(settings, speed_gate, device, source, inputs, target, inputs)

    why_not = dict(matching.unmatched)
    if not settings.randomize_constant_weights:
        for name in why_not:
            if _initializer_pattern(source_weights[name]):
                why_not[name] = ("its values are all equal (or only zeros and ones) and randomize_constant_weights="
                                 "False: converters drop an Add of zeros and fold constant factors, so no tensor of "
                                 "the target holds it; leave randomize_constant_weights on to follow it")
    account = account_weights(source.trainable_names(), [m.source_name for m in grad_matches], why_not,
                              source_weight_grads, settings.unmatched_weights, settings.grad, grads)
    result = ParityResult(
        route=conversion.route, device=device, outputs=outputs, grads=grads, weights=weights,
        weight_names={m.source_name: m.target_name for m in matching.matches},
        unmatched_weights=dict(matching.unmatched), weight_account=account, speed=speed, conversion_s=conversion_s,
        run_s=run_s, conversion_cache=conversion.cache_outcome, import_s=import_s)
    if not result.passed:
        # The referee runs the forward graph only: with the outputs agreeing it would call every step faithful and
        # point away from the gradients or weights that differ (named in the message).
        result.diagnosis = (_diagnose(conversion, inputs, source_outputs, target_outputs, settings, device)
                            if not outputs.passed else _backward_diagnosis(result, conversion))
        own_error = float64_referee.source_float32_error(
            source, inputs, device, source_cotangents if settings.grad else None, source_outputs, source_input_grads,
            source_weight_grads, [_input_label(inputs, name) for name in inputs.names],
            (settings.atol, settings.rtol, settings.grad_atol, settings.grad_rtol))
        result.float32_rounding = float32_rounding_hint(result, own_error)
        raise ParityError(failure_message(result, source.description, target.description), result)
    return result


def converted_run_failure(route: str, description: str, inputs: ModelInputs, error: Exception) -> ConversionError:
    """The source ran and the conversion succeeded, yet the converted model fails on the same inputs: a converter gap
    (an op imported with the wrong semantics, a graph input the export should not have had), not the user's model."""
    return ConversionError(
        f"The converted model ({description}, route {route}) failed to run on the inputs the source model ran on "
        f"({inputs.describe()}): {error_summary(error)}\nThis is a gap in the conversion, not in your model. What you "
        f"can do: check the model in port mode against a hand-written twin, and report it with the model's "
        f"definition.", step=f"running the converted model ({route})")


def _input_label(inputs: ModelInputs, name: str) -> str:
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
        label = _input_label(inputs, name)
        if source_grad is None and target_grad is None:
            continue  # integer inputs (ids, masks) have no gradient on either side
        grads[label] = _gradient_comparison(label, label, source_grad, target_grad, tolerance(own))
    for name in weight_names:
        grads[name] = _gradient_comparison(name, (target_names or {}).get(name, name), source_weight_grads.get(name),
                                           carried_grads.get(name), tolerance(weight_maxima[name]))
    return grads


def _in_source_layout(match: WeightMatch, target_value: np.ndarray | None) -> np.ndarray | None:
    return None if target_value is None else match.gradient_to_source_layout(target_value)


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


def _compare_transferred_weights(source_values: dict[str, np.ndarray], target_values: dict[str, np.ndarray],
                                 matching: WeightMatching) -> dict[str, Comparison]:
    # The values read for matching: a check changes no weight between conversion and here.
    return {
        match.source_name: compare.compare_arrays(
            match.source_name, match.to_source_layout(target_values[match.target_name]),
            source_values[match.source_name], atol=WEIGHT_ATOL, rtol=WEIGHT_RTOL)
        for match in matching.matches
    }


def _diagnose(conversion: bridge.Conversion, inputs: ModelInputs, source_outputs: Any, target_outputs: Any,
              settings: ParitySettings, device: str) -> str | None:
    """Which step diverged, with onnxruntime running the ONNX graph as a neutral referee (on the check's device)."""
    try:
        referee = bridge.run_onnxruntime(conversion.onnx_model, inputs, device)
    except Exception as error:
        return f"onnxruntime could not run the exported graph ({type(error).__name__}), so no step is singled out"
    source_leaves = [leaf for _, leaf in compare.flatten_tree(source_outputs, "output")]
    target_leaves = [leaf for _, leaf in compare.flatten_tree(target_outputs, "output")]
    if len(referee) != len(source_leaves) or len(referee) != len(target_leaves):
        return None
    export_ok = compare.compare_trees(referee, source_leaves, atol=settings.atol, rtol=settings.rtol)
    import_ok = compare.compare_trees(target_leaves, referee, atol=settings.atol, rtol=settings.rtol)
    export_step, import_step = conversion.route.split(" -> ")[0], conversion.route.split(" -> ")[-1]
    verdict = (f"source vs onnxruntime: max abs {export_ok.max_abs:.3g} ({'agree' if export_ok.passed else 'differ'});"
               f" onnxruntime vs target: max abs {import_ok.max_abs:.3g} "
               f"({'agree' if import_ok.passed else 'differ'})")
    if device != "cpu":
        # Where the referee ran matters on a GPU: the CPU provider does not share the GPU's rounding.
        verdict = f"[{referee.describe()}] {verdict}"
    if export_ok.passed != import_ok.passed:
        failing = f"ONNX -> {import_step} import" if export_ok.passed else f"{export_step} -> ONNX export"
        return f"{verdict} -> the {failing} step diverged"
    # Both within (or both outside) tolerance: point at the step that contributes most, when one clearly does.
    if import_ok.max_abs > 10 * export_ok.max_abs:
        return f"{verdict} -> most of the difference comes from the ONNX -> {import_step} import step"
    if export_ok.max_abs > 10 * import_ok.max_abs:
        return f"{verdict} -> most of the difference comes from the {export_step} -> ONNX export step"
    return verdict


def _backward_diagnosis(result: ParityResult, conversion: bridge.Conversion) -> str | None:
    """For a failure with the outputs agreeing: what the graph shows about the backward pass, when it shows anything."""
    failing = [c.name for c in (result.grads or {}).values() if not c.passed]
    if not failing:
        return None
    shared = bridge.weights_copied_per_reader(conversion.onnx_model)
    text = ("the outputs agree, so the forward graph was carried across faithfully; the difference is in the backward "
            "pass of the converted model")
    if shared:
        examples = ", ".join(f"{name!r} ({count} readers)" for name, count in list(shared.items())[:3])
        text += (f". {len(shared)} weight tensor(s) of the ONNX graph are read by several nodes ({examples}), among "
                 f"them a ConvTranspose or normalisation whose onnx2torch converter gives each reader its own copy, "
                 f"which splits the weight's gradient between the copies: a likely cause")
    return text


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
        from pytest_parity import timing

        lines.append(timing.describe(result.speed))
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


# Gradients each differing in fewer than this share of their elements, with the outputs agreeing, are the signature of
# a near-tie at a non-differentiable point rather than of a wrong layer (which changes most elements).
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


def float32_rounding_hint(result: ParityResult, own_error: float64_referee.Float32Error | None) -> str | None:
    """Every failing tensor differs from the source by no more than the float32 source differs from its own float64
    run (times ROUNDING_FACTOR): the failure is the model's float32 rounding, not the conversion. Say so, with the
    tolerances that would fit."""
    if own_error is None or any(not c.passed for c in result.weights.values()):
        return None  # a transferred weight that differs is a defect, whatever the rounding
    failing = _failing_outputs_and_gradients(result)
    if not failing or any(c.problem or c.name not in own_error.max_abs
                          or c.max_abs > float64_referee.ROUNDING_FACTOR * own_error.max_abs[c.name]
                          for c in failing):
        return None
    worst = max(failing, key=lambda c: c.max_abs)
    gradients_fail = any(not c.passed for c in (result.grads or {}).values())
    outputs_fail = bool(result.outputs.failures)
    knobs = [knob for knob, failed in (("atol", outputs_fail), ("grad_atol", gradients_fail)) if failed]
    suggested = 10.0 ** np.ceil(np.log10(2 * max(c.max_abs for c in failing)))
    return (f"the differences are float32 rounding of this model, not the conversion: the source itself, run in "
            f"float64, differs from its float32 run by up to {own_error.max_abs[worst.name]:.3g} in {worst.name!r}, "
            f"where the converted model differs by {worst.max_abs:.3g} (and so for every failing tensor), and "
            f"{own_error.outside_tolerance} of its {own_error.total} elements fall outside these tolerances in "
            f"float32 alone. What you can do: loosen {' and '.join(knobs)} for this model (about {suggested:g} would "
            f"fit), or check it in float64.")


def subgradient_hint(result: ParityResult) -> str | None:
    """Outputs agree and only a few elements of each differing gradient differ: likely a near-tie, not a defect.

    At a MaxPool window holding two values equal to within float rounding, or a ReLU input within rounding of 0, the
    two frameworks' few-ulp differences pick different subgradients, so the gradient flows to a different element.
    With random weights this happened in about 2% of checks of a correct CIFAR CNN port (3 of ~140 seeds).
    """
    if not result.outputs.passed or not result.grads:
        return None
    # Input gradients, or in a deep model only weight gradients (a ReLU near-tie deep inside is diluted on its way
    # back to the input): the sign is the same, few elements of each differing tensor.
    failing = [c for c in result.grads.values() if not c.passed]
    if not failing or any(c.problem or c.mismatched > SPARSE_GRADIENT_SHARE * c.total for c in failing):
        return None
    worst = max(failing, key=lambda c: c.mismatched / max(c.total, 1))
    return (f"the outputs agree and only {worst.mismatched} of {worst.total} elements of {worst.name!r} differ: "
            f"typical of a near-tie at a non-differentiable point (a max-pool window holding two near-equal values, a "
            f"ReLU input within rounding of 0), where each framework picks a different subgradient; a wrong layer "
            f"changes most elements. Check with another seed= or other inputs: a near-tie moves, a defect stays.")
