"""One training check, start to finish (``parity.check_training``).

1. Carry the source's weights into the target once, as port mode does (modes/port: pairing through ONNX conventions).
2. Diff the two training setups statically (configuration.py): a mismatch fails even if the steps cannot show it yet.
3. Refuse randomness the check cannot give both sides alike: each side runs twice in training mode with the shared
   Dropout masks (dropout.py); outputs that still differ come from a random op the check cannot reach.
4. Train both, step by step, with the user's optimizer settings (fresh copies) and losses, the same batches and the same
   Dropout masks. After every step compare, in the target's layout: the loss, every carried weight and statistic (the
   source's carried across, BatchNorm variance in the target's convention, statistics.py), and each tensor's update
   at the scale of the source's update (a fixed atol would let a wrong update through where the learning rate is
   small).
5. Name the first step and tensor that diverge, with the likely cause (causes.py).

Both models and the user's optimizers are left as they were: weights, statistics and train/eval modes are restored.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pytest_parity.errors import ParityError, ParityUsageError
from pytest_parity.frameworks import FRAMEWORK_LABELS, ModelInputs, detect_framework, devices, flatten_inputs
from pytest_parity.frameworks.adapters import load_adapter
from pytest_parity.layouts import LayoutPair, parse_layouts
from pytest_parity.modes.port.run import carry_weights, target_inputs_of
from pytest_parity.modes.port.transfer import TransferPlan
from pytest_parity.modes.steps import input_notes, prepare_source, randomize_constant_weights
from pytest_parity.modes.training import causes, configuration, dropout, statistics
from pytest_parity.modes.training.sides import BatchNormSettings, TrainingSide, make_side
from pytest_parity.result import Comparison, ParityResult, TrainingFigures, TrainingStep, TreeComparison, WeightAccount
from pytest_parity.seeding import seeded_generator
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import compare
from pytest_parity.verdict.messages import training_failure_message
from pytest_parity.verdict.weight_accounting import unmatched_reasons

# Two training-mode runs of one side with the same masks differing by more than this share of the outputs' scale hold
# randomness the check cannot reach (float32 rounding that threads reorder stays near 1e-7 of it).
RERUN_SHARE = 1e-4


def run_training(source_model: Any, target_model: Any, batches: Any, loss: Any, optimizer: Any, steps: int | None,
                 train_step: Any, settings: ParitySettings, device: str, seed_key: str) -> ParityResult:
    batches = _checked_batches(batches)
    losses = _pair("loss", loss, "(keras.losses.SparseCategoricalCrossentropy(from_logits=True), "
                                 "torch.nn.CrossEntropyLoss())")
    optimizers = _pair("optimizer", optimizer, "(keras.optimizers.Adam(1e-3), "
                                               "lambda params: torch.optim.Adam(params, lr=1e-3))")
    train_steps = (None, None) if train_step is None else _pair("train_step", train_step,
                                                                "(None, my_torch_step)")
    count = len(batches) if steps is None else _checked_steps(steps)
    source_framework = detect_framework(source_model)
    if target_model is None:
        found = _inference_only_layers(source_model)
        raise ParityUsageError(
            "parity.check_training needs the target model: a model converted through ONNX is its inference graph "
            + (f"(here {found}), " if found else "(BatchNormalization frozen into inference form, Dropout dropped), ")
            + "and training the converted model is not supported, so there is nothing that trains like the source. "
            "Write the port in the other framework and pass it: parity.check_training(source, target, batches=..., "
            "loss=..., optimizer=...); parity.check(model, inputs=...) checks the conversion itself")
    if settings.target_weights != "carried":
        raise ParityUsageError(
            f"target_weights={settings.target_weights!r}: a training check starts both models from the source's "
            f"weights carried across, so that every step compares like with like. Gate your converter's weights with "
            f"parity.check(source, target, inputs=..., target_weights={settings.target_weights!r}), then train from "
            f"the carried weights here")
    target_framework = detect_framework(target_model)
    if source_framework == target_framework:
        raise ParityUsageError(f"parity.check_training compares a model with its port in the other framework, but "
                               f"both models are {FRAMEWORK_LABELS[source_framework]} models")
    layouts = parse_layouts(settings.layouts)
    source, target = load_adapter(source_framework, source_model), load_adapter(target_framework, target_model)
    restore_placements = [source.remember_placement(), target.remember_placement()]
    originals: list[tuple[Any, dict[str, np.ndarray]]] = []
    try:
        first_inputs = prepare_source(source, flatten_inputs(batches[0][0]), device)
        first_target_inputs = target_inputs_of(first_inputs, layouts, settings.input_names)
        target.build(first_target_inputs, device)
        originals = [(source, source.weights()), (target, target.weights())]
        if settings.randomize_constant_weights:
            randomize_constant_weights(source, seeded_generator(seed_key, settings.seed, "weights"))
            randomize_constant_weights(target, seeded_generator(seed_key, settings.seed, "target weights"))
        with devices.exact_float32({source.framework, target.framework}, device):
            started = time.perf_counter()
            plan, _ = carry_weights(source, target, first_inputs, first_target_inputs, device)
            conversion_s = time.perf_counter() - started
            sides = (make_side(source, "source", optimizers[0], losses[0], train_steps[0]),
                     make_side(target, "target", optimizers[1], losses[1], train_steps[1]))
            return _train_and_compare(sides, plan, batches, count, layouts, settings, device, seed_key, conversion_s)
    finally:
        for adapter, values in originals:
            adapter.assign_weights(values)
        for restore in restore_placements:
            restore()


def _inference_only_layers(model: Any) -> str:
    """The layers an ONNX export takes in inference form, named, e.g. "BatchNormalization 'bn' frozen into inference
    form, Dropout 'drop' dropped"; empty when none is found (or the model cannot be walked)."""
    try:
        if hasattr(model, "named_modules"):
            layers = [(name, type(module).__name__) for name, module in model.named_modules() if name]
        else:
            layers = [(layer.name, type(layer).__name__)
                      for layer in model._flatten_layers(include_self=False, recursive=True)]
    except Exception:
        return ""
    frozen = [f"{kind} {name!r} frozen into inference form" for name, kind in layers if "BatchNorm" in kind]
    dropped = [f"{kind} {name!r} dropped" for name, kind in layers if "Dropout" in kind]
    return ", ".join([*frozen, *dropped][:4])


def _pair(argument: str, value: Any, example: str) -> tuple[Any, Any]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ParityUsageError(f"parity.check_training({argument}=...) takes a pair (source's, target's), each in its "
                               f"own framework, for example {argument}={example}; got {type(value).__qualname__}")
    return value[0], value[1]


def _checked_batches(batches: Any) -> list[tuple[Any, np.ndarray]]:
    example = "batches=[(parity.randn(8, 28, 28, 1), parity.randint(0, 10, (8,)))]"
    if not isinstance(batches, (list, tuple)) or not batches:
        raise ParityUsageError(f"parity.check_training(batches=...) takes a non-empty list of (inputs, labels) pairs, "
                               f"for example {example}; got {type(batches).__qualname__}")
    checked = []
    for index, batch in enumerate(batches):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ParityUsageError(f"batches[{index}] must be an (inputs, labels) pair, for example {example}")
        inputs, labels = batch
        labels = np.asarray(labels)
        if labels.dtype == np.float64:
            labels = labels.astype(np.float32)  # the models' precision; float64 labels would upcast the loss
        if labels.dtype.kind not in "iuf" or labels.ndim == 0:
            raise ParityUsageError(f"batches[{index}]: labels must be a numpy array of class ids or targets, one row "
                                   f"per example; got {labels.dtype} of shape {labels.shape}")
        checked.append((inputs, labels))
    return checked


def _checked_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ParityUsageError(f"parity.check_training(steps={steps!r}): steps must be an integer >= 1 (None: one step "
                               f"per batch; more steps than batches cycle through them)")
    return int(steps)


def _train_and_compare(sides: tuple[TrainingSide, TrainingSide], plan: TransferPlan,
                       batches: list[tuple[Any, np.ndarray]], count: int, layouts: LayoutPair | None,
                       settings: ParitySettings, device: str, seed_key: str, conversion_s: float) -> ParityResult:
    source, target = sides
    keras_side, torch_side = (source, target) if source.framework == "tensorflow" else (target, source)
    keras_role = "source" if source.framework == "tensorflow" else "target"
    pairs = _carried_pairs(plan)
    order = list(dict.fromkeys(name for _, name in pairs))
    names = _target_to_source_names(plan)

    configuration_found = _static_differences(source, target, keras_side, torch_side, keras_role, plan, pairs)
    masks = dropout.SharedMasks(
        lambda step, index, shape: seeded_generator(seed_key, settings.seed, f"dropout {step} {index}")
        .random(shape, dtype=np.float32), _channel_move(layouts))
    notes: list[str] = []
    started = time.perf_counter()
    first_inputs = flatten_inputs(batches[0][0])
    for side, inputs in ((source, first_inputs), (target, target_inputs_of(first_inputs, layouts,
                                                                           settings.input_names))):
        _refuse_unreachable_randomness(side, _cast(inputs), masks, device)

    source_norms = source.batch_norms()
    source_before, target_before = source.state(), target.state()
    expected_before = _as_float64(plan.transfer(source_before))
    steps: list[TrainingStep] = []
    step_updates: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}
    # Settings as in force at each step (schedules, a per-step epsilon): each kind of mismatch named once, at the
    # first step that has it.
    value_differences: dict[str, str] = {}
    for step in range(1, count + 1):
        raw_inputs, labels = batches[(step - 1) % len(batches)]
        inputs = _cast(flatten_inputs(raw_inputs))
        target_inputs = target_inputs_of(inputs, layouts, settings.input_names)
        with dropout.injected(source.framework, masks, step, "source"):
            source_loss = source.step(inputs, labels, device)
        with dropout.injected(target.framework, masks, step, "target"):
            target_loss = target.step(target_inputs, labels, device)
        for found in configuration.step_value_differences(keras_side.used_settings(step),
                                                          torch_side.used_settings(step), keras_role, step):
            value_differences.setdefault(found.split(":", 1)[0].replace(f" at step {step}", ""), found)
        source_after, target_after = source.state(), target.state()
        expected_after = _as_float64(plan.transfer(source_after))
        _expected_running_variances(expected_after, expected_before, source_before, source_after, plan, source,
                                    source_norms, torch_side)
        record = _compare_step(step, source_loss, target_loss, expected_before, expected_after, target_before,
                               target_after, names, settings)
        steps.append(record)
        if not record.passed and not any(not s.passed for s in steps[:-1]):
            for comparison in record.failures():
                tensor = comparison.name.removesuffix(" (update)")
                target_name = _target_name(tensor, names)
                if target_name in expected_after:
                    step_updates[(step, tensor)] = (expected_after[target_name] - expected_before[target_name],
                                                    np.asarray(target_after[target_name], np.float64)
                                                    - np.asarray(target_before[target_name], np.float64))
        source_before, target_before, expected_before = source_after, target_after, expected_after
    run_s = time.perf_counter() - started

    configuration_found += masks.rate_differences() + list(value_differences.values()) + _batch_norms_left_in_inference(
        plan, keras_side, torch_side, keras_role)
    hints = _hints(keras_side, torch_side) + _biases_ahead_of_normalisations(plan)
    if keras_side.optimizer_settings().kind not in configuration.SAME_ALGORITHM:
        notes.append(f"no static mapping for the {keras_role}'s optimizer ({keras_side.optimizer_settings().kind}): "
                     f"its settings were compared by the steps alone")
    source_names = [names.get(name, name) for name in order]
    figures = TrainingFigures(steps, configuration_found,
                              causes.first_divergence(steps, source_names, configuration_found, step_updates, hints),
                              len(order))
    losses = TreeComparison({f"step {s.step} loss": s.loss for s in steps}, settings.atol, settings.rtol)
    trainable = source.adapter_trainable()
    # Every source variable the plan carries, also those fused into one target tensor (q, k, v kernels in in_proj).
    carried_source = {source_name for source_name, _ in pairs}
    account = WeightAccount(total=len(trainable), compared=len([n for n in trainable if n in carried_source]),
                            uncompared={n: "not carried to the target" for n in trainable
                                        if n not in carried_source and n not in plan.unused},
                            unused={n: why for n, why in plan.unused.items() if n in trainable})
    result = ParityResult(
        route=f"training: {source.framework} -> {target.framework}", device=device, outputs=losses,
        weight_names=plan.target_names(),
        unmatched_weights=unmatched_reasons(dict(plan.unused), account, trainable, reasons_known=True),
        weight_account=account,
        conversion_s=conversion_s, run_s=run_s, training=figures,
        notes=[*plan.notes, *input_notes(first_inputs), *notes])
    if not result.passed:
        raise ParityError(training_failure_message(result, source.description, target.description), result)
    return result


def _batch_norms_left_in_inference(plan: TransferPlan, keras_side: TrainingSide, torch_side: TrainingSide,
                                   keras_role: str) -> list[str]:
    """torch BatchNorms that ran in inference mode inside a training step while their Keras twin trained (eval()
    after model.train(), a train() override): read during the steps, since no attribute says so beforehand."""
    found = []
    in_inference = torch_side.batch_norms_in_inference()
    keras_norms = keras_side.batch_norms()
    for pair in plan.pairs:
        if pair.source.op != "BatchNormalization":
            continue
        keras_layer, torch_layer = ((pair.source.layer, pair.target.layer) if keras_role == "source"
                                    else (pair.target.layer, pair.source.layer))
        keras_norm = keras_norms.get(keras_layer)
        if torch_layer in in_inference and keras_norm is not None and keras_norm.updates_statistics:
            torch_role = "target" if keras_role == "source" else "source"
            found.append(f"BatchNormalization {keras_layer!r} / {torch_layer!r}: the {torch_role}'s torch BatchNorm "
                         f"ran in inference mode during the training steps (its running statistics normalise and are "
                         f"not updated: .eval() called after model.train(), or a train() override), while Keras "
                         f"trains it")
    return found


def _hints(keras_side: TrainingSide, torch_side: TrainingSide) -> list[tuple[str | None, str]]:
    """Known framework differences that fail nothing by themselves but explain a divergence when one shows: (a word
    the diverging tensor's name holds, or None; text)."""
    hints: list[tuple[str | None, str]] = []
    settings = keras_side.optimizer_settings()
    clipnorm, global_clipnorm = settings.values.get("clipnorm"), settings.values.get("global_clipnorm")
    if torch_side.custom_step() and clipnorm:
        hints.append((None, f"Keras clipnorm={clipnorm:g} clips each variable's gradient separately; "
                            f"torch.nn.utils.clip_grad_norm_ over all parameters is Keras global_clipnorm: clip each "
                            f"parameter separately in the torch train_step (or use global_clipnorm in Keras)"))
    if torch_side.custom_step() and global_clipnorm:
        hints.append((None, f"Keras global_clipnorm={global_clipnorm:g} clips all gradients together, as "
                            f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm) does; clipping each "
                            f"parameter separately is Keras clipnorm"))
    if keras_side.has_embeddings() and settings.kind in ("Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad"):
        hints.append(("embedding", f"Keras updates Embedding tables sparsely (IndexedSlices): for an id repeated "
                                   f"within a batch, {settings.kind}'s second moment adds the squares of the "
                                   f"per-occurrence gradients, where torch squares their sum; the tables' updates "
                                   f"differ wherever ids repeat in a batch"))
    return hints


def _biases_ahead_of_normalisations(plan: TransferPlan) -> list[tuple[str | None, str]]:
    """A bias right before a BatchNorm has an exact gradient of zero (the normalisation subtracts it again): its update
    is float32 rounding noise, which each framework rounds its own way and Adam scales up to the learning rate."""
    hints: list[tuple[str | None, str]] = []
    for before, after in zip(plan.pairs, plan.pairs[1:]):
        if after.source.op != "BatchNormalization" or "B" not in before.source.bindings:
            continue
        for name in before.source.bindings["B"].variables:
            hints.append((name.lower(), f"{name!r} is a bias right before a BatchNormalization, which subtracts it "
                                        f"again: its exact gradient is zero and its update is float32 rounding noise "
                                        f"that each framework rounds its own way (Adam scales it up to the learning "
                                        f"rate); it cannot change the outputs. Build that layer without a bias "
                                        f"(use_bias=False / bias=False), as the normalisation makes it redundant"))
    return hints


def _static_differences(source: TrainingSide, target: TrainingSide, keras_side: TrainingSide,
                        torch_side: TrainingSide, keras_role: str, plan: TransferPlan,
                        pairs: list[tuple[str, str]]) -> list[str]:
    found = configuration.optimizer_differences(keras_side.optimizer_settings(), torch_side.optimizer_settings(),
                                                keras_role, torch_clips=torch_side.custom_step())
    found += configuration.loss_differences(keras_side.loss_settings(), torch_side.loss_settings(), keras_role)
    keras_norms, torch_norms = keras_side.batch_norms(), torch_side.batch_norms()
    norm_pairs = []
    for pair in plan.pairs:
        if pair.source.op != "BatchNormalization":
            continue
        keras_layer, torch_layer = ((pair.source.layer, pair.target.layer) if keras_role == "source"
                                    else (pair.target.layer, pair.source.layer))
        if keras_layer in keras_norms and torch_layer in torch_norms:
            norm_pairs.append((keras_norms[keras_layer], torch_norms[torch_layer]))
    found += configuration.batch_norm_differences(norm_pairs, keras_role, keras_first=True)
    source_trainable, target_trainable = source.trainable(), target.trainable()
    in_optimizer = torch_side.trainable_in_optimizer()

    def trains(side: TrainingSide, name: str, trainable: set[str]) -> bool:
        return name in trainable and (side is not torch_side or name in in_optimizer)

    trainability = []
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for pair in plan.pairs:
        for key, source_binding in pair.source.bindings.items():
            group = (tuple(source_binding.variables), tuple(pair.target.bindings[key].variables))
            if group in seen:
                continue
            seen.add(group)
            source_trains = {name for name in group[0] if trains(source, name, source_trainable)}
            target_trains = {name for name in group[1] if trains(target, name, target_trainable)}
            if source_trains or target_trains or any(n in source_trainable for n in group[0]) \
                    or any(n in target_trainable for n in group[1]):
                trainability.append((*group, source_trains, target_trains))
    found += configuration.trainability_differences(trainability, source.framework)
    keras_pairs = [(s, t) if keras_role == "source" else (t, s) for s, t in pairs
                   if (s in source_trainable and t in target_trainable)]
    found += configuration.weight_decay_differences(
        keras_side.optimizer_settings(), torch_side.optimizer_settings(), keras_role, keras_pairs,
        keras_side.decoupled_decay(), keras_side.l2_regularizers(), torch_side.weight_decay_of())
    return found


def _carried_pairs(plan: TransferPlan) -> list[tuple[str, str]]:
    """(source variable, target variable) for every tensor the plan carries, in model order."""
    found: list[tuple[str, str]] = []
    for pair in plan.pairs:
        for key, source_binding in pair.source.bindings.items():
            target_binding = pair.target.bindings[key]
            for source_name in source_binding.variables:
                for target_name in target_binding.variables:
                    found.append((source_name, target_name))
    return list(dict.fromkeys(found))


def _target_to_source_names(plan: TransferPlan) -> dict[str, str]:
    """Target variable -> the name a training comparison reports it under: the source variable it comes from when
    there is exactly one, else the target's own name."""
    sources: dict[str, list[str]] = {}
    for source_name, target_name in _carried_pairs(plan):
        sources.setdefault(target_name, []).append(source_name)
    return {target: found[0] if len(set(found)) == 1 else target for target, found in sources.items()}


def _target_name(reported: str, names: dict[str, str]) -> str:
    return next((target for target, name in names.items() if name == reported), reported)


def _channel_move(layouts: LayoutPair | None) -> str | None:
    if layouts is None:
        return None
    source, target = layouts.source, layouts.target
    if source.endswith("C") and target[1:2] == "C":
        return "last_to_first"
    if source[1:2] == "C" and target.endswith("C"):
        return "first_to_last"
    return None


def _cast(inputs: ModelInputs) -> ModelInputs:
    """Float64 inputs run at the models' float32, as the forward checks do."""
    arrays = tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in inputs.arrays)
    return inputs.with_arrays(arrays)


def _as_float64(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: np.asarray(value, np.float64) for name, value in values.items()}


def _refuse_unreachable_randomness(side: TrainingSide, inputs: ModelInputs, masks: dropout.SharedMasks,
                                   device: str) -> None:
    state = side.state()
    runs = []
    try:
        for _ in range(2):
            masks.steps.pop(0, None)
            with dropout.injected(side.framework, masks, 0, "source"):
                runs.append(side.forward_training(inputs, device))
            side.restore(state)  # a training-mode forward moves BatchNorm statistics
    finally:
        masks.steps.pop(0, None)
        side.restore(state)
    for first, second in zip(*runs):
        scale = float(np.max(np.abs(first), initial=0.0))
        if first.shape != second.shape or float(np.max(np.abs(first - second), initial=0.0)) > RERUN_SHARE * max(
                scale, 1e-30):
            raise ParityUsageError(
                f"the {side.role} ({side.description}) gives different outputs on two training-mode runs with the "
                f"same inputs, weights and dropout masks: it holds randomness the training check cannot give both "
                f"sides alike (tf.nn.dropout or torch.dropout called directly, GaussianNoise, GaussianDropout, "
                f"random augmentation). The check injects masks into keras.layers.Dropout and "
                f"torch.nn.functional.dropout (nn.Dropout) only; use those, or disable the other random ops for the "
                f"check")


def _expected_running_variances(expected_after: dict[str, np.ndarray], expected_before: dict[str, np.ndarray],
                                source_before: dict[str, np.ndarray], source_after: dict[str, np.ndarray],
                                plan: TransferPlan, source: TrainingSide, source_norms: dict[str, BatchNormSettings],
                                torch_side: TrainingSide) -> None:
    """Replace each carried BatchNorm running variance with its value in the target's convention (statistics.py).
    ``source_norms``: the source's BatchNorm settings, read once before the steps (they do not change)."""
    for pair in plan.pairs:
        if pair.source.op != "BatchNormalization" or "var" not in pair.source.bindings:
            continue
        source_variables = pair.source.bindings["var"].variables
        target_variables = pair.target.bindings["var"].variables
        norm = source_norms.get(pair.source.layer)
        torch_layer = pair.source.layer if source is torch_side else pair.target.layer
        elements = torch_side.batch_norm_elements_of(torch_layer)
        if (norm is None or norm.momentum is None or not norm.updates_statistics or elements is None
                or len(source_variables) != 1 or len(target_variables) != 1):
            continue
        source_name, target_name = source_variables[0], target_variables[0]
        if np.array_equal(source_before[source_name], source_after[source_name]):
            continue  # the source did not update it this step (inference mode): neither should the target
        expected_after[target_name] = statistics.expected_running_variance(
            expected_before[target_name], source_before[source_name], source_after[source_name], norm.momentum,
            elements, source.framework)


def _compare_step(step: int, source_loss: float, target_loss: float, expected_before: dict[str, np.ndarray],
                  expected_after: dict[str, np.ndarray], target_before: dict[str, np.ndarray],
                  target_after: dict[str, np.ndarray], names: dict[str, str],
                  settings: ParitySettings) -> TrainingStep:
    loss = compare.compare_arrays(f"step {step} loss", np.float64(target_loss), np.float64(source_loss),
                                  atol=settings.atol, rtol=settings.rtol)
    weights: dict[str, Comparison] = {}
    updates: dict[str, Comparison] = {}
    for target_name, expected in expected_after.items():
        if target_name not in target_after:
            continue
        name = names.get(target_name, target_name)
        actual = np.asarray(target_after[target_name], np.float64)
        weights[name] = compare.compare_arrays(name, actual, expected, atol=settings.atol, rtol=settings.rtol)
        expected_update = expected - expected_before[target_name]
        actual_update = actual - np.asarray(target_before[target_name], np.float64)
        # The update at its own scale: a share of the source's largest update, plus the float32 rounding of the two
        # weights it is the difference of.
        scale = float(np.max(np.abs(expected_update), initial=0.0))
        floor = 2.0 * float(np.spacing(np.float32(np.max(np.abs(expected), initial=0.0))))
        updates[f"{name} (update)"] = compare.compare_arrays(f"{name} (update)", actual_update, expected_update,
                                                             atol=settings.update_rtol * scale + floor, rtol=0.0)
    return TrainingStep(step, source_loss, target_loss, loss, weights, updates)
