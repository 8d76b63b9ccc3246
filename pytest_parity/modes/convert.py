"""Convert mode: one model against its own conversion (source -> ONNX -> target), start to finish:
run the source -> bridge -> run the target -> compare outputs, gradients and carried weights -> verdict.

Data flows one way and only numpy crosses between frameworks. The source is always the reference.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from pytest_parity import trees
from pytest_parity.bridge import pipeline as bridge
from pytest_parity.bridge.cache import ConversionCache
from pytest_parity.bridge.weight_matching import WeightMatch, WeightMatching, match_weights
from pytest_parity.errors import FrameworkNotInstalled, ParityError, ParityUsageError
from pytest_parity.frameworks import ModelAdapter, ModelInputs, devices, left_out_note
from pytest_parity.frameworks.adapters import load_adapter
from pytest_parity.modes.steps import (
    checked_model,
    converted_run_failure,
    initializer_pattern,
    input_notes,
    make_cotangent_source,
    measure_speed_if_asked,
    refuse_if_every_gradient_is_zero,
    refuse_if_not_a_function_of_its_inputs,
    refuse_non_finite,
    run_source,
)
from pytest_parity.result import Comparison, ParityResult
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import compare, float64_referee
from pytest_parity.verdict.gradients import compare_gradients, input_label
from pytest_parity.verdict.messages import failure_message, float32_rounding_hint
from pytest_parity.verdict.weight_accounting import account_weights, unmatched_reasons

# A transferred weight must be a copy: float32 resolution is ~6e-8 relative, converters only move elements around.
WEIGHT_ATOL = 0.0
WEIGHT_RTOL = 1e-6
# What convert mode converts to when the marker names no target.
DEFAULT_TARGET = {"tensorflow": "torch", "torch": "torch"}


def run_convert(source_model: Any, source_framework: str, inputs: ModelInputs, settings: ParitySettings, device: str,
                seed_key: str, speed_gate: bool, cache: ConversionCache | None) -> ParityResult:
    for name in ("layouts", "input_names", "output_names"):
        if getattr(settings, name) is not None:
            raise ParityUsageError(f"{name}=... applies to port mode (parity.check(source, target, ...)); in convert "
                                   f"mode the converted model takes the source's inputs and gives its outputs as "
                                   f"they are")
    if settings.target_weights != "carried":
        raise ParityUsageError(f"target_weights={settings.target_weights!r} applies to port mode (parity.check(source, "
                               f"target, ...)), where the target is a model you loaded weights into; in convert mode "
                               f"the converted model's weights come from the conversion")
    target_framework = settings.target or DEFAULT_TARGET[source_framework]
    source = load_adapter(source_framework, source_model)
    with checked_model(source, inputs, device, settings, seed_key) as prepared:
        return compare_models(source, prepared, target_framework, settings, device, seed_key, speed_gate, cache)


def compare_models(source: ModelAdapter, inputs: ModelInputs, target_framework: str, settings: ParitySettings,
                    device: str, seed_key: str, speed_gate: bool, cache: ConversionCache | None) -> ParityResult:
    source_cotangents, make_cotangents = make_cotangent_source(seed_key, settings.seed)
    with devices.exact_float32({source.framework, target_framework}, device):
        started = time.perf_counter()
        source_outputs, source_input_grads, source_weight_grads = run_source(
            source, inputs, device, make_cotangents if settings.grad else None)
        refuse_non_finite(source_outputs, "output", source.description)
        if settings.grad:
            refuse_if_every_gradient_is_zero(source_input_grads, source_weight_grads, source_outputs,
                                             source.description)
        source_run_s = time.perf_counter() - started

        import_s = bridge.preload_converters(source.framework, target_framework)
        started = time.perf_counter()
        source_weights = source.weights()
        trainable = set(source.trainable_names())
        conversion, matching, export_note = _convert_following_every_weight(source, inputs, target_framework, cache,
                                                                            source_weights, trainable)
        target = conversion.target
        target_weights = target.weights()
        conversion_s = time.perf_counter() - started

        started = time.perf_counter()
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
        target_leaves = [leaf for _, leaf in trees.flatten_tree(target_outputs, "output")]
        source_leaves = trees.flatten_tree(source_outputs, "output")
        if len(target_leaves) == len(source_leaves):
            target_outputs = trees.unflatten_like(source_outputs, target_leaves)
        outputs = compare.compare_trees(target_outputs, source_outputs, atol=settings.atol, rtol=settings.rtol)

        grads = None
        near_zero = None
        if settings.grad:
            by_target = target_weight_grads or {}
            carried = {m.source_name: _in_source_layout(m, by_target.get(m.target_name)) for m in grad_matches}
            grads = compare_gradients(inputs, source_input_grads or [], target_input_grads or [],
                                               source_weight_grads or {}, carried,
                                               [m.source_name for m in grad_matches], settings,
                                               {m.source_name: m.target_name for m in grad_matches})
            near_zero = _judge_near_zero_in_float64(grads, source, target, inputs, device, source_cotangents,
                                                    grad_matches, source_input_grads, target_input_grads,
                                                    source_weight_grads, carried, settings.grad_atol)
            grads = near_zero.grads
        weights = _compare_transferred_weights(source_weights, target_weights, matching)
        run_s = source_run_s + time.perf_counter() - started

        speed = measure_speed_if_asked(settings, speed_gate, device, source, inputs, target, inputs)

    why_not = dict(matching.unmatched)
    if not settings.randomize_constant_weights:
        for name in why_not:
            if initializer_pattern(source_weights[name]):
                why_not[name] = ("its values are all equal (or only zeros and ones) and randomize_constant_weights="
                                 "False: converters drop an Add of zeros and fold constant factors, so no tensor of "
                                 "the target holds it; leave randomize_constant_weights on to follow it")
    account = account_weights(source.trainable_names(), [m.source_name for m in grad_matches], why_not,
                              source_weight_grads, settings.unmatched_weights, settings.grad, grads,
                              near_zero.zero_in_exact_arithmetic if near_zero else ())
    result = ParityResult(
        route=conversion.route, device=device, outputs=outputs, grads=grads, weights=weights,
        weight_names={m.source_name: m.target_name for m in matching.matches},
        unmatched_weights=unmatched_reasons(dict(matching.unmatched), account, source.trainable_names()),
        weight_account=account, speed=speed, conversion_s=conversion_s,
        run_s=run_s, conversion_cache=conversion.cache_outcome, import_s=import_s,
        notes=[*input_notes(inputs), *left_out_note(source.left_out_outputs, source.description),
               *([export_note] if export_note else [])])
    if not result.passed:
        refuse_if_not_a_function_of_its_inputs(source, inputs, device, source_outputs,
                                               source_cotangents if settings.grad else None)
        # The referee runs the forward graph only: with the outputs agreeing it would call every step faithful and
        # point away from the gradients or weights that differ (named in the message).
        result.diagnosis = (_diagnose(conversion, inputs, source_outputs, target_outputs, settings, device)
                            if not outputs.passed else _backward_diagnosis(result, conversion))
        labels = [input_label(inputs, name) for name in inputs.names]
        tolerances = (settings.atol, settings.rtol, settings.grad_atol, settings.grad_rtol)
        cotangents = source_cotangents if settings.grad else None
        if source.framework == "torch":
            own_error = float64_referee.source_float32_error(source, inputs, device, cotangents, source_outputs,
                                                             source_input_grads, source_weight_grads, labels,
                                                             tolerances)
        else:  # a Keras model has no float64 run here: the converted model, the same function, stands witness
            own_error = float64_referee.source_float32_error(
                target, inputs, device, cotangents, target_outputs, target_input_grads, target_weight_grads, labels,
                tolerances, witness="the converted model (the same function, in PyTorch)",
                source_names={m.target_name: m.source_name for m in grad_matches})
        result.float32_rounding = float32_rounding_hint(result, own_error)
        if result.float32_rounding and result.diagnosis and "diverged" in result.diagnosis:
            # The referee's tolerance-based reading blames a step; the float64 run shows the difference is rounding.
            result.diagnosis += " (within float32 rounding, though: see the float32 rounding hint)"
        raise ParityError(failure_message(result, source.description, target.description), result)
    return result


def _convert_following_every_weight(source: ModelAdapter, inputs: ModelInputs, target_framework: str,
                                    cache: ConversionCache | None, source_weights: dict[str, np.ndarray],
                                    trainable: set[str]) -> tuple[bridge.Conversion, WeightMatching, str | None]:
    """The conversion and its weight matching, from the export that lets every trainable weight be followed.

    A frozen Keras export loses weights: tf2onnx's Grappler folds a BatchNormalization's scale and shift into the
    convolution before it, so no tensor of the graph holds them. Exported with the weights as graph inputs nothing
    can fold them. A Keras model with a BatchNormalization is exported that way at once; any other Keras export that
    lost trainable weights is exported again that way, and the one that follows more weights is kept, with a note.
    """
    unfolded_first = bool(getattr(source, "folds_weights_when_frozen", False))
    note = None
    try:
        conversion = bridge.convert(source, inputs, target_framework, cache, weights_as_inputs=unfolded_first)
    except Exception as error:
        if not unfolded_first:
            raise
        note = _unfolded_export_failed(error)
        unfolded_first = False
        conversion = bridge.convert(source, inputs, target_framework, cache)
    matching = match_weights(source_weights, conversion.target.weights())
    lost = [name for name in matching.unmatched if name in trainable]
    if unfolded_first:
        return conversion, matching, "exported with the weights as graph inputs (the model has a BatchNormalization, " \
                                     "which a frozen export folds into the layer before it)"
    if not lost or note or not getattr(source, "can_export_weights_as_inputs", False):
        return conversion, matching, note
    try:
        again = bridge.convert(source, inputs, target_framework, cache, weights_as_inputs=True)
        rematched = match_weights(source_weights, again.target.weights())
    except Exception as error:  # the first export stands; its lost weights fail the check, each with its reason
        return conversion, matching, f"{len(lost)} trainable weight(s) were folded away by the export; " \
                                     + _unfolded_export_failed(error)
    still = [name for name in rematched.unmatched if name in trainable]
    if len(still) >= len(lost):
        return conversion, matching, None
    return again, rematched, (f"exported with the weights as graph inputs: the frozen export folded {len(lost)} "
                              f"trainable weight(s) into others, which no tensor of the converted model held; this "
                              f"way {len(lost) - len(still)} of them are compared as themselves")


def _judge_near_zero_in_float64(grads: dict[str, Comparison], source: ModelAdapter, target: ModelAdapter,
                                inputs: ModelInputs, device: str, cotangents: list[Any],
                                grad_matches: list[WeightMatch], source_input_grads: list[np.ndarray | None] | None,
                                target_input_grads: list[np.ndarray | None] | None,
                                source_weight_grads: dict[str, Any] | None, carried: dict[str, np.ndarray | None],
                                grad_atol: float) -> float64_referee.NearZeroRejudged:
    """Gradients a halved target would pass are judged against their own float32 rounding, measured by a float64 run
    of the PyTorch side (the source when it is PyTorch, else the converted model): see float64_referee."""
    def run64() -> tuple[list[np.ndarray | None], dict[str, Any]] | None:
        if source.framework == "torch":
            run = float64_referee.run_in_float64(source, inputs, device, cotangents,
                                                 [m.source_name for m in grad_matches])
            return None if run is None else (run[1] or [], run[2] or {})
        run = float64_referee.run_in_float64(target, inputs, device, cotangents, [m.target_name for m in grad_matches])
        if run is None:
            return None
        by_target = run[2] or {}
        return run[1] or [], {m.source_name: _in_source_layout(m, by_target.get(m.target_name)) for m in grad_matches}

    return float64_referee.judge_near_zero(grads, [input_label(inputs, name) for name in inputs.names],
                                           (source_input_grads or [], source_weight_grads or {}),
                                           (target_input_grads or [], carried), source.framework == "torch", run64,
                                           grad_atol=grad_atol)


def _unfolded_export_failed(error: BaseException) -> str:
    first = str(error).splitlines()[0][:200] if str(error) else ""
    return (f"the export with the weights as graph inputs failed ({type(error).__name__}: {first}), so the frozen "
            f"one ran")


def _in_source_layout(match: WeightMatch, target_value: np.ndarray | None) -> np.ndarray | None:
    return None if target_value is None else match.gradient_to_source_layout(target_value)


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
    source_leaves = [leaf for _, leaf in trees.flatten_tree(source_outputs, "output")]
    target_leaves = [leaf for _, leaf in trees.flatten_tree(target_outputs, "output")]
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
    """For a failure with the outputs agreeing: what the converted model shows about the backward pass, when it shows
    anything."""
    failing = [c.name for c in (result.grads or {}).values() if not c.passed]
    if not failing:
        return None
    text = ("the outputs agree, so the forward graph was carried across faithfully; the difference is in the backward "
            "pass of the converted model")
    copies = _tensors_holding_the_same_values(conversion.target.weights())
    if copies:
        examples = ", ".join(" = ".join(repr(name) for name in group[:3]) for group in copies[:2])
        text += (f". {len(copies)} weight(s) are held by several tensors of the converted model with the same values "
                 f"({examples}): a weight several nodes read, which the converter copied per node, so its gradient is "
                 f"split between the copies: a likely cause")
    return text


def _tensors_holding_the_same_values(weights: dict[str, np.ndarray]) -> list[list[str]]:
    """Groups of the converted model's float tensors (more than one element) whose values are equal. The source's
    weights were made distinct before the check (randomize_constant_weights), so equal tensors are copies of one."""
    groups: dict[tuple[str, tuple[int, ...], bytes], list[str]] = {}
    for name, value in weights.items():
        if value.size > 1 and np.issubdtype(value.dtype, np.floating):
            key = (str(value.dtype), value.shape, hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
            groups.setdefault(key, []).append(name)
    return [names for names in groups.values() if len(names) > 1]
