"""target_weights='loaded' (issue 24, item 1): the target keeps the weights the user's checkpoint converter loaded into
it, so the converter is the code under test.

A Keras model (the checkpoint) is converted into its PyTorch port by a hand-written converter, as a user ships one; the
check runs Keras -> torch with the converter's weights in the torch model. Each of the four converter bugs of the
issue fails naming the fix (gate blocks in TF1's i,c,f,o order, the LSTM bias copied into both bias_ih and bias_hh,
GRU z/r not swapped, a flatten's Dense kernel not permuted); the correct converter passes for every model, including a
bias split differently from the check's; the other direction (torch -> Keras) names a summed bias left half out. In
carried mode (the default) the unpermuted flatten passes, because the check permutes the kernel itself: in loaded
mode nothing is adapted, and it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from fixtures.flatten_ports import INPUT_HWC, build_keras, build_torch
from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.errors import ParityUsageError
from pytest_parity.modes.port.ops import reorder_gates
from pytest_parity.settings import ParitySettings

LOADED = ParitySettings(devices=("cpu",), target_weights="loaded")


def _randomized(keras_model: Any, seed: int) -> Any:
    """A checkpoint's weights: every tensor random (a fresh model's zero biases would hide bias bugs)."""
    rng = np.random.default_rng(seed)
    for weight in keras_model.weights:
        weight.assign((0.5 * rng.standard_normal(weight.shape)).astype("float32"))
    return keras_model


def _load(torch_model: Any, state: dict[str, np.ndarray]) -> Any:
    import torch

    torch_model.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(value, np.float32))
                                 for name, value in state.items()})
    return torch_model


def _last_step(module: Any) -> Any:
    import torch

    class LastStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module

        def forward(self, x: Any) -> Any:
            return self.rnn(x)[0][:, -1]

    return LastStep()


# -- the checkpoints and their converters ------------------------------------------------------------------------------

def _lstm_keras() -> Any:
    import keras

    return _randomized(keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm")]), 1)


def _lstm_converter(keras_model: Any, bug: str | None) -> Any:
    """Keras LSTM (kernel [in, 4H], gates i,f,c,o, one bias) -> nn.LSTM (gates i,f,g,o: the same order)."""
    import torch

    kernel, recurrent, bias = (w.numpy() for w in keras_model.get_layer("lstm").weights)
    weight_ih, weight_hh, bias_ih, bias_hh = kernel.T, recurrent.T, bias, np.zeros_like(bias)
    if bug == "tf1_gate_order":  # the converter was written for a TF1 checkpoint's i,c,f,o
        weight_ih, weight_hh, bias_ih = (reorder_gates(a, (0, 2, 1, 3), 0) for a in (weight_ih, weight_hh, bias_ih))
    if bug == "bias_in_both":
        bias_hh = bias
    if bug == "bias_split_in_halves":  # correct: the LSTM adds the two
        bias_ih, bias_hh = bias / 2, bias / 2
    return _load(_last_step(torch.nn.LSTM(3, 4, batch_first=True)),
                 {"rnn.weight_ih_l0": weight_ih, "rnn.weight_hh_l0": weight_hh, "rnn.bias_ih_l0": bias_ih,
                  "rnn.bias_hh_l0": bias_hh})


def _gru_keras() -> Any:
    import keras

    return _randomized(keras.Sequential([keras.Input((5, 3)), keras.layers.GRU(4, name="gru")]), 2)


def _gru_converter(keras_model: Any, bug: str | None) -> Any:
    """Keras GRU (gates z,r,h; bias [input, recurrent] with reset_after) -> nn.GRU (gates r,z,n)."""
    import torch

    kernel, recurrent, bias = (w.numpy() for w in keras_model.get_layer("gru").weights)
    order = (0, 1, 2) if bug == "z_r_not_swapped" else (1, 0, 2)
    return _load(_last_step(torch.nn.GRU(3, 4, batch_first=True)),
                 {"rnn.weight_ih_l0": reorder_gates(kernel.T, order, 0),
                  "rnn.weight_hh_l0": reorder_gates(recurrent.T, order, 0),
                  "rnn.bias_ih_l0": reorder_gates(bias[0], order, 0),
                  "rnn.bias_hh_l0": reorder_gates(bias[1], order, 0)})


def _cnn_keras() -> Any:
    return _randomized(build_keras(), 3)


def _cnn_converter(keras_model: Any, bug: str | None) -> Any:
    """Keras CNN (NHWC, flattened as H,W,C) -> the PyTorch port that flattens its NCHW map as C,H,W: the Dense
    kernel's input features must be permuted from (H,W,C) to (C,H,W) order."""
    state = {}
    for name in ("conv1", "conv2"):
        kernel, bias = (w.numpy() for w in keras_model.get_layer(name).weights)
        state[f"{name}.weight"], state[f"{name}.bias"] = kernel.transpose(3, 2, 0, 1), bias
    kernel, bias = (w.numpy() for w in keras_model.get_layer("fc").weights)
    out = kernel.shape[1]
    state["fc.weight"] = kernel.T if bug == "flatten_not_permuted" else \
        kernel.reshape(2, 2, 6, out).transpose(3, 2, 0, 1).reshape(out, -1)
    state["fc.bias"] = bias
    return _load(build_torch("modules"), state)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    build_keras: Callable[[], Any]
    convert: Callable[[Any, str | None], Any]
    input_shape: tuple[int, ...]
    layouts: tuple[str, str] | None = None

    def __str__(self) -> str:
        return self.name


CHECKPOINTS = {case.name: case for case in (
    Checkpoint("lstm", _lstm_keras, _lstm_converter, (5, 3)),
    Checkpoint("gru", _gru_keras, _gru_converter, (5, 3)),
    Checkpoint("cnn_flatten", _cnn_keras, _cnn_converter, INPUT_HWC, ("NHWC", "NCHW")),
)}

# The four converter bugs: (checkpoint, bug, the target tensor that must be named, what the fix must say).
CONVERTER_BUGS = [
    ("lstm", "tf1_gate_order", "rnn.weight_ih_l0",
     ["i,g,f,o order", "TensorFlow 1's LSTMCell order i,c,f,o", "expects i,f,g,o", "reorder the blocks"]),
    ("lstm", "bias_in_both", "rnn.bias_hh_l0", ["'rnn.bias_ih_l0' holds it too", "counts twice",
                                                "zeros in the other"]),
    ("gru", "z_r_not_swapped", "rnn.weight_ih_l0", ["z,r,n order", "Keras' own order z,r,h", "expects r,z,n",
                                                    "reorder the blocks"]),
    ("cnn_flatten", "flatten_not_permuted", "fc.weight", ["source's flatten order (feature map [2,2,6])",
                                                          "flattens the map as [6,2,2]", "permute"]),
]


def _inputs(case: Checkpoint) -> np.ndarray:
    return np.random.default_rng(11).standard_normal((3, *case.input_shape)).astype(np.float32)


def _check(source: Any, target: Any, inputs: np.ndarray, settings: ParitySettings = LOADED,
           layouts: tuple[str, str] | None = None) -> Any:
    from dataclasses import replace

    return run_check(source, target, inputs, replace(settings, layouts=layouts), "cpu", "as-is")


@pytest.mark.parametrize("case", list(CHECKPOINTS.values()), ids=str)
def test_a_correct_converter_passes(case):
    keras_model = case.build_keras()
    result = _check(keras_model, case.convert(keras_model, None), _inputs(case), layouts=case.layouts)
    assert result.passed
    assert result.weights and all(c.passed for c in result.weights.values())
    # Every tensor the check carries was compared, by the target's name, and every weight's gradient too.
    assert set(result.weights) == {name.strip() for names in result.weight_names.values()
                                   for name in names.split("+")}
    assert result.weight_account.compared == result.weight_account.total > 0


def test_a_bias_split_otherwise_than_the_check_passes_with_a_note():
    keras_model = _lstm_keras()
    result = _check(keras_model, _lstm_converter(keras_model, "bias_split_in_halves"), _inputs(CHECKPOINTS["lstm"]))
    assert result.passed
    assert any("uses only the sum" in note for note in result.notes), result.notes


@pytest.mark.parametrize("checkpoint, bug, tensor, fix", CONVERTER_BUGS, ids=[bug for _, bug, _, _ in CONVERTER_BUGS])
def test_each_converter_bug_fails_naming_the_fix(checkpoint, bug, tensor, fix):
    case = CHECKPOINTS[checkpoint]
    keras_model = case.build_keras()
    with pytest.raises(ParityError) as failure:
        _check(keras_model, case.convert(keras_model, bug), _inputs(case), layouts=case.layouts)
    result = failure.value.result
    assert not result.weights[tensor].passed
    problem = result.weights[tensor].problem
    for phrase in fix:
        assert phrase in problem, problem
    message = str(failure.value)
    assert "transferred weights:" in message and f"weight {tensor!r}:" in message
    assert all(phrase in message for phrase in fix)


def test_a_flatten_the_port_does_not_permute_passes_carried_and_fails_loaded():
    """Carried mode reads the flatten order from the activations and permutes the kernel for the port; loaded mode
    adapts nothing, so the converter that did not permute fails."""
    case = CHECKPOINTS["cnn_flatten"]
    keras_model = case.build_keras()
    carried = _check(keras_model, case.convert(keras_model, "flatten_not_permuted"), _inputs(case),
                     ParitySettings(devices=("cpu",)), layouts=case.layouts)
    assert carried.passed and any("was permuted to match" in note for note in carried.notes)
    with pytest.raises(ParityError) as failure:
        _check(keras_model, case.convert(keras_model, "flatten_not_permuted"), _inputs(case), layouts=case.layouts)
    result = failure.value.result
    assert not result.outputs.passed
    assert any("your loaded kernel was compared" in note for note in result.notes)
    assert not any("was permuted to match" in note for note in result.notes)


def test_torch_source_into_keras_names_a_summed_bias_left_half_out():
    import keras
    import torch

    torch.manual_seed(0)
    source = _last_step(torch.nn.LSTM(3, 4, batch_first=True))

    def keras_port(bias_hh_left_out: bool) -> Any:
        model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4, name="lstm")])
        state = {name: value.detach().numpy() for name, value in source.state_dict().items()}
        bias = state["rnn.bias_ih_l0"] + (0 if bias_hh_left_out else state["rnn.bias_hh_l0"])
        model.get_layer("lstm").set_weights([state["rnn.weight_ih_l0"].T, state["rnn.weight_hh_l0"].T, bias])
        return model

    inputs = _inputs(CHECKPOINTS["lstm"])
    assert _check(source, keras_port(False), inputs).passed
    with pytest.raises(ParityError) as failure:
        _check(source, keras_port(True), inputs)
    (name,) = [name for name, c in failure.value.result.weights.items() if not c.passed]
    assert name.endswith("lstm_cell/bias")
    assert "without 'rnn.bias_hh_l0'" in failure.value.result.weights[name].problem


def test_the_users_weights_stay_in_both_models():
    case = CHECKPOINTS["lstm"]
    keras_model = case.build_keras()
    target = case.convert(keras_model, "tf1_gate_order")
    before = {name: value.clone() for name, value in target.state_dict().items()}
    keras_before = [w.numpy().copy() for w in keras_model.weights]
    with pytest.raises(ParityError):
        _check(keras_model, target, _inputs(case))
    assert all(bool((before[name] == value).all()) for name, value in target.state_dict().items())
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(keras_before, keras_model.weights))


def test_loaded_weights_in_convert_mode_are_refused():
    keras_model = _lstm_keras()
    with pytest.raises(ParityUsageError, match="applies to port mode"):
        _check(keras_model, None, _inputs(CHECKPOINTS["lstm"]))


def test_an_unknown_target_weights_value_is_refused():
    from pytest_parity.settings import resolve

    with pytest.raises(ParityUsageError, match=r"target_weights='as_is' must be one of \('carried', 'loaded'\)"):
        resolve(ParitySettings(), (), {"target_weights": "as_is"})


def test_tensors_written_into_each_others_place_are_named():
    import keras
    import torch

    keras_model = _randomized(keras.Sequential([keras.Input((5, 4)), keras.layers.LSTM(4, name="lstm")]), 4)
    kernel, recurrent, bias = (w.numpy() for w in keras_model.get_layer("lstm").weights)
    target = _load(_last_step(torch.nn.LSTM(4, 4, batch_first=True)),  # input and hidden size alike: [16, 4] both
                   {"rnn.weight_ih_l0": recurrent.T, "rnn.weight_hh_l0": kernel.T, "rnn.bias_ih_l0": bias,
                    "rnn.bias_hh_l0": np.zeros_like(bias)})
    inputs = np.random.default_rng(2).standard_normal((3, 5, 4)).astype(np.float32)
    with pytest.raises(ParityError) as failure:
        _check(keras_model, target, inputs)
    weights = failure.value.result.weights
    assert "meant for 'rnn.weight_hh_l0'" in weights["rnn.weight_ih_l0"].problem
    assert "meant for 'rnn.weight_ih_l0'" in weights["rnn.weight_hh_l0"].problem
