"""Convert mode on Keras recurrent layers: outputs and the gradient of every Keras variable agree.

tf2onnx turns a Keras LSTM into an ONNX LSTM node (gates reordered, bias doubled with a zero recurrent half) and a GRU
or SimpleRNN into a Loop; pytest_parity.bridge.converters.onnx2torch_recurrent imports both, and the weight matcher
follows each Keras variable into its ONNX-layout parameter or loop input.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from pytest_parity import ConversionError
from pytest_parity.check import run_check
from pytest_parity.frameworks import flatten_inputs
from pytest_parity.frameworks import torch as torch_adapter
from pytest_parity.frameworks.tensorflow import TensorFlowModel
from pytest_parity.settings import ParitySettings

STEPS, FEATURES, UNITS = 10, 8, 16


def sequence_model(*recurrent: layers.Layer, name: str) -> keras.Model:
    return keras.Sequential([keras.Input((STEPS, FEATURES)), *recurrent, layers.Dense(3)], name=name)


MODELS = {
    "lstm": lambda: sequence_model(layers.LSTM(UNITS), name="lstm"),
    # Different widths: two LSTMs of one width start with equal biases, see the xfail below.
    "stacked_lstm": lambda: sequence_model(layers.LSTM(UNITS, return_sequences=True),
                                           layers.LSTM(UNITS // 2, return_sequences=True), name="stacked_lstm"),
    "gru": lambda: sequence_model(layers.GRU(UNITS), name="gru"),
    "gru_reset_before": lambda: sequence_model(layers.GRU(UNITS, reset_after=False), name="gru_reset_before"),
    "simple_rnn": lambda: sequence_model(layers.SimpleRNN(UNITS, return_sequences=True), name="simple_rnn"),
    "bidirectional_lstm": lambda: sequence_model(layers.Bidirectional(layers.LSTM(UNITS)), name="bidirectional_lstm"),
    "bidirectional_gru": lambda: sequence_model(layers.Bidirectional(layers.GRU(UNITS, return_sequences=True)),
                                                name="bidirectional_gru"),
    "bidirectional_simple_rnn": lambda: sequence_model(layers.Bidirectional(layers.SimpleRNN(UNITS)),
                                                       name="bidirectional_simple_rnn"),
    "lstm_go_backwards": lambda: sequence_model(layers.LSTM(UNITS, go_backwards=True), name="lstm_go_backwards"),
}


def assert_every_variable_followed(model: keras.Model, result) -> None:
    names = {variable.path for variable in model.trainable_variables}
    assert result.unmatched_weights == {}
    assert names <= set(result.weight_names)
    assert names <= set(result.grads)
    assert all(result.grads[name].passed for name in names)
    assert result.passed


@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("kind", list(MODELS))
def test_recurrent_model_outputs_and_every_weight_gradient_agree(parity, kind):
    model = MODELS[kind]()
    result = parity.check(model, inputs=parity.randn(4, STEPS, FEATURES))
    assert_every_variable_followed(model, result)
    assert "input" in result.grads


@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding_into_lstm(parity, mask_zero):
    # With mask_zero, tf2onnx no longer recognises the LSTM and emits a Loop over the masked cell instead.
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), layers.Embedding(50, FEATURES, mask_zero=mask_zero),
                              layers.LSTM(UNITS), layers.Dense(2)], name="embedding_lstm")
    ids = np.random.default_rng(0).integers(1, 50, (4, STEPS)).astype(np.int32)
    ids[1:, 7:] = 0  # padding, masked out when mask_zero
    result = parity.check(model, inputs=ids)
    assert_every_variable_followed(model, result)
    assert "input" not in result.grads  # integer ids have no gradient


def test_stacked_lstms_of_one_width_with_their_initial_biases():
    """Keras starts every LSTM bias as the same [0, 1, 0, 0] blocks (unit_forget_bias), and tf2onnx merges equal
    constants: the check randomizes such zero/one patterns first, so each LSTM keeps a bias of its own."""
    model = sequence_model(layers.LSTM(UNITS, return_sequences=True), layers.LSTM(UNITS, return_sequences=True),
                           name="same_width_lstms")
    inputs = np.random.default_rng(3).standard_normal((4, STEPS, FEATURES)).astype(np.float32)
    result = run_check(model, None, inputs, ParitySettings(), "cpu", "same-width")
    assert_every_variable_followed(model, result)


def test_lstm_weights_sit_in_onnx_layout_parameters_and_gru_weights_in_loop_inputs():
    """What the matcher had to follow: a Keras LSTM kernel is a gate-reordered block of an ONNX W parameter, a GRU
    kernel stays a tensor of its own that the Loop reads."""
    settings = ParitySettings()
    inputs = np.random.default_rng(1).standard_normal((4, STEPS, FEATURES)).astype(np.float32)
    lstm = MODELS["bidirectional_lstm"]()
    result = run_check(lstm, None, inputs, settings, "cpu", "recurrent-layout")
    paths = [variable.path for variable in lstm.trainable_variables]
    forward_kernel = next(path for path in paths if "forward" in path and path.endswith("/kernel"))
    backward_bias = next(path for path in paths if "backward" in path and path.endswith("/bias"))
    assert result.weight_names[forward_kernel].endswith(".W")
    assert result.weight_names[backward_bias].endswith(".B")

    gru = MODELS["gru"]()
    result = run_check(gru, None, inputs, settings, "cpu", "recurrent-layout")
    gru_targets = {result.weight_names[v.path] for v in gru.trainable_variables if "/gru_cell/" in v.path}
    assert len(gru_targets) == 3 and all(name.startswith("initializers.") for name in gru_targets)


def test_tf2onnx_emits_an_lstm_node_and_a_loop_for_gru_and_simple_rnn():
    inputs = flatten_inputs(np.zeros((4, STEPS, FEATURES), np.float32))
    ops = {}
    for kind in ("lstm", "bidirectional_lstm", "gru", "simple_rnn", "bidirectional_gru"):
        proto = TensorFlowModel(MODELS[kind]()).to_onnx(inputs, 17)
        ops[kind] = {node.op_type for node in proto.graph.node}
    assert "LSTM" in ops["lstm"] and "LSTM" in ops["bidirectional_lstm"]
    assert "Loop" in ops["gru"] and "Loop" in ops["simple_rnn"]
    assert {"Loop", "ReverseSequence"} <= ops["bidirectional_gru"]


def test_a_keras_lstm_with_relu_activation_is_a_conversion_error_naming_node_attribute_and_value():
    # tf2onnx writes activations=[Sigmoid, Relu, Relu]; only the ONNX defaults are converted.
    model = sequence_model(layers.LSTM(UNITS, activation="relu"), name="relu_lstm")
    with pytest.raises(ConversionError) as failure:
        run_check(model, None, np.zeros((2, STEPS, FEATURES), np.float32), ParitySettings(), "cpu", "relu")
    message = str(failure.value)
    assert "ONNX -> PyTorch" in message
    assert "ONNX LSTM node 'LSTM__" in message
    assert "attribute activations=['Sigmoid', 'Relu', 'Relu'] is not supported" in message


# A backward pass outside TorchModel.run: the CUDA build of torch without a driver warns at the first one.
@pytest.mark.filterwarnings("ignore:CUDA initialization:UserWarning")
def test_converted_lstm_takes_gradients_on_its_own():
    """The ONNX-layout parameters are leaves of autograd in the converted module, not buffers made to require grad."""
    model = MODELS["lstm"]()
    x = np.random.default_rng(2).standard_normal((2, STEPS, FEATURES)).astype(np.float32)
    proto = TensorFlowModel(model).to_onnx(flatten_inputs(x), 17)
    converted = torch_adapter.from_onnx(proto).module
    import torch

    output = converted(torch.from_numpy(x))
    output.sum().backward()
    parameters = dict(converted.named_parameters())
    lstm_parameters = {name: p for name, p in parameters.items() if name.rsplit(".", 1)[-1] in ("W", "R", "B")}
    assert len(lstm_parameters) == 3
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in lstm_parameters.values())
