"""Port mode between two independently written implementations of one architecture: Hugging Face transformers'
BertModel (PyTorch) and keras-hub's BertBackbone (Keras), built from the same small config with random weights.

No weight mapping is written here: the weights pair by structure through ONNX layouts (embeddings by table shape,
attention kernels [hidden, heads, head_dim] against Linear [out, in]); the only thing said is which input and output
names correspond. Run with ``pytest tests/realworld -m realworld``.
"""

from __future__ import annotations

import numpy as np
import pytest

VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE, POSITIONS = 100, 32, 2, 2, 64, 64
HF_TO_HUB_INPUTS = {"input_ids": "token_ids", "token_type_ids": "segment_ids", "attention_mask": "padding_mask"}
HF_TO_HUB_OUTPUTS = {"last_hidden_state": "sequence_output", "pooler_output": "pooled_output"}


def bert_pair():
    transformers = pytest.importorskip("transformers", reason="pip install transformers")
    keras_hub = pytest.importorskip("keras_hub", reason="pip install keras-hub")
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS, type_vocab_size=2)).eval()
    hub = keras_hub.models.BertBackbone(vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
                                        intermediate_dim=INTERMEDIATE, max_sequence_length=POSITIONS, num_segments=2,
                                        dropout=0.0)
    return hf, hub


def hf_inputs():
    rng = np.random.default_rng(0)
    mask = np.ones((2, 8), np.int32)
    mask[1, 6:] = 0  # the second sequence is padded
    return {"input_ids": rng.integers(1, VOCAB, (2, 8)).astype(np.int32),
            "token_type_ids": rng.integers(0, 2, (2, 8)).astype(np.int32), "attention_mask": mask}


@pytest.fixture
def failing_port_check():
    """A failing port check run directly (not through the fixture, which would fail the test): the ParityError."""
    from pytest_parity.check import run_check
    from pytest_parity.errors import ParityError
    from pytest_parity.settings import ParitySettings, with_overrides

    def check(source, target, inputs, **overrides):
        with pytest.raises(ParityError) as failure:
            run_check(source, target, inputs, with_overrides(ParitySettings(devices=("cpu",)), overrides), "cpu",
                      "test_ports")
        return failure.value
    return check


def inverse(names):
    return {target: source for source, target in names.items()}


@pytest.mark.parity(devices=("cpu",))
def test_transformers_bert_ported_to_keras_hub(parity):
    hf, hub = bert_pair()
    result = parity.check(hf, hub, inputs=hf_inputs(), input_names=HF_TO_HUB_INPUTS, output_names=HF_TO_HUB_OUTPUTS)
    assert result.weight_account.compared == result.weight_account.total == 39


@pytest.mark.parity(devices=("cpu",))
def test_keras_hub_bert_ported_to_transformers(parity):
    hf, hub = bert_pair()
    inputs = {HF_TO_HUB_INPUTS[name]: array for name, array in hf_inputs().items()}
    result = parity.check(hub, hf, inputs=inputs, input_names=inverse(HF_TO_HUB_INPUTS),
                          output_names=inverse(HF_TO_HUB_OUTPUTS))
    assert result.weight_account.compared == result.weight_account.total == 39


def bert_without_pooler_pair():
    """transformers' BertModel built without its pooler (add_pooling_layer=False), and keras-hub's BertBackbone, whose
    pooler runs on every call; the compared output is the sequence output. keras-hub's feed-forward uses the tanh
    GELU, so the transformers side does too (hidden_act='gelu_pytorch_tanh'): the port is exact."""
    transformers = pytest.importorskip("transformers", reason="pip install transformers")
    _, hub = bert_pair()
    hf = transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS, type_vocab_size=2,
        hidden_act="gelu_pytorch_tanh"), add_pooling_layer=False).eval()
    return hf, hub


POOLER = ("pooled_dense/kernel", "pooled_dense/bias")


@pytest.mark.parity(devices=("cpu",))
def test_transformers_bert_without_pooler_ported_to_keras_hub_on_the_sequence_output(parity):
    """keras-hub's pooler runs but feeds only pooled_output, which nothing on the source side names: it is left out
    of the pairing (refused at row 21 before) and named, with its weights, in the result's notes."""
    hf, hub = bert_without_pooler_pair()
    result = parity.check(hf, hub, inputs=hf_inputs(), input_names=HF_TO_HUB_INPUTS,
                          output_names={"last_hidden_state": "sequence_output"})
    assert result.weight_account.compared == result.weight_account.total == 37
    note = next(note for note in result.notes if note.startswith("target layer 'pooled_dense'"))
    assert all(name in note for name in POOLER) and "does not reach the compared outputs" in note


@pytest.mark.parity(devices=("cpu",))
def test_keras_hub_bert_ported_to_transformers_without_pooler_on_the_sequence_output(parity):
    """The other way: pooled_output is mapped to None (not compared), the pooler left out of the pairing, and its two
    weights reported unused, alike in the weight account and in unmatched_weights."""
    hf, hub = bert_without_pooler_pair()
    inputs = {HF_TO_HUB_INPUTS[name]: array for name, array in hf_inputs().items()}
    result = parity.check(hub, hf, inputs=inputs, input_names=inverse(HF_TO_HUB_INPUTS),
                          output_names={"sequence_output": "last_hidden_state", "pooled_output": None})
    account = result.weight_account
    assert (account.compared, account.total) == (37, 39) and not account.uncompared
    assert set(account.unused) == set(POOLER)
    for name in POOLER:
        assert result.unmatched_weights[name].startswith("unused:")
        assert "'pooled_dense' runs, but its output does not reach the compared outputs" in \
            result.unmatched_weights[name]


def test_a_bert_port_with_another_layer_norm_epsilon_fails_at_the_first_norm(failing_port_check):
    """keras-hub's BERT normalises with epsilon 1e-12, as Google's BERT did; a transformers BERT with epsilon 1e-5 is
    not the same model at this scale of activations, and the failure names the first LayerNorm and its epsilon."""
    transformers = pytest.importorskip("transformers", reason="pip install transformers")
    _, hub = bert_pair()
    other = transformers.BertModel(transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, max_position_embeddings=POSITIONS, type_vocab_size=2,
        layer_norm_eps=1e-5)).eval()
    failure = failing_port_check(other, hub, hf_inputs(), input_names=HF_TO_HUB_INPUTS,
                                 output_names=HF_TO_HUB_OUTPUTS)
    assert "embeddings.LayerNorm" in failure.result.diagnosis and "epsilon" in failure.result.diagnosis


# GPT-2: transformers keeps q, k and v in one Conv1D (c_attn, weight [in, 3E]); keras-hub has three EinsumDense
# kernels [hidden, heads, head_dim]. The fused projection is split into row blocks to pair with them. keras-hub's
# backbone returns its sequence output alone: a model's single output is named 'output'.
HF_TO_HUB_GPT2_INPUTS = {"input_ids": "token_ids", "attention_mask": "padding_mask"}
HF_TO_HUB_GPT2_OUTPUTS = {"last_hidden_state": "output"}


def gpt2_pair(**hf_config):
    transformers = pytest.importorskip("transformers", reason="pip install transformers")
    keras_hub = pytest.importorskip("keras_hub", reason="pip install keras-hub")
    hf = transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTERMEDIATE, n_positions=POSITIONS,
        bos_token_id=0, eos_token_id=0, **hf_config)).eval()
    hub = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
                                        intermediate_dim=INTERMEDIATE, max_sequence_length=POSITIONS, dropout=0.0)
    return hf, hub


def gpt2_inputs():
    mask = np.ones((2, 8), np.int32)
    mask[1, 6:] = 0
    return {"input_ids": np.random.default_rng(1).integers(1, VOCAB, (2, 8)).astype(np.int32), "attention_mask": mask}


@pytest.mark.parity(devices=("cpu",))
def test_transformers_gpt2_ported_to_keras_hub(parity):
    hf, hub = gpt2_pair()
    result = parity.check(hf, hub, inputs=gpt2_inputs(), input_names=HF_TO_HUB_GPT2_INPUTS,
                          output_names=HF_TO_HUB_GPT2_OUTPUTS)
    assert result.weight_account.compared == result.weight_account.total == 28
    assert any("c_attn (Conv1D) split into 3 row blocks" in note for note in result.notes)


@pytest.mark.parity(devices=("cpu",))
def test_keras_hub_gpt2_ported_to_transformers(parity):
    hf, hub = gpt2_pair()
    inputs = {HF_TO_HUB_GPT2_INPUTS[name]: array for name, array in gpt2_inputs().items()}
    result = parity.check(hub, hf, inputs=inputs, input_names=inverse(HF_TO_HUB_GPT2_INPUTS),
                          output_names=inverse(HF_TO_HUB_GPT2_OUTPUTS))
    assert result.weight_account.compared == result.weight_account.total == 36


def test_a_gpt2_port_with_another_layer_norm_epsilon_fails_at_the_first_norm(failing_port_check):
    hf, hub = gpt2_pair(layer_norm_epsilon=1e-3)
    failure = failing_port_check(hf, hub, gpt2_inputs(), input_names=HF_TO_HUB_GPT2_INPUTS,
                                 output_names=HF_TO_HUB_GPT2_OUTPUTS)
    assert "h.0.ln_1" in failure.result.diagnosis and "epsilon" in failure.result.diagnosis
