"""Benchmarks 2 and 3: what a parity check costs beyond the framework work it must do, and conversion time.

2. One full check of the CIFAR-10 CNN (outputs + gradients; conversion excluded, i.e. the check's wall time minus its
   conversion_s) against a hand-written script doing the same work: a TF forward + VJP and a torch forward + VJP on
   the converted model, with the same seeded cotangent. Interleaved rounds, medians, ratio (goal <= 1.3).
3. Conversion time (tf2onnx export + onnx2torch import + weight matching) per reference model, median of rounds.

    python benchmarks/check_overhead.py [--rounds 11]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pytest_parity import import_guard

import_guard.install_guard()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch  # noqa: E402

from fixtures.keras_models import BUILDERS, INPUT_SHAPES  # noqa: E402
from pytest_parity.bridge import pipeline as bridge  # noqa: E402
from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.frameworks import flatten_inputs  # noqa: E402
from pytest_parity.frameworks.adapters import load_adapter  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402

BATCH = 8


def hand_written(model, torch_module, x, cotangent):
    """The minimum a person would write: forward + VJP in each framework, results to numpy."""
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        output = model(tensor, training=False)
        loss = tf.reduce_sum(output * cotangent)
    tf_grads = [g.numpy() for g in tape.gradient(loss, [tensor, *model.trainable_variables])]
    torch_input = torch.from_numpy(x).requires_grad_(True)
    weights = [*torch_module.parameters(), *torch_module.buffers()]
    for weight in weights:
        if weight.is_floating_point():
            weight.requires_grad_(True)
    torch_output = torch_module(torch_input)
    torch_loss = (torch_output * torch.from_numpy(cotangent)).sum()
    differentiable = [torch_input, *(w for w in weights if w.requires_grad)]
    torch_grads = [g.numpy() for g in torch.autograd.grad(torch_loss, differentiable, allow_unused=True)
                   if g is not None]
    return output.numpy(), torch_output.detach().numpy(), tf_grads, torch_grads


def check_overhead(rounds: int) -> None:
    model = BUILDERS["cifar_cnn"]()
    x = np.random.default_rng(0).standard_normal((BATCH, *INPUT_SHAPES["cifar_cnn"])).astype(np.float32)
    cotangent = np.random.default_rng(1).standard_normal((BATCH, 10)).astype(np.float32)
    torch_module = bridge.import_into_torch(load_adapter("tensorflow", model).to_onnx(flatten_inputs(x), 17)).module
    torch_module.eval()
    settings = ParitySettings()
    for _ in range(2):  # warm-up both paths
        run_check(model, None, x, settings, "cpu", "bench")
        hand_written(model, torch_module, x, cotangent)
    check_s, script_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        result = run_check(model, None, x, settings, "cpu", "bench")
        check_s.append(time.perf_counter() - started - result.conversion_s)
        started = time.perf_counter()
        hand_written(model, torch_module, x, cotangent)
        script_s.append(time.perf_counter() - started)
    check, script = statistics.median(check_s), statistics.median(script_s)
    print(f"2. full check of cifar_cnn (batch {BATCH}, outputs + gradients, conversion excluded), {rounds} rounds")
    print(f"   parity check : median {check * 1e3:.1f} ms")
    print(f"   hand-written : median {script * 1e3:.1f} ms")
    print(f"   ratio        : {check / script:.2f} (goal <= 1.3)")


def conversion_times(rounds: int) -> None:
    print(f"3. conversion time per reference model (export + import + weight matching), median of {rounds}")
    settings = ParitySettings(grad=False)
    for name, build in BUILDERS.items():
        model = build()
        x = np.zeros((BATCH, *INPUT_SHAPES[name]), np.float32)
        times = [run_check(model, None, x, settings, "cpu", "bench").conversion_s for _ in range(rounds)]
        print(f"   {name:<18} {statistics.median(times) * 1e3:7.1f} ms (min {min(times) * 1e3:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    arguments = parser.parse_args()
    print(f"tensorflow {tf.__version__}, torch {torch.__version__}, {os.cpu_count()} cores")
    check_overhead(arguments.rounds)
    conversion_times(max(3, arguments.rounds // 2))


if __name__ == "__main__":
    main()
