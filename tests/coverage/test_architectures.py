"""Convert mode over every keras.applications architecture that builds offline (weights=None) and every
torchvision.models architecture (weights=None, PyTorch -> ONNX -> PyTorch), at small inputs, batch 2, on the CPU.

Run: ``pytest tests/coverage -m coverage --parity-report=coverage.json --junitxml=coverage.xml`` and turn both into
the README's table with ``python benchmarks/coverage_table.py coverage.json coverage.xml``.
"""

from __future__ import annotations

import pytest

# keras.applications builders and the smallest square input each accepts (weights=None, include_top=True).
KERAS_APPLICATIONS = {
    "ConvNeXtTiny": 32, "DenseNet121": 32, "EfficientNetB0": 32, "EfficientNetV2B0": 32, "InceptionResNetV2": 75,
    "InceptionV3": 75, "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32,
    "NASNetMobile": 32, "ResNet50": 32, "ResNet50V2": 32, "VGG16": 32, "Xception": 71,
}

TORCHVISION_MODELS = {
    "alexnet": 64, "convnext_tiny": 32, "densenet121": 32, "efficientnet_b0": 32, "efficientnet_v2_s": 32,
    "googlenet": 32, "inception_v3": 75, "maxvit_t": 224, "mnasnet0_5": 32, "mobilenet_v2": 32,
    "mobilenet_v3_small": 32, "regnet_x_400mf": 32, "regnet_y_400mf": 32, "resnet18": 32, "resnet50": 32,
    "resnext50_32x4d": 32, "shufflenet_v2_x0_5": 32, "squeezenet1_1": 32, "swin_t": 32, "vgg11_bn": 32,
    "vit_b_16": 224, "wide_resnet50_2": 32,
}


@pytest.mark.coverage
@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("name", sorted(KERAS_APPLICATIONS))
def test_keras_application(parity, name):
    import keras

    size = KERAS_APPLICATIONS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)
    parity.check(model, inputs=parity.randn(2, size, size, 3))


@pytest.mark.coverage
@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("name", sorted(TORCHVISION_MODELS))
def test_torchvision_model(parity, name):
    import torchvision

    size = TORCHVISION_MODELS[name]
    extra = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **extra).eval()
    parity.check(model, inputs=parity.randn(2, 3, size, size))


def _keras_block(name):
    """Small Keras models around one typical building block each (batch 2; input shapes in KERAS_BLOCK_INPUTS)."""
    import keras
    from keras import layers

    def model(input_shape, *blocks, inputs=None):
        tensor = inputs if inputs is not None else keras.Input(input_shape)
        out = tensor
        for block in blocks:
            out = block(out)
        return keras.Model(tensor, out)

    if name == "multi_head_attention":
        tokens = keras.Input((6, 16))
        return keras.Model(tokens, layers.MultiHeadAttention(num_heads=2, key_dim=8)(tokens, tokens))
    if name == "conv2d_transpose_concatenate":
        image = keras.Input((8, 8, 4))
        up = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(image)
        return keras.Model(image, layers.Concatenate()([up, layers.UpSampling2D()(image)]))
    builders = {
        "layer_normalization": ((6, 16), [layers.LayerNormalization(), layers.Dense(4)]),
        "gelu_exact": ((16,), [layers.Dense(8, activation=lambda x: keras.activations.gelu(x, approximate=False))]),
        "gelu_tanh": ((16,), [layers.Dense(8, activation=lambda x: keras.activations.gelu(x, approximate=True))]),
        "swish": ((16,), [layers.Dense(8, activation="swish")]),
        "depthwise_conv2d": ((8, 8, 4), [layers.DepthwiseConv2D(3), layers.Conv2D(6, 1)]),
        "separable_conv2d": ((8, 8, 4), [layers.SeparableConv2D(6, 3, padding="same")]),
        "conv1d_global_pooling": ((20, 5), [layers.Conv1D(8, 3, activation="relu"), layers.GlobalAveragePooling1D(),
                                            layers.Dense(3)]),
        "upsampling2d_bilinear": ((6, 6, 3), [layers.UpSampling2D(interpolation="bilinear"), layers.Conv2D(4, 3)]),
        "gru": ((7, 5), [layers.GRU(6)]),
        "stacked_lstm": ((7, 5), [layers.LSTM(8, return_sequences=True), layers.LSTM(6)]),
    }
    shape, blocks = builders[name]
    return model(shape, *blocks)


KERAS_BLOCK_INPUTS = {
    "multi_head_attention": (6, 16), "conv2d_transpose_concatenate": (8, 8, 4), "layer_normalization": (6, 16),
    "gelu_exact": (16,), "gelu_tanh": (16,), "swish": (16,), "depthwise_conv2d": (8, 8, 4),
    "separable_conv2d": (8, 8, 4), "conv1d_global_pooling": (20, 5), "upsampling2d_bilinear": (6, 6, 3),
    "gru": (7, 5), "stacked_lstm": (7, 5),
}


@pytest.mark.coverage
@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("name", sorted(KERAS_BLOCK_INPUTS))
def test_keras_block(parity, name):
    parity.check(_keras_block(name), inputs=parity.randn(2, *KERAS_BLOCK_INPUTS[name]))


@pytest.mark.coverage
@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("name", ["embedding_lstm"])
def test_keras_block_with_token_ids(parity, name):
    import keras
    import numpy as np
    from keras import layers

    model = keras.Sequential([keras.Input((7,), dtype="int32"), layers.Embedding(20, 6), layers.LSTM(5)])
    parity.check(model, inputs=np.random.default_rng(0).integers(0, 20, (2, 7)).astype(np.int32))
