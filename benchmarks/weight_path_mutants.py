"""Mutants on the weight-following paths added for issue 13: each carried gradient of one weight zeroed, halved or
negated after the conversion, for a Conv read by two nodes (rerouted), a Conv whose weight is computed (weight_norm),
the same two for a ConvTranspose,
a class token tiled over the batch, a MultiHeadAttention kernel stored reshaped, and a BatchNormalization's gamma and
beta (exported with the weights as graph inputs), also in MobileNet (its last BatchNormalization: at 32x32 the
gradients of its early layers vanish to ~1e-16, within rounding of zero, where no mutant can be seen; the summary
counts such weights), keras-hub Gemma's query kernel (transposed, then merged) and a weight-standardised Conv of timm's
nf_regnet_b0 (a BatchNormalization of computed statistics; needs keras-hub and timm). Every mutant must fail the
check, every unmutated model pass.

    python benchmarks/weight_path_mutants.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import test_shared_weights as shared_weights  # noqa: E402
import torch  # noqa: E402 - imported before TensorFlow runs anything (PITFALLS: import order)
from keras import layers  # noqa: E402
from test_convert_keras import ClassToken  # noqa: E402

from pytest_parity.bridge import weight_matching  # noqa: E402
from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.errors import ParityError  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402


def _attention() -> keras.Model:
    inputs = keras.Input((6, 16))
    return keras.Model(inputs, layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs))


def _token() -> keras.Model:
    inputs = keras.Input((5, 8))
    return keras.Model(inputs, layers.Dense(3)(ClassToken()(inputs)))


def _conv_batchnorm() -> keras.Model:
    return keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, use_bias=False), layers.BatchNormalization(),
                             layers.ReLU(), layers.Flatten(), layers.Dense(2)])


def _mobilenet() -> keras.Model:
    # Logits, not softmax: a saturated softmax of random weights leaves every gradient near 1e-17, within rounding of
    # zero, where a zeroed gradient cannot be told apart (the summary says so for such a check).
    return keras.applications.MobileNet(alpha=0.25, weights=None, input_shape=(32, 32, 3), classes=4,
                                        classifier_activation=None)


def _gemma() -> keras.Model:
    import keras_hub  # a query kernel [heads, hidden, head_dim], transposed then merged into the MatMul weight

    return keras_hub.models.GemmaBackbone(vocabulary_size=50, num_layers=1, hidden_dim=32, intermediate_dim=64,
                                          num_query_heads=4, num_key_value_heads=2, head_dim=8)


def _nf_regnet() -> torch.nn.Module:
    import timm  # weight standardisation: a BatchNormalization of computed statistics in front of every Conv

    return timm.create_model("nf_regnet_b0", pretrained=False, num_classes=4)


def _token_ids(seed: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, 50, (2, 8)).astype(np.int32)
    return {"token_ids": ids, "padding_mask": np.ones_like(ids)}


def _inputs(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CASES = {
    "conv read by two nodes": (shared_weights.ConvAppliedTwice, _inputs(0, 2, 8, 6, 6), "depthwise.weight"),
    "conv with computed weight": (shared_weights.WeightNormConv, _inputs(1, 2, 3, 10),
                                  "conv.parametrizations.weight.original1"),
    "conv transpose read twice": (shared_weights.ConvTransposeAppliedTwice, _inputs(9, 2, 3, 5, 5), r"up\.weight"),
    "conv transpose computed": (shared_weights.WeightNormConvTranspose, _inputs(10, 2, 3, 9),
                                r"up\.parametrizations\.weight\.original1"),
    "class token tiled": (_token, _inputs(2, 2, 5, 8), "class_token"),
    "attention kernel reshaped": (_attention, _inputs(3, 2, 6, 16), "query/kernel"),
    "batchnorm gamma": (_conv_batchnorm, _inputs(4, 2, 8, 8, 3), r"batch_normalization(_\d+)?/gamma"),
    "batchnorm beta": (_conv_batchnorm, _inputs(5, 2, 8, 8, 3), r"batch_normalization(_\d+)?/beta"),
    "mobilenet last bn gamma": (_mobilenet, _inputs(6, 2, 32, 32, 3), "conv_pw_13_bn/gamma"),
    "gemma query kernel": (_gemma, _token_ids(7), r"decoder_block_0/attention/query/kernel"),
    "nf_regnet standardised conv": (_nf_regnet, _inputs(8, 2, 3, 32, 32), r"stem\.conv\.weight"),
}
MUTANTS = {"none": None, "zeroed": lambda g: g * 0, "halved": lambda g: g / 2, "negated": lambda g: -g}


def main() -> None:
    original = weight_matching.WeightMatch.gradient_to_source_layout
    wrong = 0
    try:
        for label, (build, inputs, weight) in CASES.items():
            for mutant, mutate in MUTANTS.items():
                def carried(self, gradient, mutate=mutate, weight=weight):
                    value = original(self, gradient)
                    # The weight is a pattern: a model built again in one process gets suffixed layer names.
                    hit = re.search(f"(^|/){weight}$", self.source_name)
                    return mutate(value) if mutate is not None and hit else value

                weight_matching.WeightMatch.gradient_to_source_layout = carried
                try:
                    run_check(build(), None, inputs, ParitySettings(), "cpu", "weight-path-mutants")
                    verdict = "PASS"
                except ParityError:
                    verdict = "FAIL"
                wrong += verdict != ("PASS" if mutate is None else "FAIL")
                print(f"{label:<28} {mutant:<8} {verdict}", flush=True)
    finally:
        weight_matching.WeightMatch.gradient_to_source_layout = original
    print(f"wrong verdicts: {wrong} of {len(CASES) * len(MUTANTS)}")


if __name__ == "__main__":
    main()
