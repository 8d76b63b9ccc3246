"""Port mode reads the flatten order from the activations: every way a correct port flattens passes, in both
directions, and a flatten that mixes features fails naming the flatten (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.flatten_ports import INPUT_HWC, TORCH_FLATTEN_STYLES, WRONG_FLATTEN, build_keras, build_torch
from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings

KERAS_INPUTS = np.random.default_rng(3).standard_normal((4, *INPUT_HWC)).astype(np.float32)
TORCH_INPUTS = KERAS_INPUTS.transpose(0, 3, 1, 2).copy()


def port(source, target, inputs, layouts):
    return run_check(source, target, inputs, ParitySettings(layouts=layouts), "cpu", "flatten-styles")


@pytest.mark.parametrize("style", TORCH_FLATTEN_STYLES)
@pytest.mark.parametrize("direction", ["keras->torch", "torch->keras"])
def test_every_correct_flatten_style_passes(style, direction):
    if direction == "keras->torch":
        result = port(build_keras(), build_torch(style), KERAS_INPUTS, ("NHWC", "NCHW"))
    else:
        result = port(build_torch(style), build_keras(), TORCH_INPUTS, ("NCHW", "NHWC"))
    assert result.passed and not result.weight_account.uncompared
    permuted = any("flattened feature map" in note for note in result.notes)
    # Only a flatten in different orders on the two sides needs the weight permuted.
    assert permuted == (style != "keras_order")


def test_a_keras_port_that_flattens_channels_first_passes_without_a_permutation():
    result = port(build_torch("modules"), build_keras(keras_order_flatten=False), TORCH_INPUTS, ("NCHW", "NHWC"))
    assert result.passed and not any("flattened feature map" in note for note in result.notes)


@pytest.mark.parametrize("direction", ["keras->torch", "torch->keras"])
def test_a_flatten_that_mixes_features_fails_naming_the_flatten(direction):
    with pytest.raises(ParityError) as failure:
        if direction == "keras->torch":
            port(build_keras(), build_torch(WRONG_FLATTEN), KERAS_INPUTS, ("NHWC", "NCHW"))
        else:
            port(build_torch(WRONG_FLATTEN), build_keras(), TORCH_INPUTS, ("NCHW", "NHWC"))
    message = str(failure.value)
    assert "outputs: 1 of 1 tensor(s) differ" in message
    assert "no reordering of the feature map" in message and "check the flatten" in message
