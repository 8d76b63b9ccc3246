"""Port mode on the layers transformer ports use, end to end with both frameworks, in both directions.

Keras MultiHeadAttention (EinsumDense q/k/v/output with [hidden, heads, head_dim] kernels) against nn.MultiheadAttention
(fused in_proj_weight) and against separate q/k/v nn.Linear with the attention written out; a tiny BERT-like encoder
whose embeddings the two sides call in different orders; RMSNorm. Correct ports pass with every trainable weight's
gradient compared; wrong ports fail naming the layer and the cause. Twins: fixtures/transformer_ports.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fixtures import transformer_ports as twins
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError, ParityUsageError, WeightTransferError
from pytest_parity.settings import ParitySettings

DIRECTIONS = ("keras->torch", "torch->keras")


def _inputs(kind: str, rng: np.random.Generator, batch: int = 3) -> Any:
    if kind == "tokens":
        return (rng.integers(0, twins.VOCAB, (batch, twins.SEQUENCE)).astype(np.int64),
                rng.integers(0, twins.SEGMENTS, (batch, twins.SEQUENCE)).astype(np.int64))
    return rng.standard_normal((batch, twins.SEQUENCE, twins.HIDDEN)).astype(np.float32)


def _oriented(build_keras: Any, build_torch: Any, direction: str) -> tuple[Any, Any]:
    keras_model, torch_model = build_keras(), build_torch()
    return (keras_model, torch_model) if direction == "keras->torch" else (torch_model, keras_model)


def _run(source: Any, target: Any, inputs: Any, name: str) -> Any:
    return run_check(source, target, inputs, ParitySettings(devices=("cpu",)), "cpu", name)


@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(twins.CASES))
def test_correct_transformer_port_passes_comparing_every_weight(parity, name, direction):
    source, target = _oriented(*twins.CASES[name], direction)
    result = parity.check(source, target, inputs=_inputs(twins.INPUTS[name], np.random.default_rng(7)))
    assert result.passed and result.route.startswith("port: ")
    account = result.weight_account
    assert account is not None and not account.uncompared and not account.allowed, account.describe()
    assert account.compared == account.total, account.describe()
    weight_grads = {grad for grad in result.grads if not grad.startswith("input")}
    assert len(weight_grads) == account.total and weight_grads <= set(result.weight_names)
    assert result.outputs.max_abs < 1e-5


def test_fused_in_proj_is_carried_blockwise_and_its_gradient_assembled():
    source, target = _oriented(*twins.CASES["attention_vs_multihead_attention"], "torch->keras")
    result = _run(source, target, _inputs("sequence", np.random.default_rng(1)), "blocks")
    # The source's fused weight went to three EinsumDense kernels; its gradient came back from all three, whole.
    assert result.weight_names["attention.attention.in_proj_weight"] == \
        "attention/query/kernel + attention/key/kernel + attention/value/kernel"
    assert result.grads["attention.attention.in_proj_weight"].total == 3 * twins.HIDDEN * twins.HIDDEN
    source, target = _oriented(*twins.CASES["attention_vs_multihead_attention"], "keras->torch")
    result = _run(source, target, _inputs("sequence", np.random.default_rng(1)), "blocks")
    assert result.weight_names["attention/key/kernel"] == "attention.attention.in_proj_weight[block 2 of 3]"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_one_qkv_linear_is_split_into_row_blocks_to_pair_with_three_projections(direction):
    source, target = _oriented(*twins.CASES["attention_vs_one_qkv_linear"], direction)
    result = _run(source, target, _inputs("sequence", np.random.default_rng(5)), "qkv")
    assert any("attention.qkv (Linear) split into 3 row blocks" in note for note in result.notes)
    if direction == "torch->keras":
        assert result.weight_names["attention.qkv.weight"] == \
            "attention/query/kernel + attention/key/kernel + attention/value/kernel"
        assert result.grads["attention.qkv.weight"].total == 3 * twins.HIDDEN * twins.HIDDEN


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_port_that_reads_the_qkv_blocks_in_another_order_fails(direction):
    wrong = lambda: twins.torch_attention_block("separate", qkv_order="kqv")  # noqa: E731
    source, target = _oriented(twins.keras_attention_block, wrong, direction)
    with pytest.raises(ParityError) as failure:
        _run(source, target, _inputs("sequence", np.random.default_rng(5)), "qkv-order")
    assert "attention" in failure.value.result.diagnosis


def test_embeddings_called_in_another_order_are_paired_by_shape_and_said_so():
    source, target = _oriented(*twins.CASES["tiny_bert_multihead_attention"], "torch->keras")
    result = _run(source, target, _inputs("tokens", np.random.default_rng(2)), "embeddings")
    assert result.weight_names["token_type_embeddings.weight"].endswith("segment_embedding/embeddings")
    assert result.weight_names["position_embeddings.weight"].endswith("position_embedding/embeddings")
    assert any("paired by table shape" in note for note in result.notes), result.notes


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", list(twins.BAD_CASES))
def test_wrong_transformer_port_fails_naming_the_layer_and_cause(name, direction):
    build_keras, build_torch, keras_layer, torch_module, cause = twins.BAD_CASES[name]
    source, target = _oriented(build_keras, build_torch, direction)
    with pytest.raises((ParityError, WeightTransferError)) as failure:
        _run(source, target, _inputs(twins.BAD_INPUTS[name], np.random.default_rng(3)), name)
    message = str(failure.value)
    assert keras_layer in message and torch_module in message, message
    assert cause in message, message
    if isinstance(failure.value, ParityError):
        diagnosis = failure.value.result.diagnosis
        assert diagnosis and keras_layer in diagnosis and torch_module in diagnosis and cause in diagnosis


def test_attention_the_transfer_cannot_pair_gets_the_side_by_side_table():
    import keras
    import torch

    x = keras.Input((twins.SEQUENCE, twins.HIDDEN))
    # key_dim = hidden: q/k/v project to heads * key_dim = 16 features; nn.MultiheadAttention keeps 8.
    wide = keras.Model(x, keras.layers.MultiHeadAttention(twins.HEADS, twins.HIDDEN, name="attention")(x, x))
    torch_block = twins.torch_attention_block("fused")
    torch_block.norm = torch.nn.Identity()
    with pytest.raises(WeightTransferError) as failure:
        _run(wide, torch_block, _inputs("sequence", np.random.default_rng(4)), "table")
    lines = str(failure.value).splitlines()
    assert "do not correspond at row 1" in lines[0]
    marked = next(line for line in lines if line.lstrip().startswith("->"))
    assert "attention/query (EinsumDense) Gemm W[16,8] B[16]" in marked, marked
    assert "!= attention.attention[query] (MultiheadAttention) Gemm W[8,8] B[8]" in marked, marked


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_padding_row_that_torch_never_trains_is_named_not_taken_for_a_near_tie(direction):
    source, target = _oriented(twins.keras_tiny_bert, lambda: twins.torch_tiny_bert(padding_idx=0), direction)
    token_ids, segment_ids = _inputs("tokens", np.random.default_rng(5))
    token_ids[:, -1] = 0  # a padded position: id 0 is in the inputs
    with pytest.raises(ParityError) as failure:
        _run(source, target, (token_ids, segment_ids), "padding")
    result = failure.value.result
    assert result.outputs.passed
    assert "differs only in row 0" in result.diagnosis and "padding_idx=0" in result.diagnosis
    assert "word_embeddings" in result.diagnosis
    assert "near-tie" not in str(failure.value)


def test_inputs_the_target_names_differently_are_named_on_both_sides():
    import keras
    import torch

    hidden = keras.Input((twins.SEQUENCE, twins.HIDDEN), name="hidden_states")
    keras_model = keras.Model({"hidden_states": hidden}, keras.layers.Dense(twins.HIDDEN, name="fc")(hidden))

    class Projection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(twins.HIDDEN, twins.HIDDEN)

        def forward(self, inputs_embeds):
            return self.fc(inputs_embeds)

    with pytest.raises(ParityUsageError) as failure:
        _run(keras_model, Projection(), {"hidden_states": _inputs("sequence", np.random.default_rng(6))}, "names")
    message = str(failure.value)
    assert "passed to both models by name (hidden_states); the target takes inputs_embeds" in message, message
    assert "Check layouts=" not in message
