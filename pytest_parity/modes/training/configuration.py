"""The static configuration diff of a training check: what the two training setups are configured to do, mapped
across the frameworks' conventions, before any number is compared.

A mismatch fails the check even where the steps taken cannot show it yet (an Adam epsilon that matters only once
gradients are small, a BatchNorm momentum over two steps). Each is named with both values in each framework's own terms
and the value that would make them equal. Conventions (measured with Keras 3.15 and torch 2.14):

- BatchNormalization: Keras momentum weights the old moving value (0.99), torch momentum the batch (0.1): torch
  momentum = 1 - Keras momentum. Epsilon 1e-3 (Keras) vs 1e-5 (torch).
- Adam: Keras epsilon is the paper's epsilon-hat, added to sqrt(v) before the bias correction; torch's eps is added
  after it. At step t the torch equivalent is epsilon_hat / sqrt(1 - beta_2**t) (3.2e-6 at step 1 for Keras' 1e-7).
- Weight decay: Keras applies decoupled decay (w -= lr * wd * w) in every optimizer; torch's weight_decay adds
  wd * w to the gradient (L2) except in AdamW (or Adam(decoupled_weight_decay=True)). For plain SGD without momentum
  the two are the same update. A Keras L2(l) regularizer adds l * sum(w**2) to the loss: torch weight_decay 2 * l.
- RMSprop and Adagrad: Keras adds epsilon inside the square root, torch outside it; defaults differ (RMSprop lr 1e-3,
  rho 0.9 vs lr 1e-2, alpha 0.99; Adagrad initial accumulator 0.1 vs 0).
- Clipping: Keras clipnorm clips each variable's gradient, global_clipnorm all of them together (torch's
  clip_grad_norm_); the standard torch step clips nothing.
- Losses: Keras from_logits=False expects probabilities, torch CrossEntropyLoss logits; Keras' default reduction
  "sum_over_batch_size" is torch's "mean".
"""

from __future__ import annotations

import math
from typing import Any

from pytest_parity.modes.training.sides import BatchNormSettings, LossSettings, OptimizerSettings

# Keras optimizer class -> the torch class with the same algorithm.
SAME_ALGORITHM = {"SGD": "SGD", "Adam": "Adam", "AdamW": "AdamW", "RMSprop": "RMSprop", "Adagrad": "Adagrad",
                  "Adamax": "Adamax", "Nadam": "NAdam", "Adadelta": "Adadelta"}
# Relative difference below which two settings are the same number written differently (0.1 vs 1 - 0.9).
SAME_VALUE = 1e-6


def _differs(a: float, b: float, relative: float = SAME_VALUE) -> bool:
    return abs(a - b) > relative * max(abs(a), abs(b), 1e-300)


def _roles(keras_role: str) -> tuple[str, str]:
    torch_role = "target" if keras_role == "source" else "source"
    return keras_role, torch_role


def optimizer_differences(keras: OptimizerSettings, torch: OptimizerSettings, keras_role: str,
                          torch_clips: bool) -> list[str]:
    """Settings fixed for the whole run: algorithm, flags, clipping. ``torch_clips``: the torch side runs the user's
    own train_step (it may clip there, or apply Keras' epsilon formula; the steps will show)."""
    k_role, t_role = _roles(keras_role)
    k, t = keras.values, torch.values
    found: list[str] = []
    expected_torch = SAME_ALGORITHM.get(keras.kind)
    keras_decays = float(k.get("weight_decay") or 0.0) > 0
    if keras.kind == "Adam" and keras_decays:
        expected_torch = "AdamW"  # Keras' decay is decoupled in every optimizer
    if expected_torch is None:
        return []  # an algorithm without a known counterpart: the steps decide alone (run.py notes it)
    torch_kind = torch.kind
    if torch_kind == "Adam" and t.get("decoupled_weight_decay"):
        torch_kind = "AdamW"
    if torch_kind != expected_torch and not (expected_torch == "Adam" and torch_kind == "AdamW"
                                             and not float(t.get("weight_decay") or 0.0)):
        if {expected_torch, torch_kind} <= {"Adam", "AdamW"}:
            found.append(_decay_kind_text(keras, torch, k_role, t_role))
        else:
            found.append(f"optimizer: Keras {keras.kind} in the {k_role}, torch {torch.kind} in the {t_role}: "
                         f"different algorithms; use torch.optim.{expected_torch}")
        return found
    if t.get("maximize"):
        found.append(f"optimizer: torch {torch.kind}(maximize=True) in the {t_role} ascends the loss")
    for keras_key, torch_key in (("amsgrad", "amsgrad"), ("nesterov", "nesterov"), ("centered", "centered")):
        if keras_key in k and torch_key in t and bool(k[keras_key]) != bool(t[torch_key]):
            found.append(f"optimizer {keras_key}: {bool(k[keras_key])} in the {k_role} (Keras {keras.kind}), "
                         f"{bool(t[torch_key])} in the {t_role} (torch {torch.kind}); use {torch_key}="
                         f"{bool(k[keras_key])}")
    if float(t.get("dampening") or 0.0):
        found.append(f"optimizer dampening: torch SGD(dampening={t['dampening']:g}) in the {t_role} scales the "
                     f"gradient into the momentum by 1 - dampening; Keras SGD has no dampening: use dampening=0")
    if float(t.get("lr_decay") or 0.0):
        found.append(f"optimizer lr_decay: torch Adagrad(lr_decay={t['lr_decay']:g}) in the {t_role}; Keras Adagrad "
                     f"has none (use a LearningRateSchedule): use lr_decay=0")
    if keras.kind in ("RMSprop", "Adagrad") and float(k.get("epsilon") or 0.0) + float(t.get("eps") or 0.0) > 0 \
            and not torch_clips:  # the torch side's own train_step may apply Keras' formula: the steps decide
        found.append(f"optimizer epsilon: Keras {keras.kind} adds epsilon={k.get('epsilon'):g} inside the square "
                     f"root (sqrt(v + epsilon)), torch {torch.kind} adds eps={t.get('eps'):g} outside it "
                     f"(sqrt(v) + eps): no pair of values makes them equal; write the same formula on both sides "
                     f"(a custom optimizer, or a train_step) or set both to 0")
    if keras.kind == "Adagrad" and _differs(float(k.get("initial_accumulator_value", 0.1)),
                                            float(t.get("initial_accumulator_value", 0.0))):
        found.append(f"optimizer initial accumulator: Keras Adagrad initial_accumulator_value="
                     f"{k.get('initial_accumulator_value'):g} in the {k_role}, torch Adagrad "
                     f"initial_accumulator_value={t.get('initial_accumulator_value'):g} in the {t_role}: use "
                     f"{k.get('initial_accumulator_value'):g} on both")
    clipping = {key: k.get(key) for key in ("clipnorm", "global_clipnorm", "clipvalue") if k.get(key)}
    if clipping and not torch_clips:
        what = ", ".join(f"{key}={value:g}" for key, value in clipping.items())
        equivalent = ("torch.nn.utils.clip_grad_norm_ on each parameter separately (Keras clipnorm clips each "
                      "variable; clip_grad_norm_ over all parameters is Keras global_clipnorm)"
                      if "clipnorm" in clipping else "torch.nn.utils.clip_grad_norm_(parameters, max_norm)"
                      if "global_clipnorm" in clipping else "torch.nn.utils.clip_grad_value_")
        found.append(f"gradient clipping: Keras {keras.kind}({what}) in the {k_role}; the standard torch step in the "
                     f"{t_role} clips nothing: clip in a train_step with {equivalent}")
    return found


def _decay_kind_text(keras: OptimizerSettings, torch: OptimizerSettings, k_role: str, t_role: str) -> str:
    k_decay = float(keras.values.get("weight_decay") or 0.0)
    t_decay = float(torch.values.get("weight_decay") or 0.0)
    if torch.kind == "Adam":
        return (f"weight decay: Keras {keras.kind}(weight_decay={k_decay:g}) in the {k_role} decays the weights "
                f"directly (decoupled, w -= lr * wd * w); torch Adam(weight_decay={t_decay:g}) in the {t_role} adds "
                f"wd * w to the gradient (L2), which Adam then rescales: use torch.optim.AdamW(weight_decay="
                f"{k_decay:g})")
    return (f"weight decay: torch {torch.kind}(weight_decay={t_decay:g}) in the {t_role} decays decoupled; Keras "
            f"{keras.kind}(weight_decay={k_decay:g}) in the {k_role}: use the same value on both (Keras AdamW or "
            f"Adam(weight_decay=...) is decoupled)")


def step_value_differences(keras: OptimizerSettings, torch: OptimizerSettings, keras_role: str,
                           step: int) -> list[str]:
    """Settings as in force at this step (schedules, an epsilon set per step): learning rate, betas, momentum,
    epsilon (epsilon-hat mapped to the step), weight decay values."""
    k_role, t_role = _roles(keras_role)
    k, t = keras.values, torch.values
    found: list[str] = []
    if _differs(float(k["learning_rate"]), float(t.get("lr", math.nan))):
        found.append(f"learning rate at step {step}: {k['learning_rate']:g} in the {k_role} (Keras {keras.kind} "
                     f"learning_rate), {t.get('lr'):g} in the {t_role} (torch {torch.kind} lr): use lr="
                     f"{k['learning_rate']:g}")
    if "betas" in t and "beta_1" in k:
        for index, key in enumerate(("beta_1", "beta_2")):
            if _differs(float(k[key]), float(t["betas"][index])):
                found.append(f"optimizer {key}: {k[key]:g} in the {k_role} (Keras), betas[{index}]="
                             f"{t['betas'][index]:g} in the {t_role} (torch): use betas[{index}]={k[key]:g}")
    if "momentum" in k and "momentum" in t and _differs(float(k["momentum"]), float(t["momentum"])):
        found.append(f"optimizer momentum: {k['momentum']:g} in the {k_role} (Keras {keras.kind}), "
                     f"{t['momentum']:g} in the {t_role} (torch {torch.kind}): use momentum={k['momentum']:g}")
    if "rho" in k and "alpha" in t and _differs(float(k["rho"]), float(t["alpha"])):
        found.append(f"optimizer rho: Keras RMSprop rho={k['rho']:g} in the {k_role} is torch RMSprop alpha; the "
                     f"{t_role} has alpha={t['alpha']:g}: use alpha={k['rho']:g}")
    if keras.kind in ("Adam", "AdamW", "Adamax", "Nadam") and "eps" in t and "beta_2" in k:
        epsilon_hat = float(k.get("epsilon") or 0.0)
        beta_2 = float(k["beta_2"])
        # Adamax has no bias correction of its second moment: there epsilon means the same on both sides.
        equivalent = epsilon_hat if keras.kind == "Adamax" else epsilon_hat / math.sqrt(1.0 - beta_2 ** step)
        if _differs(equivalent, float(t["eps"]), 1e-3):
            found.append(
                f"Adam epsilon at step {step}: Keras {keras.kind}(epsilon={epsilon_hat:g}) in the {k_role} is the "
                f"paper's epsilon-hat, added to sqrt(v) before the bias correction; torch's eps is added after it, "
                f"so the torch equivalent at step {step} is epsilon / sqrt(1 - beta_2**{step}) = {equivalent:.3g}, "
                f"and the {t_role} has eps={float(t['eps']):g}. Set the torch eps per step in a train_step "
                f"(group['eps'] = {epsilon_hat:g} / math.sqrt(1 - {beta_2:g} ** step)) or the Keras epsilon per "
                f"step the other way")
    keras_decays = float(k.get("weight_decay") or 0.0)
    torch_decoupled = torch.kind == "AdamW" or bool(t.get("decoupled_weight_decay"))
    if keras.kind in ("Adam", "AdamW") and torch_decoupled and _differs(keras_decays, float(t.get("weight_decay")
                                                                                             or 0.0)):
        found.append(f"weight decay: {keras_decays:g} in the {k_role} (Keras {keras.kind} weight_decay; Keras AdamW's "
                     f"default is 0.004), {float(t.get('weight_decay') or 0.0):g} in the {t_role} (torch AdamW "
                     f"weight_decay; its default is 0.01): use weight_decay={keras_decays:g}")
    return found


def weight_decay_differences(keras: OptimizerSettings, torch: OptimizerSettings, keras_role: str,
                             pairs: list[tuple[str, str]], keras_decoupled: dict[str, float],
                             keras_l2: dict[str, float], torch_decay: dict[str, float]) -> list[str]:
    """Per weight (Keras variable, torch parameter): decoupled decay and L2 in force on each side."""
    k_role, t_role = _roles(keras_role)
    torch_decoupled = torch.kind == "AdamW" or bool(torch.values.get("decoupled_weight_decay"))
    plain_sgd = keras.kind == "SGD" and not float(keras.values.get("momentum") or 0.0) and torch.kind == "SGD" \
        and not float(torch.values.get("momentum") or 0.0)
    found: list[str] = []
    for keras_name, torch_name in pairs:
        k_decoupled = keras_decoupled.get(keras_name, 0.0)
        k_l2 = 2.0 * keras_l2.get(keras_name, 0.0)  # d/dw of l * w**2
        t_decay = torch_decay.get(torch_name, 0.0)
        t_decoupled, t_l2 = (t_decay, 0.0) if torch_decoupled else (0.0, t_decay)
        if plain_sgd:
            # Without momentum, lr * (g + wd * w) and w - lr * wd * w then - lr * g are the same update.
            same = not _differs(k_decoupled + k_l2, t_decoupled + t_l2)
        else:
            same = not _differs(k_decoupled, t_decoupled) and not _differs(k_l2, t_l2)
        if same:
            continue
        keras_text = " and ".join(text for text in (
            f"decoupled decay {k_decoupled:g} (optimizer weight_decay)" if k_decoupled else "",
            f"an L2 regularizer l={k_l2 / 2:g} (gradient 2*l*w = {k_l2:g} w)" if k_l2 else "") if text) or "no decay"
        torch_text = (f"{'decoupled decay' if torch_decoupled else 'L2 (weight_decay added to the gradient)'} "
                      f"{t_decay:g}" if t_decay else "no decay")
        if k_l2 and not k_decoupled:
            coupled = torch.kind if torch.kind != "AdamW" else "Adam"
            fix = f"torch weight_decay={k_l2:g} (L2) on {torch_name!r}, in {coupled}"
        elif k_decoupled and not k_l2:
            fix = (f"torch weight_decay={k_decoupled:g} decoupled on {torch_name!r} (AdamW, or SGD without momentum)"
                   if not plain_sgd else f"weight_decay={k_decoupled:g} on {torch_name!r}")
        elif not k_decoupled and not k_l2:
            fix = f"no weight decay on {torch_name!r} (a param group with weight_decay=0)"
        else:
            fix = "the same decay on both sides"
        found.append(f"weight decay of {keras_name!r}: Keras {keras.kind} in the {k_role} applies {keras_text}; "
                     f"torch {torch.kind} in the {t_role} applies {torch_text} to {torch_name!r}: use {fix}")
        if len(found) >= 5:
            found.append("weight decay: more weights differ the same way (first 5 named)")
            break
    return found


def batch_norm_differences(pairs: list[tuple[BatchNormSettings, BatchNormSettings]], keras_role: str,
                           keras_first: bool) -> list[str]:
    """Per BatchNormalization pair; ``keras_first``: each pair is (keras settings, torch settings)."""
    k_role, t_role = _roles(keras_role)
    found: list[str] = []
    for keras, torch in pairs:
        if not keras_first:
            keras, torch = torch, keras
        label = f"BatchNormalization {keras.layer!r} / {torch.layer!r}"
        if torch.momentum is None:
            found.append(f"{label}: torch momentum=None in the {t_role} keeps a cumulative average of all batches; "
                         f"Keras has only the exponential one: use momentum={keras.momentum:g} (Keras momentum "
                         f"{1 - (keras.momentum or 0):g})")
        elif keras.momentum is not None and _differs(keras.momentum, torch.momentum):
            found.append(f"{label} momentum: Keras momentum={1 - keras.momentum:g} in the {k_role} weights the old "
                         f"moving value, so it equals torch momentum={keras.momentum:g} (the weight of the batch); "
                         f"the {t_role} has torch momentum={torch.momentum:g} (= Keras {1 - torch.momentum:g}): use "
                         f"momentum={keras.momentum:g} in torch")
        if _differs(keras.epsilon, torch.epsilon):
            found.append(f"{label} epsilon: {keras.epsilon:g} in the {k_role} (Keras default 1e-3), "
                         f"{torch.epsilon:g} in the {t_role} (torch default 1e-5): use eps={keras.epsilon:g}")
        if keras.updates_statistics != torch.updates_statistics:
            frozen_role, frozen_how = ((k_role, "Keras trainable=False puts a BatchNormalization in inference mode")
                                       if not keras.updates_statistics else
                                       (t_role, "a torch BatchNorm updates them only in train mode and with "
                                                "track_running_stats=True"))
            found.append(f"{label}: the {frozen_role} does not update its moving statistics while training "
                         f"({frozen_how}); the other side does")
    return found


# Keras loss class -> (torch loss classes that compute it, from_logits the torch class expects or None).
LOSS_PAIRS: dict[str, tuple[tuple[str, ...], bool | None]] = {
    # NLLLoss on log_softmax outputs is the same loss (log_softmax of log-probabilities leaves them as they are); the
    # per-step loss comparison checks that the outputs are log-probabilities.
    "SparseCategoricalCrossentropy": (("CrossEntropyLoss", "NLLLoss"), True),
    "CategoricalCrossentropy": (("CrossEntropyLoss",), True),
    "BinaryCrossentropy": (("BCEWithLogitsLoss", "BCELoss"), None),
    "MeanSquaredError": (("MSELoss",), None),
    "MeanAbsoluteError": (("L1Loss",), None),
    "Huber": (("HuberLoss", "SmoothL1Loss"), None),
}
REDUCTIONS = {"sum_over_batch_size": "mean", "sum": "sum", "none": "none", None: "none"}


def loss_differences(keras: LossSettings, torch: LossSettings, keras_role: str) -> list[str]:
    k_role, t_role = _roles(keras_role)
    if keras.kind == "callable" or torch.kind == "callable" or keras.kind not in LOSS_PAIRS:
        return []  # no static mapping: the per-step loss comparison decides
    torch_kinds, logits = LOSS_PAIRS[keras.kind]
    found: list[str] = []
    if torch.kind not in torch_kinds:
        return [f"loss: Keras {keras.kind} in the {k_role}, torch {torch.kind} in the {t_role}: use torch "
                f"{' or '.join(torch_kinds)}"]
    from_logits = bool(keras.values.get("from_logits", False))
    if keras.kind == "BinaryCrossentropy":
        logits = torch.kind == "BCEWithLogitsLoss"
    if logits is not None and from_logits != logits:
        found.append(f"loss from_logits: Keras {keras.kind}(from_logits={from_logits}) in the {k_role} expects "
                     f"{'logits' if from_logits else 'probabilities (a model ending in softmax/sigmoid)'}; torch "
                     f"{torch.kind} in the {t_role} expects {'logits' if logits else 'probabilities'}: "
                     + ("use from_logits=True with logits on both sides, or torch NLLLoss on log-probabilities"
                        if logits else "use from_logits=False, or torch BCEWithLogitsLoss"))
    reduction = REDUCTIONS.get(keras.values.get("reduction", "sum_over_batch_size"), "?")
    if "reduction" in torch.values and torch.values["reduction"] != reduction:
        found.append(f"loss reduction: Keras reduction={keras.values.get('reduction')!r} in the {k_role} is torch "
                     f"reduction={reduction!r}; the {t_role} has {torch.values['reduction']!r}")
    k_smoothing = float(keras.values.get("label_smoothing") or 0.0)
    t_smoothing = float(torch.values.get("label_smoothing") or 0.0)
    if _differs(k_smoothing, t_smoothing):
        found.append(f"loss label_smoothing: {k_smoothing:g} in the {k_role}, {t_smoothing:g} in the {t_role}")
    return found


def trainability_differences(groups: list[tuple[tuple[str, ...], tuple[str, ...], set[str], set[str]]],
                             source_framework: str) -> list[str]:
    """Per carried tensor: (source variables, target variables, the trainable ones of each). The same number must
    train on both sides: one source weight carried into a sum of target weights (Keras' one LSTM bias into torch's
    bias_ih + bias_hh) trains alike only when exactly one of them trains, since each trainable one takes the full
    gradient step."""
    target_framework = "torch" if source_framework == "tensorflow" else "tensorflow"
    found: list[str] = []
    for source_names, target_names, source_trains, target_trains in groups:
        if len(source_trains) == len(target_trains):
            continue
        if len(source_names) == 1 and len(target_names) == 1:
            frozen_role, frozen_name, framework = (("target", target_names[0], target_framework) if source_trains
                                                   else ("source", source_names[0], source_framework))
            how = ("requires_grad=False, or not in the optimizer's param groups" if framework == "torch"
                   else "trainable=False on its layer")
            found.append(f"trainability: {source_names[0]!r} is {'trainable' if source_trains else 'frozen'} in the "
                         f"source, {target_names[0]!r} {'trainable' if target_trains else 'frozen'} in the target "
                         f"({frozen_name!r} is frozen in the {frozen_role}: {how})")
            continue
        found.append(f"trainability: {' + '.join(map(repr, source_names))} in the source ({len(source_trains)} "
                     f"trainable) is carried into {' + '.join(map(repr, target_names))} in the target "
                     f"({len(target_trains)} trainable); each trainable tensor takes the full gradient step, so their "
                     f"sum moves {len(target_trains) or 0} time(s) as far as the source's "
                     + ("(a recurrent layer's second bias): keep exactly one trainable and the other frozen at zero "
                        "(e.g. lstm.bias_hh_l0.requires_grad_(False))" if len(target_trains) > len(source_trains)
                        else "one: train as many on each side"))
    return found


def describe_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())
