"""A weight that several ONNX nodes read stays one tensor in the converted model, in both convert-mode routes.

onnx2torch gives every node that reads an initializer its own copy; without bridge.share_weights_read_twice a shared
Keras layer or a tied PyTorch embedding would have its gradient split among copies, and only one copy compared.
"""

from __future__ import annotations

import keras
import numpy as np
import torch
from keras import layers
from torch import nn

from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings


def check(model, inputs):
    return run_check(model, None, inputs, ParitySettings(), "cpu", "test_shared_weights")


class TiedEmbedding(nn.Module):
    """The output projection reuses the embedding matrix (weight tying, as in language models)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(torch.tanh(self.mix(self.embedding(ids))), self.embedding.weight)


def test_tied_torch_embedding_gets_its_whole_gradient():
    ids = np.random.default_rng(0).integers(0, 20, (3, 5)).astype(np.int64)
    result = check(TiedEmbedding(), ids)
    assert result.passed
    assert set(result.grads) == {"embedding.weight", "mix.weight", "mix.bias"}
    assert result.grads["embedding.weight"].passed


def test_keras_layer_applied_to_two_inputs_gets_its_whole_gradient():
    first, second = keras.Input((4,)), keras.Input((4,))
    shared = layers.Dense(3, name="shared")
    model = keras.Model([first, second], layers.Add()([shared(first), layers.Activation("tanh")(shared(second))]))
    rng = np.random.default_rng(1)
    result = check(model, (rng.standard_normal((2, 4)).astype(np.float32),
                           rng.standard_normal((2, 4)).astype(np.float32)))
    assert result.passed
    kernel = next(name for name in result.grads if name.endswith("kernel"))
    assert result.grads[kernel].passed and result.grads[kernel].total == 12


class ConvAppliedTwice(nn.Module):
    """One depthwise Conv applied to two halves of the channels' input (timm's CoaT does this with its relative
    position convolutions), then a pointwise mix."""

    def __init__(self) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.mix = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.cat([self.depthwise(x[:, :4]), self.depthwise(x[:, 4:])], dim=1))


def test_conv_read_by_two_nodes_keeps_one_weight_and_its_whole_gradient():
    x = np.random.default_rng(0).standard_normal((2, 8, 6, 6)).astype(np.float32)
    result = check(ConvAppliedTwice(), x)
    assert result.passed and result.weight_account.compared == result.weight_account.total == 4
    assert result.grads["depthwise.weight"].passed and result.grads["depthwise.bias"].passed


class WeightNormConv(nn.Module):
    """A Conv1d whose weight is computed at run time (weight_norm: g * v / ||v||, as in Wav2Vec2's positional
    convolution), with asymmetric padding around it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(3, 5, 4, padding=2), dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))[:, :, :-1]


def test_conv_with_a_computed_weight_converts_and_its_parts_get_their_gradients():
    x = np.random.default_rng(1).standard_normal((2, 3, 10)).astype(np.float32)
    result = check(WeightNormConv(), x)
    assert result.passed
    names = set(result.grads) - {"input"}
    assert names == {"conv.bias", "conv.parametrizations.weight.original0", "conv.parametrizations.weight.original1"}
    assert result.weight_account.compared == 3


class ConvTransposeAppliedTwice(nn.Module):
    """One upsampling ConvTranspose2d applied to two inputs (a decoder sharing its upsampler), outputs added."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x) + self.up(torch.tanh(x))


class WeightNormConvTranspose(nn.Module):
    """A ConvTranspose1d whose weight is computed at run time (weight_norm, as in HiFi-GAN-style vocoders)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.utils.parametrizations.weight_norm(nn.ConvTranspose1d(3, 4, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.up(x))


def test_conv_transpose_read_by_two_nodes_keeps_one_weight_and_its_whole_gradient():
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 5)).astype(np.float32)
    result = check(ConvTransposeAppliedTwice(), x)
    assert result.passed
    assert set(result.grads) == {"input", "up.weight", "up.bias"}
    assert result.weight_account.compared == result.weight_account.total == 2


def test_conv_transpose_with_a_computed_weight_converts_and_its_parts_get_their_gradients():
    x = np.random.default_rng(4).standard_normal((2, 3, 9)).astype(np.float32)
    result = check(WeightNormConvTranspose(), x)
    assert result.passed
    assert result.weight_account.compared == result.weight_account.total == 3


def test_keras_conv2d_transpose_applied_twice_with_same_padding_keeps_one_weight():
    # padding="same" with stride 2 exports asymmetric pads, cropped into a Slice before the node is rerouted.
    image = keras.Input((5, 5, 3))
    up = layers.Conv2DTranspose(4, 3, strides=2, padding="same")
    model = keras.Model(image, layers.Add()([up(image), up(layers.Activation("tanh")(image))]))
    result = check(model, np.random.default_rng(5).standard_normal((2, 5, 5, 3)).astype(np.float32))
    assert result.passed
    assert result.weight_account.compared == result.weight_account.total == 2


class WeightNormLinearAndSharedNorm(nn.Module):
    """A Linear whose weight is computed (weight_norm: a MatMul of a computed weight), a LayerNorm applied twice."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.utils.parametrizations.weight_norm(nn.Linear(6, 6))
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.linear(self.norm(x))))


def test_linear_with_a_computed_weight_and_a_norm_applied_twice_keep_every_gradient_whole():
    result = check(WeightNormLinearAndSharedNorm(), np.random.default_rng(6).standard_normal((2, 5, 6)).astype("f4"))
    assert result.passed
    assert result.weight_account.compared == result.weight_account.total == 5


class NormsAppliedTwice(nn.Module):
    """One BatchNorm1d and one InstanceNorm2d, each applied twice: onnx2torch's converters copy a normalisation's
    weights into a module per node, which split their gradient (6 of 6 elements off, by up to 1.9) before they were
    rerouted (onnx_rewrites.route_normalizations_of_computed_or_shared_weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.instance_norm = nn.InstanceNorm2d(4, affine=True)
        self.fc1, self.fc2 = nn.Linear(4 * 8 * 8, 6), nn.Linear(6, 6)
        self.batch_norm = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Flattened, not averaged: the spatial mean of an InstanceNorm's output is its bias alone.
        x = self.instance_norm(self.conv2(torch.tanh(self.instance_norm(self.conv1(x))))).flatten(1)
        return self.head(self.batch_norm(self.fc2(torch.tanh(self.batch_norm(self.fc1(x))))))


def test_normalizations_applied_twice_keep_one_weight_and_their_whole_gradient():
    result = check(NormsAppliedTwice().eval(), np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype("f4"))
    assert result.passed, result.diagnosis
    account = result.weight_account
    assert account.compared == account.total == 14
    # The conv biases right before an InstanceNorm are zero in exact arithmetic (it removes per-channel constants).
    assert account.zero_in_exact_arithmetic == ("conv1.bias", "conv2.bias")
    for name in ("instance_norm.weight", "instance_norm.bias", "batch_norm.weight", "batch_norm.bias"):
        assert result.grads[name].passed


def test_a_weight_copied_per_node_is_named_by_the_diagnosis(monkeypatch):
    # Without the reroute, onnx2torch copies the shared norm weights per node: the gradient-only failure's diagnosis
    # finds the copies in the converted model (not a guess from op types).
    import pytest

    from pytest_parity.bridge import onnx_rewrites
    from pytest_parity.errors import ParityError

    monkeypatch.setattr(onnx_rewrites, "route_normalizations_of_computed_or_shared_weights", lambda model: model)
    with pytest.raises(ParityError) as failure:
        check(NormsAppliedTwice().eval(), np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype("f4"))
    diagnosis = failure.value.result.diagnosis
    assert "weight(s) are held by several tensors of the converted model with the same values" in diagnosis
    assert "copied per node, so its gradient is split between the copies" in diagnosis
