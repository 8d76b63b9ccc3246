"""Port mode end to end: every fixture port in both directions, the known-bad ports, and bad input.

Good ports must pass with outputs and every weight's gradient compared (reported under the source's name, with the
target's name beside it). Known-bad ports must fail with a message that names the layer and the cause.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fixtures.ports import BAD_PORTS, GOOD_PORTS, PortCase
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError, ParityUsageError, WeightTransferError
from pytest_parity.layouts import parse_layouts
from pytest_parity.settings import ParitySettings

DIRECTIONS = ("keras->torch", "torch->keras")


def _inputs(case: PortCase, rng: np.random.Generator, batch: int = 3) -> np.ndarray:
    shape = (batch, *case.keras_input_shape)
    if case.input_dtype == "int64":
        return rng.integers(0, case.vocab_size, shape).astype(np.int64)
    return rng.standard_normal(shape).astype(np.float32)


def _oriented(case: PortCase, direction: str, keras_inputs: np.ndarray):
    """(source, target, inputs in the source's layout, layouts) for one direction of a case."""
    keras_model, torch_model = case.build_keras(), case.build_torch()
    if direction == "keras->torch":
        return keras_model, torch_model, keras_inputs, case.layouts
    if case.layouts is None:
        return torch_model, keras_model, keras_inputs, None
    torch_inputs = parse_layouts(case.layouts).source_to_target(keras_inputs)
    return torch_model, keras_model, torch_inputs, (case.layouts[1], case.layouts[0])


@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", GOOD_PORTS, ids=str)
def test_good_port_passes_in_both_directions(parity, case, direction):
    source, target, inputs, layouts = _oriented(case, direction, _inputs(case, np.random.default_rng(7)))
    result = parity.check(source, target, inputs=inputs, layouts=layouts)
    assert result.passed and result.route.startswith("port: ")
    weight_grads = {name for name in result.grads if not name.startswith("input")}
    # Every carried weight that the source trains has its gradient compared, under the source's name.
    assert weight_grads and weight_grads <= set(result.weight_names)
    assert not result.unmatched_weights
    if case.name in ("cifar_cnn", "mnist_cnn"):
        assert any("flattened feature map" in note for note in result.notes), result.notes


def test_gradients_are_reported_under_both_names():
    case = next(c for c in GOOD_PORTS if c.name == "zoo_lstm")
    source, target, inputs, _ = _oriented(case, "keras->torch", _inputs(case, np.random.default_rng(1)))
    result = run_check(source, target, inputs, ParitySettings(devices=("cpu",)), "cpu", "names")
    kernel = next(name for name in result.grads if name.endswith("/kernel"))
    bias = next(name for name in result.grads if name.endswith("/bias"))
    assert result.weight_names[kernel].endswith("weight_ih_l0")
    # Keras has one LSTM bias; torch splits it into two, and both carry its gradient.
    assert result.weight_names[bias].endswith("bias_ih_l0 + rnn.bias_hh_l0"), result.weight_names[bias]


# Each bad port: the phrase that says why, in the diagnosis or the structure error.
EXPECTED_CAUSE = {
    "bad_batchnorm_epsilon": "epsilon differs",
    "bad_same_padding_stride2": "pads differs",
    "bad_wrong_activation": "likely cause: the source applies",
    "bad_missing_bias": "has none",
    "bad_gru_reset_after_false": "reset_after=False",
    "bad_layernorm_epsilon": "epsilon differs",
    "bad_bidirectional_last_step": "backward half differs",
}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", BAD_PORTS, ids=str)
def test_known_bad_port_fails_naming_the_layer_and_cause(case, direction):
    source, target, inputs, layouts = _oriented(case, direction, _inputs(case, np.random.default_rng(3)))
    with pytest.raises((ParityError, WeightTransferError)) as failure:
        run_check(source, target, inputs, ParitySettings(devices=("cpu",), layouts=layouts), "cpu", case.name)
    message = str(failure.value)
    assert case.defect in message
    assert EXPECTED_CAUSE[case.name] in message, message
    if isinstance(failure.value, ParityError):
        assert failure.value.result.diagnosis and case.defect in failure.value.result.diagnosis


# -- bad input ---------------------------------------------------------------------------------------------------------

def _dense_pair(units_torch=(6, 3), bias=True):
    import keras
    import torch

    keras_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"),
                                    keras.layers.Dense(3)])
    layers = [torch.nn.Linear(4, units_torch[0], bias=bias), torch.nn.ReLU()]
    for size_in, size_out in itertools.pairwise(units_torch):
        layers.append(torch.nn.Linear(size_in, size_out))
    return keras_model, torch.nn.Sequential(*layers)


def _run(source, target, inputs, **settings):
    return run_check(source, target, inputs, ParitySettings(devices=("cpu",), **settings), "cpu", "bad-input")


def test_target_of_the_same_framework_is_refused():
    import torch

    with pytest.raises(ParityUsageError, match="both models are PyTorch models"):
        _run(torch.nn.Linear(4, 2), torch.nn.Linear(4, 2), np.zeros((2, 4), np.float32))


def test_different_number_of_layers_lists_both_sides():
    keras_model, torch_model = _dense_pair(units_torch=(6, 5, 3))
    with pytest.raises(WeightTransferError) as failure:
        _run(keras_model, torch_model, np.ones((2, 4), np.float32))
    message = str(failure.value)
    assert "do not correspond at row 2" in message
    assert "W[3,6]" in message and "W[5,6]" in message  # both sides' shapes, in ONNX layout, next to each other
    assert "-> " in message and "!=" in message


def test_layout_of_the_wrong_rank_is_refused():
    keras_model, torch_model = _dense_pair()
    with pytest.raises(ParityUsageError, match=r"describes rank-4 inputs, but input has shape \[2, 4\]"):
        _run(keras_model, torch_model, np.ones((2, 4), np.float32), layouts=("NHWC", "NCHW"))


@pytest.mark.parametrize("layouts, message", [
    (("NHWC",), "must be a pair"),
    (("NHWC", "NCHX"), "do not name the same axes"),
    (("NHHC", "NCHW"), "is not a layout"),
    ("NHWC", "must be a pair"),
])
def test_invalid_layouts_are_refused(layouts, message):
    keras_model, torch_model = _dense_pair()
    with pytest.raises(ParityUsageError, match=message):
        _run(keras_model, torch_model, np.ones((2, 4), np.float32), layouts=layouts)


def test_layouts_in_convert_mode_are_refused():
    keras_model, _ = _dense_pair()
    with pytest.raises(ParityUsageError, match="applies to port mode"):
        _run(keras_model, None, np.ones((2, 4), np.float32), layouts=("NWC", "NCW"))


def test_recurrent_option_without_equivalent_names_layer_and_option():
    import keras
    import torch

    keras_model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, go_backwards=True, name="backwards")])

    class LastStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(3, 4, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0][:, -1]

    with pytest.raises(WeightTransferError) as failure:
        _run(keras_model, LastStep(), np.ones((2, 5, 3), np.float32))
    assert "backwards" in str(failure.value) and "go_backwards" in str(failure.value)


def test_parameters_outside_known_layers_are_named():
    import keras
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.scale = torch.nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.fc(x) * self.scale

    keras_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ParityUsageError, match=r"holds parameters \['scale'\] directly"):
        _run(keras_model, Scaled(), np.ones((2, 4), np.float32))


def test_target_that_cannot_take_the_converted_inputs_says_to_check_layouts():
    import keras
    import torch

    keras_model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3)])
    torch_model = torch.nn.Conv2d(3, 4, 3)
    with pytest.raises(ParityUsageError, match="Check layouts="):
        _run(keras_model, torch_model, np.ones((2, 6, 6, 3), np.float32))  # layouts forgotten


def test_models_are_left_with_their_own_weights():
    keras_model, torch_model = _dense_pair()
    keras_before = [w.numpy().copy() for w in keras_model.weights]
    torch_before = [p.detach().clone() for p in torch_model.parameters()]
    _run(keras_model, torch_model, np.ones((2, 4), np.float32))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(keras_before, keras_model.weights))
    assert all(bool((a == p).all()) for a, p in zip(torch_before, torch_model.parameters()))
