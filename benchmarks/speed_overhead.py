"""Issue 4, measurement 2: the speed harness's own overhead against raw framework calls.

For the CIFAR-10 CNN (Keras) and its PyTorch port, batch 32, CPU, forward passes: the closures the harness times (the
adapters' speed_call: a tf.function with a pinned signature under tf.device plus device sync; torch.inference_mode plus
device sync) against the bare framework calls (the same tf.function called directly; ``model(x)`` under
inference_mode). The harness itself compares them: measure_speed(raw call, harness closure) gives, per framework, the
median ratio closure / raw over interleaved rounds, so machine noise hits both alike. Repeated 5 times; plus the wall
time of one speed measurement against its budget (warm-up, calibration and settle pauses included).

    python benchmarks/speed_overhead.py
"""

from __future__ import annotations

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

from fixtures.ports import GOOD_PORTS  # noqa: E402
from pytest_parity.frameworks import flatten_inputs  # noqa: E402
from pytest_parity.frameworks.tensorflow import TensorFlowModel  # noqa: E402
from pytest_parity.frameworks.torch import TorchModel  # noqa: E402
from pytest_parity.layouts import parse_layouts  # noqa: E402
from pytest_parity.verdict import timing  # noqa: E402


def main() -> None:
    case = next(c for c in GOOD_PORTS if c.name == "cifar_cnn")
    keras_model, torch_model = case.build_keras(), case.build_torch().eval()
    x = np.random.default_rng(0).standard_normal((32, 32, 32, 3)).astype(np.float32)
    x_torch = parse_layouts(case.layouts).source_to_target(x)
    source, target = TensorFlowModel(keras_model), TorchModel(torch_model)
    source_call = source.speed_call(flatten_inputs(x), "cpu", "forward")
    target_call = target.speed_call(flatten_inputs(x_torch), "cpu", "forward")

    compiled = tf.function(lambda t: keras_model(t, training=False), input_signature=[tf.TensorSpec(x.shape)])
    x_tf, x_pt = tf.constant(x), torch.from_numpy(x_torch)

    def raw_tf() -> None:
        compiled(x_tf)

    def raw_torch() -> None:
        with torch.inference_mode():
            torch_model(x_pt)

    tf_ratios, torch_ratios, walls = [], [], []
    for _ in range(5):
        tf_ratios.append(timing.measure_speed(raw_tf, source_call, None).ratio)
        torch_ratios.append(timing.measure_speed(raw_torch, target_call, None).ratio)
        started = time.perf_counter()
        timing.measure_speed(source_call, target_call, None)
        walls.append(time.perf_counter() - started)
    print("harness closure / raw call, per repeat:")
    print("  TF    " + "  ".join(f"{r:.3f}" for r in tf_ratios) + f"   median {statistics.median(tf_ratios):.3f}")
    print("  torch " + "  ".join(f"{r:.3f}" for r in torch_ratios) + f"   median {statistics.median(torch_ratios):.3f}")
    print(f"wall time of one speed measurement: median {statistics.median(walls):.2f} s "
          f"(budget {timing.TIME_BUDGET_S:.1f} s; warm-up, calibration and {timing.SETTLE_S * 1e3:.0f} ms pauses "
          f"on top)")


if __name__ == "__main__":
    main()
