"""Port mode's gradient-side first divergence (issue 24, item 4), end to end with both frameworks, both directions.

Backward-only bugs (the outputs agree, gradients do not) used to list the affected weights with nothing pointing at
the layer: an FFN run under torch.no_grad(), an activation's output detached, a custom autograd Function with a
wrong backward, a residual path detached, tf.stop_gradient on the Keras side. The diagnosis now names the layer pair
where the backward pass first differs, walking from the outputs back, and the likely cause. A frozen weight is the
trainability check's to name (requires_grad), and the walk does not blame a layer for it. Ports:
fixtures/port_mutants.py (keras_block / torch_block).
"""

from __future__ import annotations

from typing import Any

import pytest

from fixtures import port_mutants
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError
from pytest_parity.settings import ParitySettings

DIRECTIONS = ("keras->torch", "torch->keras")
LOCATED = [name for name in port_mutants.GRADIENT_MUTANTS if name != "ffn_weight_frozen"]


def _check(pair: port_mutants.PortPair, direction: str, seed: int = 3) -> Any:
    keras_model, torch_model = pair.build_keras(), pair.build_torch()
    source, target = (keras_model, torch_model) if direction == "keras->torch" else (torch_model, keras_model)
    return run_check(source, target, port_mutants.make_inputs(pair.inputs, seed), ParitySettings(devices=("cpu",)),
                     "cpu", f"gradient_divergence_{direction}")


def _failure(pair: port_mutants.PortPair, direction: str) -> ParityError:
    with pytest.raises(ParityError) as failure:
        _check(pair, direction)
    return failure.value


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", LOCATED)
def test_a_backward_only_bug_is_located_at_its_layer_with_its_cause(name, direction):
    pair = port_mutants.GRADIENT_MUTANTS[name]
    failure = _failure(pair, direction)
    result = failure.result
    assert result.outputs.passed  # a gradient-only failure: the forward divergence has nothing to say
    diagnosis = result.diagnosis or ""
    assert diagnosis.startswith("backward pass first differs"), diagnosis
    assert pair.keras_layer in diagnosis and pair.torch_module in diagnosis, diagnosis
    assert pair.cause in diagnosis, diagnosis
    assert f"diagnosis: {diagnosis}" in str(failure)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_side_with_the_bug_is_named(direction):
    diagnosis = _failure(port_mutants.GRADIENT_MUTANTS["ffn_under_no_grad"], direction).result.diagnosis or ""
    side = "target" if direction == "keras->torch" else "source"  # the torch model runs the FFN under no_grad
    assert f"on the {side} its output does not require grad" in diagnosis, diagnosis


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_a_frozen_weight_is_named_by_the_trainability_check_not_blamed_on_a_backward(direction):
    failure = _failure(port_mutants.GRADIENT_MUTANTS["ffn_weight_frozen"], direction)
    assert "requires_grad" in str(failure)
    assert not (failure.result.diagnosis or "").startswith("backward pass first differs")


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_the_correct_block_passes(direction):
    result = _check(port_mutants.CORRECT["ffn_block"], direction)
    assert result.passed and result.diagnosis is None
    account = result.weight_account
    assert account is not None and account.compared == account.total
