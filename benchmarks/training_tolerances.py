"""Float32 drift of correct training ports against the smallest mutants' signal, and the training check's cost.

1. Drift: correct ports (fixtures/training_ports.py, fixtures/training_mutants.py) trained 20 steps on 20 batches,
   3 seeds. Per step: the largest |weight difference| over all carried tensors, and the share of its allowance each
   comparison uses (weights: max |diff| / (atol + rtol * max |source|), an approximation of the elementwise rule;
   updates: max |update diff| / (update_rtol * source update scale + rounding floor), the check's own rule). A
   usage below 1 passes.
2. Signal: the smallest mutants -- lr off by 1%, BatchNorm momentum 0.011 for 0.01, torch Adam eps=1e-7 fixed for
   Keras' epsilon-hat 1e-7 -- measured the same way. The configuration diff names each of them before any step
   (it compares settings to a relative 1e-6); the figures here say whether the numbers alone would.
3. Cost: a 5-step training check vs 5 hand-written training steps in each framework (Keras GradientTape +
   apply_gradients, torch backward + step), median of 3 runs after a warm-up run.

Writes benchmarks/training_tolerances.json and prints tables.

    PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .tox/py311/bin/python benchmarks/training_tolerances.py
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fixtures import training_mutants as zoo
from fixtures.training_ports import CASES_BY_NAME
from pytest_parity import ParityError
from pytest_parity.check import run_training_check
from pytest_parity.settings import ParitySettings

warnings.filterwarnings("ignore", message="CUDA initialization")
OUTPUT = pathlib.Path(__file__).with_name("training_tolerances.json")
STEPS = 20
SEEDS = (0, 1, 2)
DEFAULTS = ParitySettings()

CORRECT = {
    "mlp_sgd": zoo.MLP_K,
    "mlp_adam": zoo.ADAM_K,
    "conv_bn_sgd_momentum": zoo.BN_K,
    "conv_bn_adam": CASES_BY_NAME["conv_bn_adam"],
    "cifar_cnn_adam": CASES_BY_NAME["cifar_cnn_adam"],
    "torch_conv_bn_sgd_momentum": zoo.BN_T,
}
SMALLEST = {
    "lr_off_1pct (mlp_sgd)": zoo.MLP_K.replace(name="lr_1pct", optimizers=zoo.sgd(0.1, torch_lr=0.101)),
    "bn_momentum_0.011 (conv_bn)": zoo.BN_K.replace(
        name="bn_momentum_0.011", build_torch=zoo._with(zoo.conv_bn_torch, momentum=0.011, eps=1e-3)),
    "adam_eps_fixed_1e-7 (mlp_adam)": zoo.ADAM_K.replace(name="adam_eps_fixed", torch_step=None,
                                                         optimizers=zoo.adam(torch_options={"eps": 1e-7})),
}


def _batches(case, seed, count):
    rng = np.random.default_rng(seed)
    return case.make_batches(lambda *shape: rng.standard_normal(shape).astype(np.float32),
                             lambda low, high, shape: rng.integers(low, high, shape), count)


def _result(case, seed, count):
    source, target, arguments = case.arguments(_batches(case, seed, count))
    layouts = arguments.pop("layouts")
    try:
        return run_training_check(source, target, **arguments, steps=None,
                                  settings=ParitySettings(layouts=layouts, seed=seed), device="cpu",
                                  seed_key=f"{case.name} {seed}"), False
    except ParityError as error:
        return error.result, True


def _usage(comparison, weight):
    if weight:
        return comparison.max_abs / (comparison.atol + comparison.rtol * comparison.source_max_abs)
    return comparison.max_abs / comparison.atol if comparison.atol > 0 else (0.0 if comparison.max_abs == 0 else
                                                                               float("inf"))


def drift(case, seed):
    result, failed = _result(case, seed, STEPS)
    per_step = []
    for step in result.training.steps:
        per_step.append({
            "step": step.step,
            "loss_abs": step.loss.max_abs,
            "weight_max_abs": max(c.max_abs for c in step.weights.values()),
            "weight_usage": max(_usage(c, True) for c in step.weights.values()),
            "update_usage": max(_usage(c, False) for c in step.updates.values()),
            "passed": step.passed,
        })
    return {"failed": failed, "configuration": list(result.training.configuration), "steps": per_step}


def _keras_steps(model, optimizer, loss, batches):
    import tensorflow as tf

    for inputs, labels in batches:
        with tf.GradientTape() as tape:
            value = loss(tf.constant(labels), model(tf.constant(inputs), training=True))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))


def _torch_steps(model, optimizer, loss, step, batches, layouts):
    model.train()
    for inputs, labels in batches:
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(inputs, -1, 1) if layouts else inputs))
        y = torch.from_numpy(labels)
        if step is not None:
            step(model, optimizer, loss, x, y)
        else:
            optimizer.zero_grad()
            loss(model(x), y).backward()
            optimizer.step()


def cost(case, runs=3):
    """Seconds: the 5-step check, and 5 hand-written steps per framework (fresh models each run)."""
    batches = _batches(case, 0, 5)
    check, keras_s, torch_s = [], [], []
    for run in range(runs + 1):
        source, target, arguments = case.arguments(batches)
        layouts = arguments.pop("layouts")
        started = time.perf_counter()
        try:
            run_training_check(source, target, **arguments, steps=None, settings=ParitySettings(layouts=layouts),
                               device="cpu", seed_key=f"cost {case.name}")
        except ParityError:
            pass
        elapsed = time.perf_counter() - started
        keras_model, torch_model = case.build_keras(), case.build_torch()
        keras_loss, torch_loss = case.losses()
        keras_optimizer, torch_factory = case.optimizers()
        torch_optimizer = torch_factory(torch_model.parameters())
        started = time.perf_counter()
        _keras_steps(keras_model, keras_optimizer, keras_loss, batches)
        keras_elapsed = time.perf_counter() - started
        started = time.perf_counter()
        _torch_steps(torch_model, torch_optimizer, torch_loss, case.torch_step, batches, case.layouts)
        torch_elapsed = time.perf_counter() - started
        if run:  # the first run warms up both frameworks
            check.append(elapsed)
            keras_s.append(keras_elapsed)
            torch_s.append(torch_elapsed)
    check_s, keras_med, torch_med = statistics.median(check), statistics.median(keras_s), statistics.median(torch_s)
    return {"check_s": check_s, "keras_steps_s": keras_med, "torch_steps_s": torch_med,
            "ratio": check_s / (keras_med + torch_med)}


def _worst(runs, key, pick=max):
    return [pick(run["steps"][i][key] for run in runs) for i in range(STEPS)]


def main() -> None:
    report = {"steps": STEPS, "seeds": list(SEEDS),
              "defaults": {"atol": DEFAULTS.atol, "rtol": DEFAULTS.rtol, "update_rtol": DEFAULTS.update_rtol},
              "correct": {}, "mutants": {}, "cost": {}}
    for name, case in CORRECT.items():
        runs = [drift(case, seed) for seed in SEEDS]
        report["correct"][name] = {
            "false_failures": [seed for seed, run in zip(SEEDS, runs) if run["failed"]],
            "worst_weight_max_abs": _worst(runs, "weight_max_abs"),
            "worst_weight_usage": _worst(runs, "weight_usage"),
            "worst_update_usage": _worst(runs, "update_usage"),
            "worst_loss_abs": _worst(runs, "loss_abs"),
            "runs": runs,
        }
    for name, case in SMALLEST.items():
        runs = [drift(case, seed) for seed in SEEDS]
        report["mutants"][name] = {
            "caught_statically": all(run["configuration"] for run in runs),
            "configuration": runs[0]["configuration"],
            "least_weight_max_abs": _worst(runs, "weight_max_abs", min),
            "least_weight_usage": _worst(runs, "weight_usage", min),
            "least_update_usage": _worst(runs, "update_usage", min),
            "first_numeric_failure_step": [next((s["step"] for s in run["steps"] if not s["passed"]), None)
                                           for run in runs],
        }
    drift_update = max(max(v["worst_update_usage"]) for v in report["correct"].values())
    drift_weight = max(max(v["worst_weight_usage"]) for v in report["correct"].values())
    report["summary"] = {
        "correct_worst_update_usage": drift_update, "correct_update_margin": 1.0 / drift_update,
        "correct_worst_weight_usage": drift_weight, "correct_weight_margin": 1.0 / drift_weight,
        "false_failures": {name: v["false_failures"] for name, v in report["correct"].items() if v["false_failures"]},
        "mutant_step1_update_usage": {name: v["least_update_usage"][0] for name, v in report["mutants"].items()},
    }
    for name in ("mlp_adam", "conv_bn_sgd_momentum", "cifar_cnn_adam"):
        case = CORRECT[name]
        report["cost"][name] = cost(case)
    OUTPUT.write_text(json.dumps(report, indent=1) + "\n")

    shown = (1, 2, 3, 5, 10, 15, 20)
    print(f"Correct ports, worst of {len(SEEDS)} seeds: update usage (1 = at update_rtol={DEFAULTS.update_rtol:g}) / "
          f"weight usage (1 = at atol={DEFAULTS.atol:g}, rtol={DEFAULTS.rtol:g})")
    print("| port | false failures (seeds) | " + " | ".join(f"step {s}" for s in shown) + " |")
    print("|---|---|" + "---|" * len(shown))
    for name, v in report["correct"].items():
        cells = [f"{v['worst_update_usage'][s - 1]:.2g} / {v['worst_weight_usage'][s - 1]:.2g}" for s in shown]
        print(f"| {name} | {v['false_failures'] or '-'} | " + " | ".join(cells) + " |")
    print()
    print("Smallest mutants, least of 3 seeds: update usage / weight usage (> 1 fails numerically)")
    print("| mutant | named statically | first numeric failure step (per seed) | " + " | ".join(
        f"step {s}" for s in shown) + " |")
    print("|---|---|---|" + "---|" * len(shown))
    for name, v in report["mutants"].items():
        cells = [f"{v['least_update_usage'][s - 1]:.2g} / {v['least_weight_usage'][s - 1]:.2g}" for s in shown]
        print(f"| {name} | {'y' if v['caught_statically'] else 'n'} | {v['first_numeric_failure_step']} | "
              + " | ".join(cells) + " |")
    print()
    print("Cost: 5-step training check vs 5 hand-written steps in each framework (median of 3, seconds)")
    print("| port | check | Keras steps | torch steps | ratio (check / both) |")
    print("|---|---|---|---|---|")
    for name, v in report["cost"].items():
        print(f"| {name} | {v['check_s']:.3f} | {v['keras_steps_s']:.3f} | {v['torch_steps_s']:.3f} | "
              f"{v['ratio']:.2f}x |")
    print(f"\nwrote {OUTPUT}")


if __name__ == "__main__":
    main()
