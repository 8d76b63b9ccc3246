"""One port-mode check: record both models, carry the weights across, run both, compare in the source's layout.

Same contract as convert mode (``check.run_check``): the source is the reference, outputs and gradients are compared
as vector-Jacobian products with a seeded cotangent, gradients are reported by the source's variable names (with the
target's names in ``result.weight_names``). Both models get their own weights back afterwards, so a check leaves no
trace in the user's models.

With target_weights='loaded' the target keeps the weights the user loaded into it (their checkpoint converter is the
code under test): the plan is still made, and the target still runs once with the check's transfer to settle flatten
orders, but the user's weights go back in before anything is compared, and each carried tensor of theirs is compared
with the transfer (port/loaded). Outputs and gradients are compared as with carried weights.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity import trees
from pytest_parity.errors import ParityError, ParityUsageError, error_summary
from pytest_parity.frameworks import FRAMEWORK_LABELS, ModelAdapter, ModelInputs, devices, left_out_note
from pytest_parity.frameworks.adapters import load_adapter
from pytest_parity.layouts import LayoutPair, check_inputs_fit, parse_layouts
from pytest_parity.modes.port import (
    activation_range,
    divergence,
    gradient_divergence,
    io_names,
    loaded,
    reachability,
    recurrent_cells,
    trainability,
)
from pytest_parity.modes.port.ops import ModelStructure
from pytest_parity.modes.port.transfer import TransferPlan, plan_transfer, settle_flatten_orders
from pytest_parity.modes.steps import (
    initializer_pattern,
    input_notes,
    make_cotangent_source,
    measure_speed_if_asked,
    prepare_source,
    randomize_constant_weights,
    refuse_if_every_gradient_is_zero,
    refuse_if_not_a_function_of_its_inputs,
    refuse_non_finite,
    run_source,
    source_run_failure,
)
from pytest_parity.result import ActivationFigures, Comparison, ParityResult
from pytest_parity.seeding import seeded_generator
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import compare, float64_referee
from pytest_parity.verdict.gradients import compare_gradients, input_label
from pytest_parity.verdict.messages import failure_message
from pytest_parity.verdict.weight_accounting import account_weights, unmatched_reasons


def _record(adapter: ModelAdapter, inputs: ModelInputs, device: str) -> ModelStructure:
    if adapter.framework == "tensorflow":
        from pytest_parity.modes.port import keras_layers

        return keras_layers.record(adapter, inputs, device)
    from pytest_parity.modes.port import torch_layers

    return torch_layers.record(adapter, inputs, device)


def target_inputs_of(inputs: ModelInputs, layouts: LayoutPair | None,
                     input_names: tuple[tuple[str, str], ...] | None) -> ModelInputs:
    """The inputs as the target takes them: in its layout, under its names."""
    renamed = io_names.target_inputs(inputs, input_names)
    if layouts is None:
        return renamed
    return ModelInputs(renamed.kind, renamed.names, tuple(layouts.source_to_target(a) for a in renamed.arrays),
                       renamed.cast_from_float64)


def _to_source_layout(tree: Any, layouts: LayoutPair | None) -> Any:
    if layouts is None:
        return tree
    leaves = [layouts.target_to_source(np.asarray(leaf)) for _, leaf in trees.flatten_tree(tree, "output")]
    return trees.unflatten_like(tree, leaves)


def run_port(source_model: Any, target_model: Any, source_framework: str, target_framework: str,
             inputs: ModelInputs, settings: ParitySettings, device: str, seed_key: str,
             speed_gate: bool = True) -> ParityResult:
    if source_framework == target_framework:
        raise ParityUsageError(
            f"port mode carries weights between frameworks, but both models are {FRAMEWORK_LABELS[source_framework]} "
            f"models. Pass a {FRAMEWORK_LABELS[_other(source_framework)]} model as the target, or check one model "
            f"against its converted twin with parity.check(model, inputs=...)")
    if settings.target is not None and settings.target != target_framework:
        raise ParityUsageError(f"target={settings.target!r} was set, but the target model given is a "
                               f"{FRAMEWORK_LABELS[target_framework]} model; drop target= in port mode")
    layouts = parse_layouts(settings.layouts)
    if layouts is not None:
        check_inputs_fit(layouts, [(name, array.shape) for name, array in zip(inputs.names, inputs.arrays)])
    io_names.target_inputs(inputs, settings.input_names)  # a name that does not fit is refused before any run
    source, target = load_adapter(source_framework, source_model), load_adapter(target_framework, target_model)
    restore_placements = [source.remember_placement(), target.remember_placement()]
    originals: list[tuple[ModelAdapter, dict[str, np.ndarray]]] = []
    try:
        inputs = prepare_source(source, inputs, device)
        _build_target(target, target_inputs_of(inputs, layouts, settings.input_names), device)
        originals = [(source, source.weights()), (target, target.weights())]
        if settings.randomize_constant_weights and settings.target_weights == "carried":
            randomize_constant_weights(source, seeded_generator(seed_key, settings.seed, "weights"))
            # The target's own values are overwritten by the transfer; randomizing them first only keeps a graph
            # read through ONNX (tf.Module targets) from losing zero biases that tf2onnx drops.
            randomize_constant_weights(target, seeded_generator(seed_key, settings.seed, "target weights"))
        return _check(source, target, inputs, layouts, settings, device, seed_key, speed_gate)
    finally:
        for adapter, values in originals:
            adapter.assign_weights(values)
        for restore in restore_placements:
            restore()


def _other(framework: str) -> str:
    return "torch" if framework == "tensorflow" else "tensorflow"


def _check(source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs, layouts: LayoutPair | None,
           settings: ParitySettings, device: str, seed_key: str, speed_gate: bool) -> ParityResult:
    target_inputs = target_inputs_of(inputs, layouts, settings.input_names)
    output_names = io_names.OutputNames(settings.output_names) if settings.output_names else None
    with devices.exact_float32({source.framework, target.framework}, device):
        started = time.perf_counter()
        source_values = source.weights()
        loaded_values = target.weights() if settings.target_weights == "loaded" else None
        if loaded_values is None:
            plan, source_structure = carry_weights(source, target, inputs, target_inputs, device, output_names)
        else:
            plan, source_structure = _plan_keeping_loaded(source, target, inputs, target_inputs, device, loaded_values,
                                                          output_names)
        frozen = trainability.frozen_on_one_side(plan, source.trainable_names(), target.trainable_names(),
                                                 source.framework, target.framework)
        conversion_s = time.perf_counter() - started

        started = time.perf_counter()
        cotangents, make_cotangents = make_cotangent_source(seed_key, settings.seed)
        if output_names is not None and output_names.not_compared:
            make_cotangents = _without_uncompared(make_cotangents, output_names, source, inputs, device)
        source_outputs, source_input_grads, source_weight_grads = run_source(
            source, inputs, device, make_cotangents if settings.grad else None)
        refuse_non_finite(source_outputs, "output", source.description)
        if settings.grad:
            refuse_if_every_gradient_is_zero(source_input_grads, source_weight_grads, source_outputs,
                                             source.description)
        target_cotangents = None
        if settings.grad:
            target_cotangents = [None if c is None else (layouts.source_to_target(c) if layouts else c)
                                 for c in cotangents]
            if output_names is not None:
                # The target's leaves come in its own order under its own names: one forward run shows them.
                probe = _run_target(target, target_inputs, device, None, plan)[0]
                target_cotangents = output_names.target_cotangents(source_outputs, target_cotangents, probe)
        target_outputs, target_input_grads, target_weight_grads = _run_target(
            target, target_inputs, device, target_cotangents, plan)
        raw_target_outputs = target_outputs
        not_compared: list[str] = []
        if output_names is not None:
            not_compared = output_names.left_out(source_outputs, target_outputs)
            target_outputs = output_names.as_source(source_outputs, target_outputs)
        target_outputs = _to_source_layout(target_outputs, layouts)
        outputs = compare.compare_trees(target_outputs, output_names.compared_source(source_outputs)
                                        if output_names is not None else source_outputs,
                                        atol=settings.atol, rtol=settings.rtol)

        grads = None
        near_zero = None
        if settings.grad:
            target_input_grads = [None if g is None else (layouts.target_to_source(g) if layouts else g)
                                  for g in (target_input_grads or [])]
            carried = plan.gradients_to_source(_frozen_terms_as_zero(plan, target, target_weight_grads or {}))
            # A weight frozen on one side is not compared (one side has no gradient): the account fails it by name.
            trainable = [name for name in source.trainable_names() if name in carried and name not in frozen]
            grads = compare_gradients(inputs, source_input_grads or [], target_input_grads,
                                               source_weight_grads or {}, carried, trainable, settings)
            near_zero = _judge_near_zero_in_float64(grads, source, target, inputs, target_inputs, layouts, plan,
                                                    device, cotangents, target_cotangents, source_input_grads,
                                                    target_input_grads, source_weight_grads or {}, carried,
                                                    settings.grad_atol)
            grads = near_zero.grads
        run_s = time.perf_counter() - started
        activations, activation_notes = _probe_activations(plan, source, target, inputs, target_inputs, device,
                                                           settings)
        speed = measure_speed_if_asked(settings, speed_gate, device, source, inputs, target, target_inputs)

        names = plan.target_names()
        compared = [name for name in (grads or {}) if name in source_values]
        account = account_weights(source.trainable_names(), compared, dict(plan.unused), source_weight_grads,
                                  settings.unmatched_weights, settings.grad, grads,
                                  near_zero.zero_in_exact_arithmetic if near_zero else (),
                                  frozen_on_one_side=frozen)
        weights: dict[str, Comparison] = {}
        loaded_notes: list[str] = []
        if loaded_values is not None:
            weights, loaded_notes = loaded.compare_loaded(plan, source_values, loaded_values, source_structure,
                                                          target.framework)
            loaded_notes += _loaded_constant_note(source_values, settings)
        result = ParityResult(
            route=f"port: {source.framework} -> {target.framework}", device=device,
            outputs=outputs, grads=grads, weights=weights, weight_names=names,
            unmatched_weights=unmatched_reasons(dict(plan.unused), account, source.trainable_names(),
                                                reasons_known=True),
            weight_account=account, speed=speed, activations=activations,
            conversion_s=conversion_s, run_s=run_s, notes=[*plan.notes, *loaded_notes, *activation_notes,
                                                           *input_notes(inputs),
                   *left_out_note(source.left_out_outputs, source.description),
                   *left_out_note(target.left_out_outputs, target.description),
                   *([f"outputs of {target.description} that output_names= gives no source output for, so not "
                      f"compared: {', '.join(not_compared)}"] if not_compared else []),
                   *([f"outputs of {source.description} that output_names= maps to None, so not compared: "
                      f"{', '.join(output_names.not_compared)}"] if output_names and output_names.not_compared
                     else [])])
        if not result.passed:
            refuse_if_not_a_function_of_its_inputs(source, inputs, device, source_outputs,
                                                   cotangents if settings.grad else None)
            refuse_if_not_a_function_of_its_inputs(target, target_inputs, device, raw_target_outputs,
                                                   target_cotangents, role="target")
            # The per-layer comparison follows forward activations: with the outputs agreeing it can only report that
            # every layer agrees, which would point away from the gradients that differ (named in the message).
            if not outputs.passed:
                result.diagnosis = _locate(plan, source, target, inputs, target_inputs, source_structure, layouts,
                                           settings, device, result.layers)
                result.diagnosis = _gate_order(plan, source_values, target, target_inputs, device, source_outputs,
                                               output_names, layouts, settings) or result.diagnosis
            elif grads:
                result.diagnosis, result.explained_gradients = divergence.padding_rows(
                    plan, grads, source_weight_grads or {}, carried, settings.grad_atol, settings.grad_rtol)
                if result.diagnosis is None:
                    result.diagnosis = _locate_backward(plan, source, target, inputs, target_inputs, layouts, device,
                                                        cotangents, target_cotangents or [], grads, settings,
                                                        list(source_weight_grads or {}))
            raise ParityError(failure_message(result, source.description, target.description), result)
    return result


def _probe_activations(plan: TransferPlan, source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs,
                       target_inputs: ModelInputs, device: str,
                       settings: ParitySettings) -> tuple[ActivationFigures | None, list[str]]:
    """Each paired activation compared as a function beyond the range the inputs reached (activation_range), and the
    notes that say where that could not be done. A probe that cannot run says so in a note: the check then claims
    only what the forward comparison saw."""
    try:
        figures = activation_range.probe(plan, source, target, inputs, target_inputs, device, settings.atol,
                                         settings.rtol)
    except Exception as error:
        return None, [f"activation range not checked: recording or probing the activations failed "
                      f"({error_summary(error)}); each activation was compared only on the range these inputs reach"]
    return figures, [*figures.not_exercised, *(f"activation range not checked on one side: {text}"
                                               for text in figures.unseen)]


def _without_uncompared(make_cotangents: Callable[[list[np.ndarray]], list[np.ndarray | None]],
                        output_names: io_names.OutputNames, source: ModelAdapter, inputs: ModelInputs,
                        device: str) -> Callable[[list[np.ndarray]], list[np.ndarray | None]]:
    """The source's cotangents with None under the outputs output_names= maps to None: what is not compared gets no
    gradient either, so the weights that only feed it are unused (the cotangent list is shared, so it is edited in
    place). The leaves' order is read from one forward run."""
    probe = source.run(inputs, device, None)[0]

    def make(leaves: list[np.ndarray]) -> list[np.ndarray | None]:
        made = make_cotangents(leaves)
        made[:] = output_names.source_cotangents(probe, made)
        return made

    return make


def carry_weights(source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs, target_inputs: ModelInputs,
                  device: str, output_names: io_names.OutputNames | None = None) -> tuple[TransferPlan, ModelStructure]:
    """Record both models on the inputs, pair their layers and write the source's weights into the target (flatten
    orders settled from the recorded activations). The plan and the source's recorded structure come back.
    ``output_names``: which outputs are compared, for the layers left out as not reaching them (port/reachability)."""
    source_values = source.weights()
    source_structure = _record_source(source, inputs, device)
    target_structure = _record_target(target, target_inputs, device)
    plan = plan_transfer(source_structure, target_structure, source_values, target.weights(),
                         source.description, target.description,
                         _unreached(source, target, inputs, target_inputs, device, source_structure, target_structure,
                                    output_names))
    target.assign_weights(plan.transfer(source_values))
    settle_flatten_orders(plan, source_structure, target_structure, source_values,
                          lambda: _record_target(target, target_inputs, device), target.assign_weights)
    return plan, source_structure


def _plan_keeping_loaded(source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs, target_inputs: ModelInputs,
                         device: str, loaded_values: dict[str, np.ndarray],
                         output_names: io_names.OutputNames | None = None) -> tuple[TransferPlan, ModelStructure]:
    """carry_weights for target_weights='loaded': the same plan and flatten orders (settling them runs the target with
    the check's transfer), then the user's weights back into the target, so the check runs the target as loaded."""
    source_values = source.weights()
    source_structure = _record_source(source, inputs, device)
    target_structure = _record_target(target, target_inputs, device)
    plan = plan_transfer(source_structure, target_structure, source_values, loaded_values,
                         source.description, target.description,
                         _unreached(source, target, inputs, target_inputs, device, source_structure, target_structure,
                                    output_names))
    target.assign_weights(plan.transfer(source_values))
    settle_flatten_orders(plan, source_structure, target_structure, source_values,
                          lambda: _record_target(target, target_inputs, device), target.assign_weights, loaded=True)
    target.assign_weights(loaded_values)
    return plan, source_structure


def _unreached(source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs, target_inputs: ModelInputs,
               device: str, source_structure: ModelStructure, target_structure: ModelStructure,
               output_names: io_names.OutputNames | None) -> Callable[[], tuple[dict[str, str], dict[str, str]]]:
    """What plan_transfer asks where the layers do not pair: each side's layers that do not reach the compared
    outputs (perturbed one at a time, so only a refused pairing pays for it)."""
    return lambda: reachability.find_unreached(source, target, inputs, target_inputs, device, source_structure,
                                               target_structure, output_names)


def _loaded_constant_note(source_values: dict[str, np.ndarray], settings: ParitySettings) -> list[str]:
    """With the user's weights in the target, constant source weights cannot be randomized: say what that hides."""
    constant = [name for name, value in source_values.items() if value.size and initializer_pattern(value)]
    if not constant:
        return []
    listed = ", ".join(repr(name) for name in constant[:4]) + (f" and {len(constant) - 4} more"
                                                               if len(constant) > 4 else "")
    return [f"target_weights='loaded': the weights are used as loaded, so {len(constant)} constant source weight(s) "
            f"({listed}) were not randomized"
            + (" (randomize_constant_weights has no effect here)" if settings.randomize_constant_weights else "")
            + ": a converter that mishandles them (a zero bias copied twice, dropped or swapped) computes the same "
              "values and cannot be caught on them; check on a trained checkpoint"]


def _judge_near_zero_in_float64(grads: dict[str, Comparison], source: ModelAdapter, target: ModelAdapter,
                                inputs: ModelInputs, target_inputs: ModelInputs, layouts: LayoutPair | None,
                                plan: TransferPlan, device: str, cotangents: list[Any],
                                target_cotangents: list[Any] | None, source_input_grads: list[Any] | None,
                                target_input_grads: list[Any], source_weight_grads: dict[str, Any],
                                carried: dict[str, Any], grad_atol: float) -> float64_referee.NearZeroRejudged:
    """As in convert mode: gradients a halved target would pass are judged against the float32 rounding a float64 run
    of the PyTorch model (source or target) shows in each of them (float64_referee)."""
    def run64() -> tuple[list[Any], dict[str, Any]] | None:
        if source.framework == "torch":
            run = float64_referee.run_in_float64(source, inputs, device, cotangents, list(source_weight_grads))
            return None if run is None else (run[1] or [], run[2] or {})
        run = float64_referee.run_in_float64(target, target_inputs, device, target_cotangents,
                                             _carried_names(target, plan))
        if run is None:
            return None
        to_source = [None if g is None else (layouts.target_to_source(g) if layouts else g) for g in run[1] or []]
        return to_source, plan.gradients_to_source(run[2] or {})

    return float64_referee.judge_near_zero(grads, [input_label(inputs, name) for name in inputs.names],
                                           (source_input_grads or [], source_weight_grads),
                                           (target_input_grads, carried), source.framework == "torch", run64,
                                           grad_atol=grad_atol)


def _record_source(source: ModelAdapter, inputs: ModelInputs, device: str) -> ModelStructure:
    try:
        return _record(source, inputs, device)
    except ParityUsageError:
        raise
    except Exception as error:
        raise source_run_failure(source, inputs, error) from None


def _build_target(target: ModelAdapter, inputs: ModelInputs, device: str) -> None:
    _explaining_target_failure(target, inputs, lambda: target.build(inputs, device))


def _record_target(target: ModelAdapter, inputs: ModelInputs, device: str) -> ModelStructure:
    return _explaining_target_failure(target, inputs, lambda: _record(target, inputs, device))


def _explaining_target_failure(target: ModelAdapter, inputs: ModelInputs, step: Callable[[], Any]) -> Any:
    try:
        return step()
    except ParityUsageError:
        raise
    except Exception as error:
        names = _input_names(target) if inputs.kind == "named" else None
        by_name = (f"\nThe inputs are passed to both models by name ({', '.join(inputs.names)}); the target takes "
                   f"{', '.join(names)}. Port mode gives both models the same inputs, so the two must name their "
                   f"inputs alike (wrap one model to rename them)." if names and set(names) != set(inputs.names)
                   else "")
        raise ParityUsageError(
            f"Running the target model ({target.description}) on the inputs converted to its layout "
            f"({inputs.describe()}) failed with {error_summary(error)}"
            + (by_name or "\nCheck layouts=(source_layout, target_layout): inputs are given in the source's layout and "
                          "permuted for the target.")) from None


def _input_names(adapter: ModelAdapter) -> list[str] | None:
    """The names a model takes its inputs by, where it says (a Keras functional model's inputs, a torch forward's
    parameters); None where it does not. Only for the message above: it must never fail."""
    try:
        model = getattr(adapter, "model", None)
        if model is not None:
            spec = getattr(model, "input", None)
            if isinstance(spec, dict):
                return list(spec)
            if isinstance(spec, (list, tuple)):
                return [str(getattr(tensor, "name", "?")).split(":")[0] for tensor in spec]
            return None
        module = getattr(adapter, "module", None)
        if module is None:
            return None
        parameters = inspect.signature(module.forward).parameters.values()
        return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][:8]
    except Exception:
        return None


def _run_target(target: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any] | None,
                plan: TransferPlan) -> Any:
    """Gradients only for the target's trainable weights that received source weights."""
    return target.run(inputs, device, cotangents,
                      grad_weights=_carried_names(target, plan) if cotangents is not None else None)


def _frozen_terms_as_zero(plan: TransferPlan, target: ModelAdapter,
                          grads: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
    """Gradients of the target with a zero for each frozen tensor that is one term of a sum carrying one source
    tensor (Keras' single LSTM bias as torch's bias_ih + bias_hh, with bias_hh frozen at zero, the exact port).

    A frozen tensor gets no gradient (the check never turns requires_grad on in the user's model), and a sum's
    gradient is that of each trainable term. A zero can only leave a term out of a compared gradient, which makes it
    differ, never agree: it cannot turn a failure into a pass."""
    trainable = set(target.trainable_names())
    filled = dict(grads)
    shapes: dict[str, tuple[int, ...]] | None = None
    for pair in plan.pairs:
        for binding in pair.target.bindings.values():
            names = binding.variables
            if len(names) < 2 or not any(filled.get(name) is not None for name in names):
                continue
            for name in names:
                if filled.get(name) is None and name not in trainable:
                    if shapes is None:
                        shapes = {key: value.shape for key, value in target.weights().items()}
                    filled[name] = np.zeros(shapes[name], np.float32)
    return filled


def _carried_names(target: ModelAdapter, plan: TransferPlan) -> list[str]:
    trainable = set(target.trainable_names())
    return list(dict.fromkeys(name for pair in plan.pairs for name in pair.target.variables() if name in trainable))


def _locate_backward(plan: TransferPlan, source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs,
                     target_inputs: ModelInputs, layouts: LayoutPair | None, device: str, cotangents: list[Any],
                     target_cotangents: list[Any], grads: dict[str, Comparison], settings: ParitySettings,
                     source_weights: list[str]) -> str | None:
    """Outputs agree, gradients do not: the layer pair where the backward pass first differs, from per-layer
    gradients recorded with the check's own cotangents (gradient_divergence)."""
    try:
        return gradient_divergence.locate(plan, source, target, inputs, target_inputs, layouts, cotangents,
                                          target_cotangents, device, grads, settings.grad_atol, settings.grad_rtol,
                                          source_weights, _carried_names(target, plan))
    except Exception as error:  # the diagnosis must never hide the failure it explains
        return f"the per-layer gradient comparison could not run ({type(error).__name__}: {error})"


def _gate_order(plan: TransferPlan, source_values: dict[str, np.ndarray], target: ModelAdapter,
                target_inputs: ModelInputs, device: str, source_outputs: Any, output_names: io_names.OutputNames | None,
                layouts: LayoutPair | None, settings: ParitySettings) -> str | None:
    """A hand-written recurrent cell's gates used in another order, where another order makes the outputs agree
    (port/recurrent_cells); the target gets the carried weights back after."""
    expected = output_names.compared_source(source_outputs) if output_names is not None else source_outputs

    def outputs_agree() -> bool:
        target.assign_weights(plan.transfer(source_values))
        outputs = target.run(target_inputs, device, None)[0]
        if output_names is not None:
            outputs = output_names.as_source(source_outputs, outputs)
        return compare.compare_trees(_to_source_layout(outputs, layouts), expected, atol=settings.atol,
                                     rtol=settings.rtol).passed

    try:
        return recurrent_cells.gate_order_finding(plan.pairs, outputs_agree)
    except Exception:  # the diagnosis must never hide the failure it explains
        return None
    finally:
        target.assign_weights(plan.transfer(source_values))


def _locate(plan: TransferPlan, source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs,
            target_inputs: ModelInputs, source_structure: ModelStructure, layouts: LayoutPair | None,
            settings: ParitySettings, device: str, layers: list[dict[str, Any]]) -> str | None:
    """Re-record the target with the carried weights and find the first layer pair that diverges (its rows, one per
    layer pair compared, go into ``layers``)."""
    try:
        target_structure = _record(target, target_inputs, device)
        return divergence.locate(plan, source_structure, target_structure, layouts, settings.atol, settings.rtol,
                                 layers)
    except Exception as error:  # the diagnosis must never hide the failure it explains
        return f"the per-layer comparison could not run ({type(error).__name__}: {error})"

