"""Keras layer names in failure messages are the same whatever the session built before (issue 23, item 5): shown by
their order of appearance within the model, not Keras' process-wide counter; the result keeps the full names."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings


def _keras_model():
    keras.utils.set_random_seed(0)  # the same weights each build: only the names Keras gives could differ
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


def _throwaway_models(count):
    for _ in range(count):
        keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])


def _port_failure(throwaway):
    _throwaway_models(throwaway)
    model = _keras_model()
    torch.manual_seed(0)
    target = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))  # relu, not tanh
    inputs = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    with pytest.raises(ParityError) as failure:
        run_check(model, target, inputs, ParitySettings(), "cpu", "stable-names")
    return model, str(failure.value), failure.value.result


def test_port_messages_name_keras_layers_alike_whatever_was_built_before():
    first_model, first, first_result = _port_failure(0)
    second_model, second, second_result = _port_failure(5)
    assert second_model.name != first_model.name  # Keras' counter moved on ...
    assert second == first  # ... the message did not
    # The mismatch table and the located divergence name the layers by their order in the model.
    assert "gradient 'sequential/dense/kernel' (target: '0.weight')" in first
    assert "first divergence between sequential/dense (Dense) / 0 (Linear) and sequential/dense_1 (Dense)" in first
    assert "Keras Sequential 'sequential'" in first
    # The result, what the JSON report is written from, keeps the full names.
    assert f"{second_model.name}/{second_model.layers[0].name}/kernel" in second_result.grads
    assert set(first_result.grads) != set(second_result.grads)


def test_convert_messages_name_the_source_weights_by_their_order_in_the_model():
    _throwaway_models(3)
    model = _keras_model()
    inputs = np.random.default_rng(0).standard_normal((256, 6)).astype(np.float32) * 1e4
    strict = ParitySettings(atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
    try:
        run_check(model, None, inputs, strict, "cpu", "stable-names-convert")
    except ParityError as failure:
        message = str(failure)
    else:
        pytest.skip("exact agreement at zero tolerance: no message to read")
    assert "Keras Sequential 'sequential'" in message and "gradient 'sequential/dense" in message
    # No source weight is named by Keras' counter (the converted graph's own node names are the exporter's).
    assert f"'{model.name}/" not in message and f" {model.name} " not in message
