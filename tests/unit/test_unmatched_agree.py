"""``result.unmatched_weights`` and the weight account tell the same weights alike (issue 24, item 8).

A weight the account reports unused (its source gradient is zero on these inputs: keras-hub's reverse embeddings when
the model never reverses) says "unused" in unmatched_weights too, with the account's reason; a non-trainable tensor
(transformers' rotary ``original_inv_freq``, a buffer) says "not trainable", not that a converter folded it. Unit
tests of the rule, then one check per mode on a model with both.
"""

from __future__ import annotations

import numpy as np

from pytest_parity.check import run_check
from pytest_parity.result import WeightAccount
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict.weight_accounting import NOT_TRAINABLE, UNUSED, account_weights, unmatched_reasons

FOLDED = ("no tensor in the target holds these values: the converter folded it into another tensor (e.g. BatchNorm "
          "into the preceding Conv) or dropped it, so its gradient cannot be compared")


def test_an_unused_weight_gets_the_accounts_reason():
    account = account_weights(["used", "reverse"], ["used"], {"reverse": FOLDED},
                              {"used": np.ones(2), "reverse": np.zeros(2)}, "fail", True)
    assert "reverse" in account.unused and not account.uncompared
    reasons = unmatched_reasons({"reverse": FOLDED}, account, ["used", "reverse"])
    assert reasons["reverse"] == f"{UNUSED} {account.unused['reverse']}"
    assert "folded" not in reasons["reverse"]


def test_a_non_trainable_buffer_says_so_and_is_not_in_the_account():
    account = account_weights(["w"], ["w"], {}, {"w": np.ones(2)}, "fail", True)
    reasons = unmatched_reasons({"rotary.original_inv_freq": FOLDED}, account, ["w"])
    reason = reasons["rotary.original_inv_freq"]
    assert reason.startswith(NOT_TRAINABLE) and "not part of the weight account" in reason
    assert "converter folded it" not in reason
    assert "rotary.original_inv_freq" not in account.uncompared and account.total == 1


def test_a_weight_the_account_fails_keeps_its_reason():
    account = account_weights(["w"], [], {"w": FOLDED}, {"w": np.ones(2)}, "fail", True)
    assert unmatched_reasons({"w": FOLDED}, account, ["w"]) == {"w": FOLDED}
    assert account.uncompared == {"w": FOLDED}


def test_a_known_reason_is_kept_after_the_category():
    account = WeightAccount(total=1, compared=0, unused={"head/kernel": "its gradient in the source is zero"})
    reasons = unmatched_reasons({"head/kernel": "layer 'head' never called on these inputs",
                                 "bn/moving_mean": "layer 'bn' never called on these inputs"},
                                account, ["head/kernel"], reasons_known=True)
    assert reasons["head/kernel"] == ("unused: its gradient in the source is zero (layer 'head' never called on these "
                                      "inputs)")
    assert reasons["bn/moving_mean"].startswith("not trainable:") and "never called" in reasons["bn/moving_mean"]


def _agree(result) -> None:
    """Every unmatched weight is in one category, the same as the account's."""
    account = result.weight_account
    for name, reason in result.unmatched_weights.items():
        if name in account.unused:
            assert reason.startswith(UNUSED), (name, reason)
        elif name in account.uncompared or name in account.allowed:
            assert not reason.startswith((UNUSED, NOT_TRAINABLE)), (name, reason)
        else:
            assert reason.startswith(NOT_TRAINABLE), (name, reason)


def test_convert_mode_unused_parameter_and_unread_buffer():
    import torch

    class WithSpares(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 3)
            self.reverse = torch.nn.Parameter(torch.randn(3, 4))  # only used when reversing, never here
            self.register_buffer("original_inv_freq", torch.rand(2) + 0.5)

        def forward(self, x):
            return self.proj(x)

    torch.manual_seed(0)
    result = run_check(WithSpares(), None, np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32),
                       ParitySettings(devices=("cpu",), target="torch"), "cpu", "unmatched-agree")
    assert result.passed
    assert result.unmatched_weights["reverse"].startswith(UNUSED) and "reverse" in result.weight_account.unused
    assert result.unmatched_weights["original_inv_freq"].startswith(NOT_TRAINABLE)
    assert not any("folded it" in reason for reason in result.unmatched_weights.values())
    _agree(result)


def test_port_mode_uncalled_source_layer_with_buffers():
    import keras
    import torch

    inputs = keras.Input((4,))
    keras_model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inputs))

    class WithUncalled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(4, 3)
            self.spare = torch.nn.BatchNorm1d(3)  # a trainable scale and shift, two running statistics: never called

        def forward(self, x):
            return self.head(x)

    torch_model = WithUncalled()
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    result = run_check(torch_model, keras_model, x, ParitySettings(devices=("cpu",)), "cpu", "unmatched-agree-port")
    assert result.passed
    assert result.unmatched_weights["spare.weight"].startswith(UNUSED)
    assert result.unmatched_weights["spare.running_mean"].startswith(NOT_TRAINABLE)
    assert "never called" in result.unmatched_weights["spare.running_mean"]
    _agree(result)
