"""How randomize_constant_weights' spread changes the scale of every coverage-suite architecture.

For each keras.applications builder (logits: classifier_activation=None) and each torchvision classification model of
tests/coverage, at the suite's input sizes, batch 2: the largest |output| and the largest |input gradient| (seeded
cotangent) with the weights as built, with the first randomization (zeros -> N(0, 0.1), the rest x U(0.5, 1.5)) and
with the current one (check.ZERO_STD, check.SCALE_SPREAD). A compounding gain shows as outputs far from unit scale.

    python benchmarks/randomized_weight_scale.py [--framework keras|torch] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "coverage"))
sys.path.insert(0, str(ROOT))

import test_architectures as suite  # noqa: E402

from pytest_parity.frameworks.adapters import load_adapter  # noqa: E402
from pytest_parity.modes.steps import SCALE_SPREAD, ZERO_STD, randomize_constant_weights  # noqa: E402

SETTINGS = {"as built": None, "first (0.1, 0.5)": (0.1, 0.5), f"current ({ZERO_STD}, {SCALE_SPREAD})":
            (ZERO_STD, SCALE_SPREAD)}


def keras_scales(name: str) -> dict[str, tuple[float, float]]:
    import keras
    import tensorflow as tf

    size = suite.KERAS_APPLICATIONS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10,
                                              classifier_activation=None)
    x = tf.constant(np.random.default_rng(0).standard_normal((2, size, size, 3)), tf.float32)
    cotangent = tf.constant(np.random.default_rng(1).standard_normal((2, 10)), tf.float32)

    def measure() -> tuple[float, float]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=False)
        gradient = tape.gradient(y, x, output_gradients=cotangent)
        return float(tf.reduce_max(tf.abs(y))), float(tf.reduce_max(tf.abs(gradient)))

    scales = _over_settings(load_adapter("tensorflow", model), measure)
    keras.backend.clear_session()
    return scales


def torch_scales(name: str) -> dict[str, tuple[float, float]]:
    import torch
    import torchvision

    size = suite.TORCHVISION_SIZES.get(name, 32)
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **extra).eval()
    x = torch.tensor(np.random.default_rng(0).standard_normal((2, 3, size, size)), dtype=torch.float32)
    cotangent = torch.tensor(np.random.default_rng(1).standard_normal((2, 10)), dtype=torch.float32)

    def measure() -> tuple[float, float]:
        x.grad = None
        x.requires_grad_(True)
        y = model(x)
        y.backward(cotangent)
        return float(y.detach().abs().max()), float(x.grad.abs().max())

    return _over_settings(load_adapter("torch", model), measure)


def _over_settings(adapter, measure) -> dict[str, tuple[float, float]]:
    scales = {}
    for label, spread in SETTINGS.items():
        originals = {}
        if spread is not None:
            originals = randomize_constant_weights(adapter, np.random.default_rng(2), zero_std=spread[0],
                                                   scale_spread=spread[1])
        scales[label] = measure()
        if originals:
            adapter.assign_weights(originals)
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("keras", "torch"), action="append")
    parser.add_argument("--only", nargs="*", help="model names to measure (default: the whole suite)")
    arguments = parser.parse_args()
    frameworks = arguments.framework or ["keras", "torch"]
    cases = [("keras", name) for name in sorted(suite.KERAS_APPLICATIONS) if "keras" in frameworks]
    cases += [("torch", name) for name in suite.TORCHVISION_MODELS
              if "torch" in frameworks and name not in suite.TOO_LARGE_FOR_ONE_ONNX_FILE]
    if arguments.only:
        cases = [case for case in cases if case[1] in arguments.only]
    labels = list(SETTINGS)
    print("| model | " + " | ".join(f"max abs output / input grad, {label}" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for framework, name in cases:
        scales = (keras_scales if framework == "keras" else torch_scales)(name)
        print(f"| {name} | " + " | ".join(f"{scales[label][0]:.3g} / {scales[label][1]:.3g}" for label in labels)
              + " |", flush=True)
        gc.collect()


if __name__ == "__main__":
    main()
