"""Gradients far below the check's float32 rounding floor are still compared with a tolerance a wrong value exceeds.

A layer scale of 1e-9 (ConvNeXt-style, here smaller than any library's default so the effect is certain) leaves the
gradients of the branch it scales at ~1e-9 of the model's largest: under the rounding floor (1e-7 of it), where a
zeroed target would pass. A float64 run of the PyTorch side (the source, or else the converted model) measures the
float32 rounding of that very tensor, and the tensor is judged at its own scale: a zeroed target fails. A gradient that
is zero in exact arithmetic (a key bias ahead of a softmax) is reported as such.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import torch
from keras import layers
from torch import nn

from pytest_parity.bridge import weight_matching
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError
from pytest_parity.settings import ParitySettings

LAYER_SCALE = 1e-9


class ScaledBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Linear(8, 8)
        self.gamma = nn.Parameter(torch.full((8,), LAYER_SCALE))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x + self.gamma * torch.tanh(self.branch(x)))


class KeyBiasAttention(nn.Module):
    """softmax(q k^T): the key bias adds the same amount to every logit of a row, so its gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.query(x) @ self.key(x).transpose(1, 2), dim=-1)
        return weights @ self.value(x)


def scaled_branch_keras() -> keras.Model:
    inputs = keras.Input((8,))
    branch = layers.Dense(8, activation="tanh", name="branch")(inputs)
    scaled = layers.Rescaling(LAYER_SCALE)(branch)
    return keras.Model(inputs, layers.Dense(3, name="head")(layers.Add()([inputs, scaled])))


def check(model, inputs):
    return run_check(model, None, inputs, ParitySettings(), "cpu", "test_near_zero_gradients")


@pytest.fixture
def mutate_carried_gradient(monkeypatch):
    """Multiply the target's gradient of the weights matching a pattern by ``factor`` as it is carried back."""
    def mutate(pattern: str, factor: float) -> None:
        original = weight_matching.WeightMatch.gradient_to_source_layout

        def carried(self, gradient):
            value = original(self, gradient)
            return value * factor if re.search(pattern, self.source_name) else value

        monkeypatch.setattr(weight_matching.WeightMatch, "gradient_to_source_layout", carried)
    return mutate


def _floats(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("build, weight", [(ScaledBranch, r"^branch\.weight$"),
                                           (scaled_branch_keras, r"(^|/)branch/kernel$")],
                         ids=["torch source", "keras source"])
def test_a_vanished_gradient_is_compared_at_its_own_scale(build, weight, mutate_carried_gradient):
    result = check(build(), _floats(4, 8))
    assert result.passed
    assert result.weight_account.within_rounding_of_zero == ()
    assert result.weight_account.compared == result.weight_account.total
    for factor in (0.0, 0.5, -1.0):
        mutate_carried_gradient(weight, factor)
        with pytest.raises(ParityError) as failure:
            check(build(), _floats(4, 8))
        failed = [name for name, c in failure.value.result.grads.items() if not c.passed]
        assert len(failed) == 1 and re.search(weight, failed[0])


def test_a_gradient_zero_in_exact_arithmetic_is_named_as_such():
    result = check(KeyBiasAttention(), _floats(2, 5, 8))
    assert result.passed
    assert result.weight_account.zero_in_exact_arithmetic == ("key.bias",)
    assert result.weight_account.within_rounding_of_zero == ()
    assert "1 zero in exact arithmetic" in result.weight_account.describe()


def test_without_a_float64_run_a_vanished_gradient_is_not_compared_and_fails_unless_allowed(monkeypatch):
    """Where the PyTorch side cannot run in float64 (an op without float64 support), nothing tells the vanished
    gradient from a zeroed one: the weight is not compared, the check says why, and accepting it is a partial pass."""
    from pytest_parity.settings import with_overrides
    from pytest_parity.verdict import float64_referee

    monkeypatch.setattr(float64_referee, "run_in_float64", lambda *args, **kwargs: None)
    with pytest.raises(ParityError) as failure:
        check(ScaledBranch(), _floats(4, 8))
    message = str(failure.value)
    assert "branch.weight" in message and "float32 rounding floor" in message and "unmatched_weights" in message
    settings = with_overrides(ParitySettings(), {"unmatched_weights": ["branch.*"]})
    result = run_check(ScaledBranch(), None, _floats(4, 8), settings, "cpu", "test_near_zero_gradients")
    assert result.passed and result.weight_account.partial
    assert set(result.weight_account.allowed) == {"branch.weight", "branch.bias"}


class DeadBranch(nn.Module):
    """A branch behind a ReLU that is dead on every input (its bias far below zero): its weights' gradients are exactly
    zero, so a zeroed target could not fail there. They are reported unused, not counted as compared."""

    def __init__(self) -> None:
        super().__init__()
        self.live = nn.Linear(6, 3)
        self.dead = nn.Linear(6, 3)
        with torch.no_grad():
            self.dead.bias.fill_(-1e3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.live(x) + torch.relu(self.dead(x))


@pytest.mark.parity(devices=("cpu",))
def test_weights_whose_gradient_is_exactly_zero_are_unused_not_compared(parity):
    result = parity.check(DeadBranch().eval(), inputs=parity.randn(4, 6))
    account = result.weight_account
    assert set(account.unused) == {"dead.weight", "dead.bias"} and account.compared == 2
    assert "its gradient is zero in the source on these inputs, and in the target too" in account.unused["dead.bias"]
    assert account.describe() == "weights compared 2 of 4 (2 unused)"


def test_a_saturated_softmax_whose_every_gradient_is_zero_is_refused():
    from dataclasses import replace

    from pytest_parity.errors import ParityUsageError

    # Logits thousands apart: float32 softmax gives exact 0s and 1s, and every gradient is exactly zero.
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, activation="softmax")])
    x = 1e4 * _floats(2, 4)
    with pytest.raises(ParityUsageError, match=r"(?s)Every gradient of the source model .* is exactly zero on these "
                                               r"inputs.*6 of its 6 output elements are exactly 0 or 1.*"
                                               r"classifier_activation=None.*grad=False"):
        run_check(model, None, x, ParitySettings(), "cpu", "test_near_zero_gradients")
    # An outputs-only check is what the user can still have, and it says it is partial.
    result = run_check(model, None, x, replace(ParitySettings(), grad=False), "cpu", "test_near_zero_gradients")
    assert result.passed and result.weight_account.partial
