"""Port mode between two models that name their inputs and outputs differently (input_names=, output_names=).

Independent implementations of one architecture rarely agree on names (Hugging Face's ``input_ids`` and
``last_hidden_state``, keras-hub's ``token_ids`` and ``sequence_output``). The user says which is which once; weights
still pair by structure, and the comparison is made under the source's names. The flagship pair (transformers
BertModel and keras-hub BertBackbone) is in tests/realworld/test_ports.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from fixtures.torch_convert_models import TwoInputsDictOutput
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError, ParityUsageError
from pytest_parity.settings import ParitySettings, with_overrides

TORCH_TO_KERAS_INPUTS = {"image": "pixels", "extra": "side"}
TORCH_TO_KERAS_OUTPUTS = {"score": "confidence", "logits": "class_logits"}


def keras_twin(extra_output: bool = False) -> keras.Model:
    """TwoInputsDictOutput written in Keras under other names, its layers created in the order torch calls them."""
    pixels, side = keras.Input((6,), name="pixels"), keras.Input((5,), name="side")
    image, extra = layers.Dense(8, activation="relu")(pixels), layers.Dense(8, activation="tanh")(side)
    joined = layers.Concatenate()([image, extra])
    confidence = layers.Dense(1, activation="sigmoid")(joined)
    outputs = {"confidence": confidence, "class_logits": layers.Dense(3)(joined)}
    if extra_output:
        outputs["features"] = joined
    return keras.Model({"pixels": pixels, "side": side}, outputs)


def inverse(names: dict[str, str]) -> dict[str, str]:
    return {target: source for source, target in names.items()}


def check(source, target, inputs, **overrides):
    settings = with_overrides(ParitySettings(devices=("cpu",)), overrides)
    return run_check(source, target, inputs, settings, "cpu", "test_port_io_names")


def torch_inputs():
    rng = np.random.default_rng(0)
    return {"image": rng.standard_normal((4, 6)).astype(np.float32),
            "extra": rng.standard_normal((4, 5)).astype(np.float32)}


def keras_inputs():
    return {TORCH_TO_KERAS_INPUTS[name]: array for name, array in torch_inputs().items()}


def test_torch_to_keras_under_the_sources_names():
    result = check(TwoInputsDictOutput(), keras_twin(), torch_inputs(), input_names=TORCH_TO_KERAS_INPUTS,
                   output_names=TORCH_TO_KERAS_OUTPUTS)
    assert result.passed
    assert set(result.outputs.leaves) == {"output['score']", "output['logits']"}
    assert result.weight_account.compared == result.weight_account.total == 8
    assert {"input['image']", "input['extra']"} <= set(result.grads)


def test_keras_to_torch_under_the_sources_names():
    result = check(keras_twin(), TwoInputsDictOutput(), keras_inputs(), input_names=inverse(TORCH_TO_KERAS_INPUTS),
                   output_names=inverse(TORCH_TO_KERAS_OUTPUTS))
    assert result.passed
    assert set(result.outputs.leaves) == {"output['confidence']", "output['class_logits']"}
    assert result.weight_account.compared == result.weight_account.total == 8


def test_a_target_output_no_source_output_reads_is_left_out_with_a_note():
    result = check(TwoInputsDictOutput(), keras_twin(extra_output=True), torch_inputs(),
                   input_names=TORCH_TO_KERAS_INPUTS, output_names=TORCH_TO_KERAS_OUTPUTS)
    assert result.passed
    assert any("not compared: features" in note for note in result.notes)


def test_inputs_swapped_by_the_mapping_fail():
    # Both inputs exist on both sides, so the run works; the wrong pairing shows in the outputs (and their shapes).
    with pytest.raises((ParityError, ParityUsageError)):
        check(TwoInputsDictOutput(), keras_twin(), torch_inputs(), input_names={"image": "side", "extra": "pixels"},
              output_names=TORCH_TO_KERAS_OUTPUTS)


def test_outputs_swapped_by_the_mapping_fail():
    with pytest.raises(ParityError) as failure:
        check(TwoInputsDictOutput(), keras_twin(), torch_inputs(), input_names=TORCH_TO_KERAS_INPUTS,
              output_names={"score": "class_logits", "logits": "confidence"})
    assert "output['score']" in str(failure.value)


@pytest.mark.parametrize("overrides, expected", [
    ({"input_names": {"pixels": "image"}}, "which the inputs do not have"),
    ({"input_names": TORCH_TO_KERAS_INPUTS, "output_names": {"scores": "confidence"}},
     "the source returns no 'scores'"),
    ({"input_names": TORCH_TO_KERAS_INPUTS, "output_names": {"score": "confidences"}},
     "the target returns no 'confidences'"),
    ({"input_names": ["image"]}, "must be a non-empty dict"),
    ({"input_names": {"image": "pixels", "extra": "pixels"}}, "the same target name"),
])
def test_a_mapping_that_does_not_fit_is_refused_naming_the_cause(overrides, expected):
    with pytest.raises(ParityUsageError, match=expected):
        check(TwoInputsDictOutput(), keras_twin(), torch_inputs(), **overrides)


def test_convert_mode_refuses_io_names():
    with pytest.raises(ParityUsageError, match="applies to port mode"):
        check(TwoInputsDictOutput(), None, torch_inputs(), input_names=TORCH_TO_KERAS_INPUTS)
