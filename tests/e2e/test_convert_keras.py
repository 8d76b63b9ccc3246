"""Convert mode TensorFlow/Keras -> ONNX -> PyTorch on the model styles users write, through the parity fixture."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from pytest_parity import ParityResult


def build_two_input_two_output_model():
    image = keras.Input((8, 8, 3), name="image")
    extra = keras.Input((5,), name="extra")
    features = layers.Flatten()(layers.Conv2D(4, 3, activation="relu")(image))
    joined = layers.Concatenate()([features, layers.Dense(6, activation="tanh")(extra)])
    return keras.Model([image, extra], {"logits": layers.Dense(3, name="logits")(joined),
                                        "score": layers.Dense(1, activation="sigmoid", name="score")(joined)})


@pytest.mark.parity
def test_functional_model_with_positional_inputs_and_dict_outputs(parity):
    model = build_two_input_two_output_model()
    result = parity.check(model, inputs=(parity.randn(4, 8, 8, 3), parity.randn(4, 5)))
    assert isinstance(result, ParityResult) and result.passed
    assert set(result.outputs.leaves) == {"output['logits']", "output['score']"}
    assert {"input[0]", "input[1]"} <= set(result.grads)
    assert result.outputs.total == 4 * 3 + 4 * 1


@pytest.mark.parity
def test_functional_model_with_named_inputs(parity):
    model = build_two_input_two_output_model()
    result = parity.check(model, inputs={"image": parity.randn(2, 8, 8, 3), "extra": parity.randn(2, 5)})
    assert result.passed
    assert {"input['image']", "input['extra']"} <= set(result.grads)


class Residual(keras.Model):
    def __init__(self):
        super().__init__(name="residual")
        self.inner = layers.Dense(16, activation="swish")
        self.outer = layers.Dense(16)
        self.norm = layers.LayerNormalization()

    def call(self, x, training=False):
        return self.norm(x + self.outer(self.inner(x)))


@pytest.mark.parity
def test_subclassed_keras_model(parity):
    model = Residual()
    model(np.zeros((1, 16), np.float32))
    result = parity.check(model, inputs=parity.randn(4, 16))
    assert result.passed
    # LayerNormalization's gamma/beta start as ones/zeros; randomized, so they are followed into the target.
    assert any(name.endswith("gamma") for name in result.weight_names)


# tf2onnx (through Grappler's constant folding) folds an inference-mode BatchNormalization into one scale and one
# offset, so the frozen export has no tensor for gamma and beta; the check exports again with the weights as graph
# inputs, where nothing folds them, and compares every weight.
@pytest.mark.parity
def test_batchnorm_statistics_are_randomized_for_the_check_and_restored_after(parity):
    model = keras.Sequential([keras.Input((6,)), layers.Dense(8), layers.BatchNormalization(), layers.ReLU(),
                              layers.Dropout(0.5), layers.Dense(2)])
    before = {v.path: v.numpy().copy() for v in model.weights}
    result = parity.check(model, inputs=parity.randn(5, 6))
    assert result.passed and not result.weight_account.partial
    assert result.weight_account.compared == result.weight_account.total == 6
    assert any("exported with the weights as graph inputs" in note for note in result.notes)
    after = {v.path: v.numpy() for v in model.weights}
    assert all(np.array_equal(before[name], after[name]) for name in before)
    moving_variance = next(name for name in before if name.endswith("moving_variance"))
    assert np.all(before[moving_variance] == 1.0)


@pytest.mark.parity
def test_a_batchnorm_after_a_convolution_is_compared_weight_by_weight(parity):
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, use_bias=False),
                              layers.BatchNormalization(), layers.ReLU(), layers.Flatten(), layers.Dense(2)])
    result = parity.check(model, inputs=parity.randn(2, 8, 8, 3))
    assert result.passed and result.weight_account.compared == result.weight_account.total == 5
    assert {"gamma", "beta"} <= {name.rsplit("/", 1)[-1] for name in result.grads}
    # The moving statistics are carried and compared as transferred weights too.
    assert {"moving_mean", "moving_variance"} <= {name.rsplit("/", 1)[-1] for name in result.weights}


@pytest.mark.parity(randomize_constant_weights=False)
def test_without_randomization_zero_biases_the_frozen_export_drops_are_followed_as_graph_inputs(parity):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="hidden"), layers.Dense(2, name="head")],
                             name="plain")
    # tf2onnx drops Adds of all-zero constants from a frozen graph, so the biases have no counterpart there; exported
    # again with the weights as graph inputs, they are tensors of their own and their gradients are compared.
    result = parity.check(model, inputs=parity.randn(2, 4))
    assert result.passed and result.weight_account.compared == result.weight_account.total == 4
    assert set(result.weight_names) == {"plain/hidden/kernel", "plain/head/kernel", "plain/hidden/bias",
                                        "plain/head/bias"}
    assert any("the frozen export folded 2 trainable weight(s)" in note for note in result.notes)


@pytest.mark.parity(grad=False)
def test_grad_false_compares_outputs_only(parity):
    model = keras.Sequential([keras.Input((4,)), layers.Dense(2)])
    result = parity.check(model, inputs=parity.randn(2, 4))
    assert result.grads is None and result.passed


@pytest.mark.parity(devices=("cpu",))
def test_speed_is_measured_when_asked(parity):
    model = keras.Sequential([keras.Input((16,)), layers.Dense(16)])
    result = parity.check(model, inputs=parity.randn(4, 16), speed=1000.0)
    assert result.speed is not None
    assert result.speed.ratio > 0 and result.speed.rounds >= 5
    assert result.speed.ratio_min <= result.speed.ratio <= result.speed.ratio_max


@pytest.mark.parity
def test_low_level_tf_module_with_unsorted_variable_names(parity):
    class Affine(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(tf.random.stateless_normal((3, 3), seed=(1, 2)))
            self.shift = tf.Variable(tf.zeros((3,)))

        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
        def __call__(self, x):
            return tf.tanh(x @ self.scale + self.shift)

    result = parity.check(Affine(), inputs=parity.randn(7, 3))
    assert result.passed
    assert set(result.grads) == {"input", "scale", "shift"}


@pytest.mark.parity
def test_normalization_layer_constants_stay_constants(parity):
    # Keras keeps Normalization's mean and variance as captured tensors, which tf2onnx leaves as extra graph inputs
    # (every keras.applications EfficientNet has one); the bridge turns them into initializers.
    model = keras.Sequential([keras.Input((6,)), layers.Normalization(mean=[0.5] * 6, variance=[4.0] * 6),
                              layers.Dense(3)])
    inputs = parity.randn(4, 6)
    result = parity.check(model, inputs=inputs)
    assert result.passed and set(result.grads) >= {"input"}
    expected = (inputs - 0.5) / 2.0 @ model.layers[-1].kernel.numpy() + model.layers[-1].bias.numpy()
    np.testing.assert_allclose(np.asarray(model(inputs)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
def test_conv2d_transpose_with_same_padding_and_stride_2(parity):
    # tf2onnx gives it asymmetric pads (0, 1), which onnx2torch refuses; the bridge crops them after the convolution.
    model = keras.Sequential([keras.Input((5, 5, 3)), layers.Conv2DTranspose(4, 3, strides=2, padding="same")])
    result = parity.check(model, inputs=parity.randn(2, 5, 5, 3))
    assert result.passed and result.outputs.total == 2 * 10 * 10 * 4
    assert {weight.path for weight in model.weights} <= set(result.grads)


@pytest.mark.parity
def test_exact_gelu_converts_through_our_erfc_handler(parity):
    # TensorFlow computes exact GELU with Erfc, which tf2onnx 1.17 has no handler for
    # (pytest_parity.bridge.converters.tf2onnx_handlers).
    model = keras.Sequential([keras.Input((16,)), layers.Dense(8, activation="gelu"), layers.Dense(2)])
    inputs = parity.randn(4, 16) * 3  # reaching the tails, where 1 - erf(x) and erfc(x) part most
    result = parity.check(model, inputs=inputs)
    assert result.passed and result.outputs.max_abs < 1e-5


@pytest.mark.parity
def test_grouped_convolution_that_keras_compiles_with_xla_converts(parity):
    # Keras 3 runs Conv2D(groups > 1) through a tf.function(jit_compile=True) that tf2onnx does not inline
    # (onnx/tensorflow-onnx#2099); the adapter converts again with the XLA markers removed.
    model = keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(8, 3, groups=2), layers.Conv2D(4, 1, groups=4)])
    result = parity.check(model, inputs=parity.randn(2, 8, 8, 4))
    assert result.passed and result.route == "tensorflow -> onnx -> torch"
    assert {weight.path for weight in model.weights} <= set(result.grads)


@pytest.mark.parity(devices=("cpu",))
def test_two_weights_holding_equal_values_are_told_apart(parity):
    # keras-hub's Gemma starts its key and value kernels equal; tf2onnx merges equal constants into one tensor, which
    # made the check compare the merged tensor's gradient with one of them. Randomization now makes them distinct.
    inputs = keras.Input((6,))
    key, value = layers.Dense(4, name="key"), layers.Dense(4, name="value")
    model = keras.Model(inputs, layers.Concatenate()([key(inputs), value(inputs * 2.0)]))
    value.set_weights(key.get_weights())
    result = parity.check(model, inputs=parity.randn(3, 6))
    assert result.passed and result.weight_account.compared == result.weight_account.total == 4
    assert np.array_equal(value.get_weights()[0], key.get_weights()[0])  # restored after the check


class ClassToken(layers.Layer):
    """A learned token prepended to a sequence, tiled over the batch (keras-hub's ViT): the exporter folds
    tile(token, batch) into a constant of shape (batch, 1, dim)."""

    def build(self, shape):
        self.token = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal", name="class_token")

    def call(self, x):
        return keras.ops.concatenate([keras.ops.tile(self.token, [keras.ops.shape(x)[0], 1, 1]), x], axis=1)


@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("batch", [2, 4])
def test_a_weight_tiled_over_the_batch_has_its_gradient_summed_over_the_copies(parity, batch):
    # Before: batch 2 compared one copy's gradient with the source's sum (read as a two-direction recurrent weight),
    # batch 4 left the token uncompared and passed.
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, layers.Dense(3)(ClassToken()(inputs)))
    result = parity.check(model, inputs=parity.randn(batch, 5, 8))
    token = next(name for name in result.grads if name.endswith("class_token"))
    assert result.passed and result.grads[token].passed
    assert result.weight_account.compared == result.weight_account.total == 3


@pytest.mark.parity(devices=("cpu",))
def test_multi_head_attention_kernels_stored_reshaped_are_compared(parity):
    # EinsumDense kernels [hidden, heads, head_dim] reach the ONNX graph as MatMul weights [hidden, heads * head_dim]:
    # before, the four kernels were left uncompared (4 of 8 weights); they are exact reshapes, read back as such.
    inputs = keras.Input((6, 16))
    model = keras.Model(inputs, layers.MultiHeadAttention(num_heads=2, key_dim=8)(inputs, inputs))
    result = parity.check(model, inputs=parity.randn(2, 6, 16))
    assert result.passed and result.weight_account.compared == result.weight_account.total == 8
    assert all(result.grads[name].passed for name in result.grads if name.endswith("kernel"))


@pytest.mark.parity
@pytest.mark.parametrize("pool, shape", [(layers.GlobalMaxPooling1D, (7, 3)), (layers.GlobalMaxPooling2D, (6, 6, 3)),
                                         (layers.GlobalMaxPooling3D, (4, 4, 4, 3))])
def test_global_max_pooling_converts_through_our_global_max_pool_converter(parity, pool, shape):
    # tf2onnx writes GlobalMaxPool, which onnx2torch 1.5.15 has no converter for.
    model = keras.Sequential([keras.Input(shape), layers.Dense(4), pool(), layers.Dense(2)])
    result = parity.check(model, inputs=parity.randn(3, *shape))
    assert result.passed and result.weight_account.compared == result.weight_account.total == 4
