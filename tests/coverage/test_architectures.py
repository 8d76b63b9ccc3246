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
