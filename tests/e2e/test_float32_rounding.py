"""The float64 referee (pytest_parity.verdict.float64_referee) on real round trips: a failure that is the model's own
float32 rounding says so, with the tolerances that would fit; a real defect of the same size does not get that hint.
For a PyTorch source the source runs in float64; for a Keras source, the converted model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.frameworks import torch as torch_adapter
from pytest_parity.settings import ParitySettings

# Tolerances far below float32 rounding: any reordered sum fails them.
EXACT = {"atol": 1e-12, "rtol": 0.0, "grad_atol": 1e-12, "grad_rtol": 0.0, "near_tie_retry": False}


class AttentionBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm = nn.LayerNorm(16)
        self.mlp = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x + self.attention(x, x, x, need_weights=False)[0])
        return x + self.mlp(x)


def _attention_stack() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[AttentionBlock() for _ in range(4)]).eval()


def _check(model, **settings):
    inputs = np.random.default_rng(0).standard_normal((2, 8, 16)).astype(np.float32)
    return run_check(model, None, inputs, ParitySettings(**settings), "cpu", "float32-rounding")


def test_differences_that_are_the_models_own_float32_rounding_are_named_as_such_with_tolerances_that_fit():
    model = _attention_stack()
    with pytest.raises(ParityError) as failure:
        _check(model, **EXACT)
    message = str(failure.value)
    hint = next(line for line in message.splitlines() if line.startswith("hint (float32 rounding): "))
    assert "the differences are float32 rounding of this model, not the conversion: the source itself, run in " \
           "float64, differs from its float32 run by up to" in hint
    assert "What you can do: loosen atol and grad_atol for this model (about 1e-05 would fit)" in hint
    assert failure.value.result.float32_rounding == hint.removeprefix("hint (float32 rounding): ")
    # The source module itself is left as it was: float32, its own weights.
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_defect_as_small_as_a_micro_unit_is_not_taken_for_rounding(monkeypatch):
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_with_outputs_off(model_proto):
        converted = real_from_onnx(model_proto)
        forward = converted.module.forward
        converted.module.forward = lambda *args, **kwargs: forward(*args, **kwargs) + 1e-5
        return converted

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_with_outputs_off)
    with pytest.raises(ParityError) as failure:
        _check(_attention_stack(), atol=1e-6, rtol=0.0)
    message = str(failure.value)
    assert "Greatest absolute difference: 1.0" in message  # the 1e-5 the import step added
    assert "hint (float32 rounding)" not in message
    assert failure.value.result.float32_rounding is None


def _keras_attention_stack():
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((8, 16))
    x = tokens
    for _ in range(3):
        x = keras.layers.LayerNormalization()(x + keras.layers.MultiHeadAttention(4, 4)(x, x))
        x = x + keras.layers.Dense(16)(keras.layers.Dense(64, activation="gelu")(x))
    return keras.Model(tokens, x)


def test_a_keras_source_has_the_converted_model_stand_witness_for_its_rounding():
    with pytest.raises(ParityError) as failure:
        _check(_keras_attention_stack(), **EXACT)
    hint = failure.value.result.float32_rounding
    assert hint is not None and hint.startswith(
        "the differences are float32 rounding of this model, not the conversion: the converted model (the same "
        "function, in PyTorch), run in float64, differs from its float32 run by up to")
    assert "hint (float32 rounding): " in str(failure.value)


class OffByAMicroUnit(nn.Module):
    """A converted model with a defect that stays in its float64 copy (a buffer, not a patched method): the witness
    then rounds its own way around the same wrong value, and the difference to the source is not its rounding."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("offset", torch.tensor(1e-5))

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs) + self.offset


def test_a_keras_source_whose_conversion_is_off_by_a_micro_unit_gets_no_rounding_hint(monkeypatch):
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_with_outputs_off(model_proto):
        converted = real_from_onnx(model_proto)
        converted.module = OffByAMicroUnit(converted.module)
        return converted

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_with_outputs_off)
    with pytest.raises(ParityError) as failure:
        _check(_keras_attention_stack(), atol=1e-6, rtol=0.0)
    assert failure.value.result.outputs.max_abs > 9e-6  # the offset the import step added
    assert "hint (float32 rounding)" not in str(failure.value)
    assert failure.value.result.float32_rounding is None
