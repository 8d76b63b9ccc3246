"""Hand-written recurrent cells against the framework's LSTM/GRU, both directions (port/recurrent_cells).

A cell written as an input projection (I -> G*H) and a hidden projection (H -> G*H) in a loop over time is carried and
compared against nn.LSTM / keras LSTM (and GRU) instead of being refused ("different operations: LSTM vs Gemm"): every
weight's gradient is compared. A cell that unpacks its gate chunks in another order than it computes them fails, and the
diagnosis names the gates; an outputs-only comparison of the same mutants is shown for contrast in the assertions'
figures (the outputs differ too: a gate swap is no backward-only bug).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

from pytest_parity.check import run_check
from pytest_parity.errors import ParityError
from pytest_parity.settings import ParitySettings, with_overrides

INPUTS, HIDDEN, STEPS = 5, 6, 4
TORCH_ORDER = {"LSTM": "ifgo", "GRU": "rzn"}


class TorchCell(torch.nn.Module):
    """An LSTM or GRU over the sequence written by hand: Linear(I, G*H) and Linear(H, G*H) in a loop. ``uses``: the
    order in which the gate chunks are unpacked (torch's own order is right; another is the gate-order bug)."""

    def __init__(self, kind: str, uses: str | None = None) -> None:
        super().__init__()
        self.kind, self.uses = kind, uses or TORCH_ORDER[kind]
        gates = len(TORCH_ORDER[kind])
        self.ih = torch.nn.Linear(INPUTS, gates * HIDDEN)
        self.hh = torch.nn.Linear(HIDDEN, gates * HIDDEN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], HIDDEN)
        c = x.new_zeros(x.shape[0], HIDDEN)
        outputs = []
        for step in range(x.shape[1]):
            if self.kind == "LSTM":
                gate = dict(zip(self.uses, (self.ih(x[:, step]) + self.hh(h)).chunk(4, 1)))
                c = torch.sigmoid(gate["f"]) * c + torch.sigmoid(gate["i"]) * torch.tanh(gate["g"])
                h = torch.sigmoid(gate["o"]) * torch.tanh(c)
            else:
                xs = dict(zip(self.uses, self.ih(x[:, step]).chunk(3, 1)))
                hs = dict(zip(self.uses, self.hh(h).chunk(3, 1)))
                r, z = torch.sigmoid(xs["r"] + hs["r"]), torch.sigmoid(xs["z"] + hs["z"])
                n = torch.tanh(xs["n"] + r * hs["n"])
                h = (1 - z) * n + z * h
            outputs.append(h)
        return torch.stack(outputs, 1)


def keras_recurrent(kind: str) -> keras.Model:
    layer = keras.layers.LSTM(HIDDEN, return_sequences=True) if kind == "LSTM" else \
        keras.layers.GRU(HIDDEN, return_sequences=True)
    return keras.Sequential([keras.Input((STEPS, INPUTS)), layer])


def check(source, target, **overrides):
    inputs = np.random.default_rng(0).standard_normal((3, STEPS, INPUTS)).astype(np.float32)
    return run_check(source, target, inputs, with_overrides(ParitySettings(devices=("cpu",)), overrides), "cpu",
                     "test_port_recurrent_cells")


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["torch -> keras", "keras -> torch"])
def test_a_hand_written_cell_is_carried_and_compared_against_the_frameworks_recurrent_layer(kind, direction):
    cell, layer = TorchCell(kind), keras_recurrent(kind)
    result = check(cell, layer) if direction == "torch -> keras" else check(layer, cell)
    account = result.weight_account
    assert result.passed and account.compared == account.total and not account.unused
    assert account.total == (4 if direction == "torch -> keras" else 3)  # ih/hh weight+bias; kernels + one bias
    assert any(f"hand-written {kind} cell ih + hh" in note for note in result.notes)


MUTANTS = [("LSTM", "igfo", "f", "g"), ("LSTM", "figo", "i", "f"), ("GRU", "zrn", "r", "z")]


@pytest.mark.parametrize(("kind", "uses", "first", "second"), MUTANTS)
@pytest.mark.parametrize("direction", ["torch -> keras", "keras -> torch"])
def test_a_gate_order_bug_in_the_cell_fails_naming_the_gates(kind, uses, first, second, direction):
    cell, layer = TorchCell(kind, uses), keras_recurrent(kind)
    with pytest.raises(ParityError) as failure:
        check(cell, layer) if direction == "torch -> keras" else check(layer, cell)
    result = failure.value.result
    assert not result.outputs.passed  # an outputs-only comparison catches a gate swap too
    diagnosis = result.diagnosis or ""
    assert f"hand-written {kind} cell ih + hh" in diagnosis and f"order {','.join(uses)}" in diagnosis
    assert f"({first}) are used as {second}" in diagnosis and f"({second}) are used as {first}" in diagnosis


class KerasLSTMCell(keras.layers.Layer):
    """A Keras LSTM cell written by hand for keras.layers.RNN: Dense(4H) on the input and Dense(4H) on the state, gates
    unpacked in ``uses`` order (Keras' own i,f,c,o is right)."""

    def __init__(self, uses: str = "ifco", **kwargs) -> None:
        super().__init__(**kwargs)
        self.uses = uses
        self.state_size = [HIDDEN, HIDDEN]
        self.output_size = HIDDEN
        self.ih = keras.layers.Dense(4 * HIDDEN, name="ih")
        self.hh = keras.layers.Dense(4 * HIDDEN, name="hh")

    def build(self, input_shape) -> None:
        self.ih.build(input_shape)
        self.hh.build((input_shape[0], HIDDEN))

    def call(self, x, states):
        h, c = states
        ops = keras.ops
        gate = dict(zip(self.uses, ops.split(self.ih(x) + self.hh(h), 4, axis=-1)))
        c = ops.sigmoid(gate["f"]) * c + ops.sigmoid(gate["i"]) * ops.tanh(gate["c"])
        h = ops.sigmoid(gate["o"]) * ops.tanh(c)
        return h, [h, c]


def keras_cell_model(uses: str = "ifco") -> keras.Model:
    return keras.Sequential([keras.Input((STEPS, INPUTS)),
                             keras.layers.RNN(KerasLSTMCell(uses), return_sequences=True)])


class TorchLSTM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(INPUTS, HIDDEN, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0]


@pytest.mark.parametrize("direction", ["keras -> torch", "torch -> keras"])
def test_a_keras_custom_rnn_cell_is_compared_against_nn_lstm(direction):
    cell, lstm = keras_cell_model(), TorchLSTM()
    result = check(cell, lstm) if direction == "keras -> torch" else check(lstm, cell)
    account = result.weight_account
    assert result.passed and account.compared == account.total == 4 and not account.unused
    assert any("hand-written LSTM cell" in note and "i,f,c,o" in note for note in result.notes)


@pytest.mark.parametrize("direction", ["keras -> torch", "torch -> keras"])
def test_a_gate_order_bug_in_a_keras_custom_cell_fails_naming_the_gates(direction):
    cell, lstm = keras_cell_model("icfo"), TorchLSTM()
    with pytest.raises(ParityError) as failure:
        check(cell, lstm) if direction == "keras -> torch" else check(lstm, cell)
    diagnosis = failure.value.result.diagnosis or ""
    assert "order i,c,f,o, not i,f,c,o" in diagnosis
    assert "(f) are used as c" in diagnosis and "(c) are used as f" in diagnosis
