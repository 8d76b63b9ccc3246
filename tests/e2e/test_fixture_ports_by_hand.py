"""The port fixtures checked without the plugin: weights copied Keras -> torch by hand, layer by layer.

Every GOOD_PORTS pair must then agree at atol 1e-5 / rtol 1e-4 in inference mode, and every BAD_PORTS pair must
differ by more than 1e-4, so the fixtures test the port engine rather than the engine testing itself. Biases and
normalisation parameters get random values first: a fresh model's zero biases, unit gammas and identity BN
statistics would hide a missing bias or a wrong epsilon.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.ports import BAD_PORTS, GOOD_PORTS, PortCase, keras_to_torch_input, torch_to_keras_output

# torch before TensorFlow: the other order can crash the process (PITFALLS.md, import order).
torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

pytestmark = pytest.mark.e2e

BATCH = 3
ATOL, RTOL = 1e-5, 1e-4


# --- one explicit copy per layer type ---------------------------------------------------------------------------


def numpy_of(variable) -> np.ndarray:
    # A Keras Variable wraps a tf.Variable in .value (its own __array__ trips numpy 2's copy-keyword warning).
    tf_variable = variable.value if isinstance(variable, keras.Variable) else variable
    return np.asarray(tf_variable.numpy(), dtype=np.float32)


def assign(parameter, array) -> None:
    array = np.ascontiguousarray(array, dtype=np.float32)
    assert tuple(parameter.shape) == array.shape, f"shape {tuple(parameter.shape)} <- {array.shape}"
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(array))


def copy_dense(layer, linear) -> None:
    """Dense kernel [in, out] -> Linear weight [out, in]; a Linear without bias (bad port) gets none."""
    assign(linear.weight, numpy_of(layer.kernel).T)
    if linear.bias is not None:
        assign(linear.bias, numpy_of(layer.bias))


def copy_dense_after_flatten(layer, linear, height: int, width: int, channels: int) -> None:
    """The Dense after a Flatten of an NHWC map reads features in (h, w, c) order, the Linear after an NCHW
    Flatten in (c, h, w) order: permute the kernel's rows."""
    kernel = numpy_of(layer.kernel).reshape(height, width, channels, -1).transpose(2, 0, 1, 3)
    assign(linear.weight, kernel.reshape(channels * height * width, -1).T)
    assign(linear.bias, numpy_of(layer.bias))


def copy_conv(layer, conv) -> None:
    """Conv1D kernel [k, in/g, out] -> [out, in/g, k]; Conv2D [kh, kw, in/g, out] -> [out, in/g, kh, kw] (g groups)."""
    kernel = numpy_of(layer.kernel)
    assign(conv.weight, kernel.transpose(2, 1, 0) if kernel.ndim == 3 else kernel.transpose(3, 2, 0, 1))
    assign(conv.bias, numpy_of(layer.bias))


def depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Depthwise kernel [kh, kw, C, M] -> grouped Conv2d weight [C * M, 1, kh, kw]; output channel c * M + m."""
    height, width, channels, multiplier = kernel.shape
    return kernel.reshape(height, width, channels * multiplier).transpose(2, 0, 1)[:, None]


def copy_depthwise(layer, conv) -> None:
    assign(conv.weight, depthwise_weight(numpy_of(layer.kernel)))
    assign(conv.bias, numpy_of(layer.bias))


def copy_separable(layer, separable) -> None:
    assign(separable.depthwise.weight, depthwise_weight(numpy_of(layer.depthwise_kernel)))
    assign(separable.pointwise.weight, numpy_of(layer.pointwise_kernel).transpose(3, 2, 0, 1))
    assign(separable.pointwise.bias, numpy_of(layer.bias))


def copy_conv_transpose(layer, deconv) -> None:
    """Conv2DTranspose kernel [kh, kw, out, in] -> ConvTranspose2d weight [in, out, kh, kw]; no spatial flip."""
    assign(deconv.weight, numpy_of(layer.kernel).transpose(3, 2, 0, 1))
    assign(deconv.bias, numpy_of(layer.bias))


def copy_batchnorm(layer, batchnorm) -> None:
    assign(batchnorm.weight, numpy_of(layer.gamma))
    assign(batchnorm.bias, numpy_of(layer.beta))
    assign(batchnorm.running_mean, numpy_of(layer.moving_mean))
    assign(batchnorm.running_var, numpy_of(layer.moving_variance))


def copy_layernorm(layer, layernorm) -> None:
    assign(layernorm.weight, numpy_of(layer.gamma))
    assign(layernorm.bias, numpy_of(layer.beta))


def copy_embedding(layer, embedding) -> None:
    assign(embedding.weight, numpy_of(layer.embeddings))


def copy_lstm(cell, lstm, suffix: str) -> None:
    """Keras gates i, f, c, o are torch's i, f, g, o (same order); Keras' one bias -> bias_ih, zeros -> bias_hh."""
    assign(getattr(lstm, f"weight_ih{suffix}"), numpy_of(cell.kernel).T)
    assign(getattr(lstm, f"weight_hh{suffix}"), numpy_of(cell.recurrent_kernel).T)
    bias = numpy_of(cell.bias)
    assign(getattr(lstm, f"bias_ih{suffix}"), bias)
    assign(getattr(lstm, f"bias_hh{suffix}"), np.zeros_like(bias))


def gru_gates(array: np.ndarray) -> np.ndarray:
    """Keras GRU gate blocks z, r, h (last axis) -> torch r, z, n (first axis after the transpose)."""
    update, reset, candidate = np.split(array, 3, axis=-1)
    return np.concatenate([reset, update, candidate], axis=-1)


def copy_gru(cell, gru, suffix: str) -> None:
    """reset_after=True: bias [2, 3H] = input bias, recurrent bias. reset_after=False: bias [3H] (no torch match)."""
    assign(getattr(gru, f"weight_ih{suffix}"), gru_gates(numpy_of(cell.kernel)).T)
    assign(getattr(gru, f"weight_hh{suffix}"), gru_gates(numpy_of(cell.recurrent_kernel)).T)
    bias = numpy_of(cell.bias)
    input_bias, recurrent_bias = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
    assign(getattr(gru, f"bias_ih{suffix}"), gru_gates(input_bias))
    assign(getattr(gru, f"bias_hh{suffix}"), gru_gates(recurrent_bias))


def copy_simple_rnn(cell, rnn, suffix: str) -> None:
    assign(getattr(rnn, f"weight_ih{suffix}"), numpy_of(cell.kernel).T)
    assign(getattr(rnn, f"weight_hh{suffix}"), numpy_of(cell.recurrent_kernel).T)
    bias = numpy_of(cell.bias)
    assign(getattr(rnn, f"bias_ih{suffix}"), bias)
    assign(getattr(rnn, f"bias_hh{suffix}"), np.zeros_like(bias))


def copy_bidirectional_lstm(layer, lstm) -> None:
    copy_lstm(layer.forward_layer.cell, lstm, "_l0")
    copy_lstm(layer.backward_layer.cell, lstm, "_l0_reverse")


# --- one explicit copy per case ---------------------------------------------------------------------------------


def layers_of(model, kind) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def copy_cifar_cnn(model, module) -> None:
    conv1, conv2, conv3 = layers_of(model, keras.layers.Conv2D)
    fc1, fc2 = layers_of(model, keras.layers.Dense)
    for layer, conv in [(conv1, module.conv1), (conv2, module.conv2), (conv3, module.conv3)]:
        copy_conv(layer, conv)
    copy_dense_after_flatten(fc1, module.fc1, 4, 4, 64)
    copy_dense(fc2, module.fc2)


def copy_mnist_cnn(model, module) -> None:
    conv1, conv2 = layers_of(model, keras.layers.Conv2D)
    fc1, fc2 = layers_of(model, keras.layers.Dense)
    copy_conv(conv1, module.conv1)
    copy_conv(conv2, module.conv2)
    copy_dense_after_flatten(fc1, module.fc1, 5, 5, 64)
    copy_dense(fc2, module.fc2)


def copy_two_dense(model, module) -> None:
    """A Flatten of a channel-less (28, 28) input orders features the same way in both frameworks."""
    fc1, fc2 = layers_of(model, keras.layers.Dense)
    copy_dense(fc1, module.fc1)
    copy_dense(fc2, module.fc2)


def copy_lowlevel_mlp(model, module) -> None:
    assign(module.fc1.weight, numpy_of(model.W1).T)
    assign(module.fc1.bias, numpy_of(model.b1))
    assign(module.fc2.weight, numpy_of(model.W2).T)
    assign(module.fc2.bias, numpy_of(model.b2))


def copy_linear_regression(model, module) -> None:
    (dense,) = layers_of(model, keras.layers.Dense)
    copy_dense(dense, module.linear)


def copy_lstm_classifier(model, module) -> None:
    copy_lstm(model.get_layer("lstm_1").cell, module.lstm, "_l0")
    copy_lstm(model.get_layer("lstm_2").cell, module.lstm, "_l1")
    copy_dense(model.get_layer("fc"), module.fc)


def copy_named(copy, *names: str):
    """Copy each named Keras layer into the torch submodule of the same name."""

    def run(model, module) -> None:
        for name in names:
            copy(model.get_layer(name), getattr(module, name))

    return run


def copy_conv_batchnorm(model, module) -> None:
    copy_conv(model.get_layer("conv"), module.conv)
    copy_batchnorm(model.get_layer("bn"), module.bn)


def copy_dense_layernorm(model, module) -> None:
    copy_dense(model.get_layer("fc"), module.fc)
    copy_layernorm(model.get_layer("ln"), module.ln)


def copy_last_step(copy, name: str):
    def run(model, module) -> None:
        copy(model.get_layer(name).cell, module.rnn, "_l0")

    return run


def copy_stacked_lstm(model, module) -> None:
    copy_lstm(model.get_layer("lstm_1").cell, module.rnn, "_l0")
    copy_lstm(model.get_layer("lstm_2").cell, module.rnn, "_l1")


def copy_bilstm(model, module) -> None:
    copy_bidirectional_lstm(model.get_layer("bilstm"), module.rnn)


HAND_COPIES = {
    "cifar_cnn": copy_cifar_cnn,
    "mnist_cnn": copy_mnist_cnn,
    "mnist_mlp": copy_two_dense,
    "lowlevel_mlp": copy_lowlevel_mlp,
    "linear_regression": copy_linear_regression,
    "torch_lstm_classifier": copy_lstm_classifier,
    "torch_net": copy_two_dense,
    "torch_linear_regression": copy_linear_regression,
    "zoo_dense": copy_named(copy_dense, "fc1", "fc2"),
    "zoo_conv1d_stride2": copy_named(copy_conv, "conv"),
    "zoo_conv2d_stride2_valid": copy_named(copy_conv, "conv"),
    "zoo_conv2d_grouped": copy_named(copy_conv, "conv"),
    "zoo_depthwise_conv2d": copy_named(copy_depthwise, "conv"),
    "zoo_separable_conv2d": copy_named(copy_separable, "conv"),
    "zoo_conv2d_transpose_stride2": copy_named(copy_conv_transpose, "deconv"),
    "zoo_conv2d_batchnorm": copy_conv_batchnorm,
    "zoo_layer_norm": copy_dense_layernorm,
    "zoo_embedding_mean": copy_named(copy_embedding, "embedding"),
    "zoo_lstm": copy_last_step(copy_lstm, "lstm"),
    "zoo_gru": copy_last_step(copy_gru, "gru"),
    "zoo_simple_rnn": copy_last_step(copy_simple_rnn, "rnn"),
    "zoo_stacked_lstm": copy_stacked_lstm,
    "zoo_bidirectional_lstm": copy_bilstm,
    "zoo_bidirectional_lstm_sequences": copy_bilstm,
    "zoo_conv2d_same": copy_named(copy_conv, "conv"),
    "bad_batchnorm_epsilon": copy_conv_batchnorm,
    "bad_same_padding_stride2": copy_named(copy_conv, "conv"),
    "bad_wrong_activation": copy_named(copy_dense, "fc1", "fc2"),
    "bad_missing_bias": copy_named(copy_dense, "fc1", "fc2"),  # copy_dense skips the bias the port lacks
    "bad_gru_reset_after_false": copy_last_step(copy_gru, "gru"),
    "bad_layernorm_epsilon": copy_dense_layernorm,
    "bad_bidirectional_last_step": copy_bilstm,
}


# --- running a case ---------------------------------------------------------------------------------------------


def randomize_keras_state(model, rng: np.random.Generator) -> None:
    """Non-zero biases and betas, non-unit gammas, BN statistics with a small variance (epsilon then matters)."""
    variables = model.weights if isinstance(model, keras.Model) else model.variables
    for variable in variables:
        name = variable.name.split("/")[-1].split(":")[0]
        shape = tuple(variable.shape)
        if name in ("bias", "beta", "moving_mean", "b1", "b2"):
            value = rng.normal(0.0, 0.5, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "moving_variance":
            value = rng.uniform(5e-3, 2e-2, shape)
        elif name == "embeddings":
            value = rng.normal(0.0, 1.0, shape)  # Keras' uniform(-0.05, 0.05) init leaves outputs near atol
        else:
            continue
        variable.assign(value.astype(np.float32))


def run_case(case: PortCase) -> tuple[np.ndarray, np.ndarray]:
    """Build both models, randomize and hand-copy the weights, run both on one input; outputs in Keras layout."""
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model, module = case.build_keras(), case.build_torch()
    randomize_keras_state(model, rng)
    HAND_COPIES[case.name](model, module)
    shape = (BATCH, *case.keras_input_shape)
    if case.input_dtype == "int64":
        assert case.vocab_size is not None
        inputs = rng.integers(0, case.vocab_size, shape, dtype=np.int64)
    else:
        inputs = rng.standard_normal(shape).astype(np.float32)
    tensor = tf.constant(inputs)
    # TF runs float32 matmuls and convs in TF32 on a GPU by default, ~3e-4 relative error: off while Keras runs.
    tf32_before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        keras_out = model(tensor, training=False) if isinstance(model, keras.Model) else model(tensor)
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(tf32_before)
    module.eval()
    with torch.no_grad():
        torch_out = module(torch.from_numpy(keras_to_torch_input(case, inputs)))
    return keras_out.numpy(), torch_to_keras_output(case, torch_out.numpy())


def test_every_case_has_a_hand_copy():
    assert {case.name for case in GOOD_PORTS + BAD_PORTS} == set(HAND_COPIES)


@pytest.mark.parametrize("case", GOOD_PORTS, ids=lambda case: case.name)
def test_good_port_agrees_after_hand_copy(case: PortCase):
    keras_out, torch_out = run_case(case)
    assert keras_out.shape == torch_out.shape
    np.testing.assert_allclose(torch_out, keras_out, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", BAD_PORTS, ids=lambda case: case.name)
def test_bad_port_differs_after_hand_copy(case: PortCase):
    keras_out, torch_out = run_case(case)
    assert keras_out.shape == torch_out.shape
    assert np.max(np.abs(torch_out - keras_out)) > 1e-4
    assert not np.allclose(torch_out, keras_out, atol=ATOL, rtol=RTOL)
