"""The demo parity suite: every reference model of the seed material, converted TensorFlow -> ONNX -> PyTorch.

Run it with ``tox -e demo``; it prints the parity summary and writes parity-report.json.
"""

from __future__ import annotations

import pytest

from fixtures.keras_models import BUILDERS, INPUT_SHAPES

BATCH = 8


@pytest.mark.parity
@pytest.mark.parametrize("name", list(BUILDERS))
def test_reference_model_converts_faithfully(parity, name):
    model = BUILDERS[name]()
    result = parity.check(model, inputs=parity.randn(BATCH, *INPUT_SHAPES[name]))
    assert result.passed
    assert result.route == "tensorflow -> onnx -> torch"
    # Every weight was followed into the converted model and its gradient compared.
    assert not result.unmatched_weights
    assert set(result.grads) >= set(result.weight_names)
