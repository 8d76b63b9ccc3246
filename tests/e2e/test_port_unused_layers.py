"""Port mode with layers that run but do not reach the compared outputs (port/reachability).

A model often computes more than its port is checked on: a head whose output is not compared (mapped to None with
output_names=), a debugging projection left in forward() and discarded. Such a layer has no counterpart and no influence
on what is compared: it is left out of the pairing and named as unused (the weight account and unmatched_weights on the
source side, a note on either side), instead of refusing the port. A layer left out on one side whose counterpart is
used on the other (its output added into the compared output) is a real difference and still refuses the port, naming
what was left out. The flagship case (transformers BertModel without its pooler against keras-hub's BertBackbone, whose
pooler runs) is in tests/realworld/test_ports.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from keras import layers

from pytest_parity.check import run_check
from pytest_parity.errors import ParityError, WeightTransferError
from pytest_parity.settings import ParitySettings, with_overrides
from pytest_parity.verdict.weight_accounting import UNUSED


class TorchWithDiscardedProbe(torch.nn.Module):
    """fc1 -> relu -> fc2, with a 'probe' projection computed in forward() between them and thrown away (left over
    from debugging): it runs on every call but reaches no output. Keras runs the functional twin's aux head after fc2,
    so the layers pair only once each side's unreached layer is left out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 8)
        self.probe = torch.nn.Linear(8, 4)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = torch.relu(self.fc1(x))
        self.probe(hidden)
        return {"logits": self.fc2(hidden)}


def keras_with_aux_head(aux_in_logits: bool = False) -> keras.Model:
    """The same fc1 -> relu -> fc2 in Keras, plus an 'aux' head of the probe's shape returned as its own output; with
    ``aux_in_logits`` the head's output is also summed into the logits (then it reaches the compared output)."""
    inputs = keras.Input((6,))
    hidden = layers.Dense(8, activation="relu", name="fc1")(inputs)
    aux = layers.Dense(4, name="aux")(hidden)
    logits = layers.Dense(3, name="fc2")(hidden)
    if aux_in_logits:
        logits = layers.Add()([logits, layers.Lambda(lambda a: keras.ops.sum(a, axis=-1, keepdims=True))(aux)])
    return keras.Model(inputs, {"logits": logits, "aux": aux})


def check(source, target, **overrides):
    inputs = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    return run_check(source, target, inputs, with_overrides(ParitySettings(devices=("cpu",)), overrides), "cpu",
                     "test_port_unused_layers")


def test_torch_to_keras_names_the_discarded_probe_unused_and_compares_every_used_weight():
    result = check(TorchWithDiscardedProbe(), keras_with_aux_head(), output_names={"logits": "logits"})
    account = result.weight_account
    assert result.passed
    assert (account.compared, account.total) == (4, 6)
    assert set(account.unused) == {"probe.weight", "probe.bias"} and not account.uncompared
    # The account and unmatched_weights tell the same weights alike, and say which layer and why.
    for name in ("probe.weight", "probe.bias"):
        reason = result.unmatched_weights[name]
        assert reason.startswith(UNUSED) and "'probe'" in reason and "does not reach the compared outputs" in reason
    # The target's head that only feeds the output not compared is named too, with its weights.
    note = next(note for note in result.notes if note.startswith("target layer 'aux'"))
    assert "aux/kernel" in note and "neither carried nor compared" in note
    assert any(note.startswith("source layer 'probe'") for note in result.notes)


def test_keras_to_torch_with_the_aux_output_left_out_by_output_names():
    result = check(keras_with_aux_head(), TorchWithDiscardedProbe(), output_names={"logits": "logits", "aux": None})
    account = result.weight_account
    assert result.passed
    assert set(result.outputs.leaves) == {"output['logits']"}
    assert (account.compared, account.total) == (4, 6)
    assert set(account.unused) == {"aux/kernel", "aux/bias"} and not account.uncompared
    assert all(result.unmatched_weights[name].startswith(UNUSED) for name in ("aux/kernel", "aux/bias"))
    assert any(note.startswith("target layer 'probe'") for note in result.notes)
    assert any("maps to None, so not compared: aux" in note for note in result.notes)


class KerasAuxInLogits(keras.Model):
    """fc1 -> relu -> fc2 and an 'aux' head of the probe's shape, called after fc2, whose output is summed into the
    logits: the head reaches the compared output, where the torch probe does not."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = layers.Dense(8, activation="relu", name="fc1")
        self.fc2 = layers.Dense(3, name="fc2")
        self.aux = layers.Dense(4, name="aux")

    def call(self, x):
        hidden = self.fc1(x)
        logits = self.fc2(hidden)
        aux = self.aux(hidden)
        return {"logits": logits + keras.ops.sum(aux, axis=-1, keepdims=True), "aux": aux}


def one_sided(direction, keras_model, torch_model):
    if direction == "keras -> torch":
        return check(keras_model, torch_model, output_names={"logits": "logits", "aux": None})
    return check(torch_model, keras_model, output_names={"logits": "logits"})


@pytest.mark.parametrize("direction", ["keras -> torch", "torch -> keras"])
def test_a_layer_left_out_on_one_side_and_used_on_the_other_still_refuses_the_port(direction):
    """The torch probe is left out (its output is discarded), the Keras head is not (summed into the logits): the
    layers still do not pair, and the refusal names what was left out, and what that means."""
    with pytest.raises(WeightTransferError) as refusal:
        one_sided(direction, KerasAuxInLogits(), TorchWithDiscardedProbe())
    message = str(refusal.value)
    side = "target" if direction == "keras -> torch" else "source"
    assert f"{side}: 'probe'" in message and "used on one side only" in message
    assert "aux (Dense)" in message  # the row that does not pair shows the head used on the other side


@pytest.mark.parametrize("direction", ["keras -> torch", "torch -> keras"])
def test_a_layer_used_on_one_side_that_pairs_by_order_fails_at_its_weights(direction):
    """Where the head used on one side runs where the discarded probe runs on the other, the two pair by order and
    nothing is left out: the comparison fails, naming the weights whose gradient one side does not have."""
    with pytest.raises(ParityError) as failure:
        one_sided(direction, keras_with_aux_head(aux_in_logits=True), TorchWithDiscardedProbe())
    assert not failure.value.result.outputs.passed
    grads = failure.value.result.grads
    assert not grads["aux/kernel" if direction == "keras -> torch" else "probe.weight"].passed
