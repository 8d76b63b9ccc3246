"""A weight trainable on one side of a port and frozen on the other (issue 24, item 3) fails in both directions,
naming requires_grad / trainable and the layer: the outputs agree, so only the weight account can show it. A frozen
source weight no longer silently leaves the count ("weights compared 10 of 10"); frozen on both sides is fine."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings

INPUTS = np.random.default_rng(5).standard_normal((3, 4)).astype(np.float32)


def _pair(keras_frozen: bool = False, torch_frozen: bool = False) -> tuple[Any, Any]:
    import keras
    import torch

    hidden = keras.layers.Dense(6, activation="relu", name="hidden")
    keras_model = keras.Sequential([keras.Input((4,)), hidden, keras.layers.Dense(3, name="head")])
    hidden.trainable = not keras_frozen
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    torch_model[0].requires_grad_(not torch_frozen)
    return keras_model, torch_model


def _run(source: Any, target: Any, **settings: Any) -> Any:
    return run_check(source, target, INPUTS, ParitySettings(devices=("cpu",), **settings), "cpu", "trainability")


@pytest.mark.parametrize("frozen_side", ["keras", "torch"])
@pytest.mark.parametrize("direction", ["keras->torch", "torch->keras"])
def test_frozen_on_one_side_fails_naming_the_flag_and_the_layer(direction, frozen_side):
    keras_model, torch_model = _pair(keras_frozen=frozen_side == "keras", torch_frozen=frozen_side == "torch")
    source, target = (keras_model, torch_model) if direction == "keras->torch" else (torch_model, keras_model)
    with pytest.raises(ParityError) as failure:
        _run(source, target)
    message = str(failure.value)
    account = failure.value.result.weight_account
    # The hidden layer's kernel and bias: both counted among the trainable weights, neither compared.
    assert len(account.uncompared) == 2 and account.total == 4 and account.compared == 2, account
    flag = "trainable=False" if frozen_side == "keras" else "requires_grad=False"
    other = "requires_grad=True" if frozen_side == "keras" else "trainable=True"
    for reason in account.uncompared.values():
        assert reason.startswith("trainable on one side only:")
        assert flag in reason and other in reason
        assert "/hidden'" in reason and "(layer '0', Linear)" in reason  # the layer on each side
    assert "unmatched_weights= does not accept it" in message
    # The outputs agree: only the account fails.
    assert failure.value.result.outputs.passed and all(c.passed for c in failure.value.result.grads.values())


def test_unmatched_weights_allow_does_not_accept_a_frozen_weight():
    keras_model, torch_model = _pair(torch_frozen=True)
    with pytest.raises(ParityError):
        _run(torch_model, keras_model, unmatched_weights="allow")


@pytest.mark.parametrize("direction", ["keras->torch", "torch->keras"])
def test_frozen_on_both_sides_passes(direction):
    keras_model, torch_model = _pair(keras_frozen=True, torch_frozen=True)
    source, target = (keras_model, torch_model) if direction == "keras->torch" else (torch_model, keras_model)
    result = _run(source, target)
    assert result.passed and result.weight_account.describe() == "weights compared 2 of 2"


@pytest.mark.parametrize("freeze_bias_hh", [True, False])
def test_keras_single_lstm_bias_as_torchs_two_passes_with_either_one_or_both_trainable(freeze_bias_hh):
    """Keras' one LSTM bias is torch's bias_ih + bias_hh: the exact port keeps bias_hh at zero and frozen, the usual
    one trains both. Either way the bias trains on both sides; how far the sum moves per step is the training check's
    to compare (it names two trainable terms), not a frozen weight."""
    from fixtures.training_ports import lstm_keras, lstm_torch

    tokens = np.random.default_rng(0).integers(0, 20, (2, 6))
    result = run_check(lstm_keras(), lstm_torch(freeze_bias_hh=freeze_bias_hh), tokens,
                       ParitySettings(devices=("cpu",)), "cpu", "lstm-bias")
    assert result.passed and not result.weight_account.uncompared
