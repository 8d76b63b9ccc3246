"""Port mode's activation range check (issue 24, item 6), end to end with both frameworks, in both directions.

A port whose activation differs from the source's only outside the range random inputs reach (ReLU6 vs ReLU; exact
vs tanh-approximate GELU in a BERT block at std-0.02 weights) passed on outputs and gradients; each paired activation
is now compared as a function over a wide grid, and the failure names both layers and the cause. Activations with the
same name and another parameter (LeakyReLU slope, ELU alpha, the two hard sigmoids) fail naming it. Correct ports
pass with their activations compared. Ports: fixtures/port_mutants.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from fixtures import port_mutants
from fixtures.ports import GOOD_PORTS
from pytest_parity.check import run_check
from pytest_parity.errors import ParityError
from pytest_parity.settings import ParitySettings

DIRECTIONS = ("keras->torch", "torch->keras")
ACTIVATION_MUTANTS = [name for name, pair in port_mutants.MUTANTS.items() if pair.kind == "activation"]
ACTIVATION_CORRECT = [name for name, pair in port_mutants.CORRECT.items() if pair.kind == "activation"]


def _check(pair: port_mutants.PortPair, direction: str, seed: int = 3) -> Any:
    keras_model, torch_model = pair.build_keras(), pair.build_torch()
    inputs = port_mutants.make_inputs(pair.inputs, seed)
    layouts = pair.layouts
    if direction == "keras->torch":
        source, target = keras_model, torch_model
    else:
        source, target = torch_model, keras_model
        if layouts is not None:
            layouts, inputs = (layouts[1], layouts[0]), inputs.transpose(0, 3, 1, 2).copy()
    return run_check(source, target, inputs, ParitySettings(devices=("cpu",), layouts=layouts), "cpu",
                     f"activation_range_{direction}")


def _failure(pair: port_mutants.PortPair, direction: str) -> ParityError:
    with pytest.raises(ParityError) as failure:
        _check(pair, direction)
    return failure.value


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", ["relu6_layer_vs_relu_module", "bert_exact_gelu_vs_tanh_module"])
def test_a_difference_the_inputs_never_reach_fails_where_outputs_and_gradients_agree(name, direction):
    pair = port_mutants.MUTANTS[name]
    failure = _failure(pair, direction)
    result = failure.result
    # The false PASS of before: every output and gradient agrees on these inputs.
    assert result.outputs.passed and all(c.passed for c in (result.grads or {}).values())
    assert result.activations is not None and not result.activations.passed
    (probe,) = result.activations.failures()
    message = str(failure)
    assert pair.cause in message and pair.cause in (probe.cause or "")
    assert pair.keras_layer in (probe.source if direction == "keras->torch" else probe.target)
    assert pair.torch_module in (probe.target if direction == "keras->torch" else probe.source)
    if name.startswith("relu6"):
        assert "never reached" in message  # the range the inputs reached is said, and that it is not where they differ
    if name.startswith("bert"):
        tanh_side = "source" if direction == "torch->keras" else "target"  # the torch port is the tanh one
        assert f"the {tanh_side} uses the tanh approximation" in message


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", ACTIVATION_MUTANTS)
def test_every_activation_mutant_fails_naming_both_layers_and_the_cause(name, direction):
    pair = port_mutants.MUTANTS[name]
    message = str(_failure(pair, direction))
    assert pair.cause in message, message
    activation_lines = [line for line in message.splitlines() if line.lstrip().startswith("activation ")]
    assert activation_lines and pair.keras_layer in activation_lines[0] and pair.torch_module in activation_lines[0]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("name", ACTIVATION_CORRECT)
def test_a_correct_port_passes_with_its_activation_compared_as_a_function(name, direction):
    result = _check(port_mutants.CORRECT[name], direction)
    assert result.passed and result.activations is not None
    assert len(result.activations.probes) >= 1 and result.activations.passed
    assert not result.activations.partial, result.notes
    record = result.to_dict()["activations"]
    assert record["passed"] and record["probes"][0]["comparison"]["passed"]


def test_an_activation_the_other_side_cannot_show_is_a_visible_partial():
    """Keras' raw-variable MLP (tf.nn.relu inside a tf.Module): its activation cannot be recorded, so the torch port's
    ReLU cannot be compared as a function, and its inputs never reach 6, where a ReLU6 would differ: said in a note,
    not passed silently."""
    import numpy as np

    case = next(case for case in GOOD_PORTS if case.name == "lowlevel_mlp")
    inputs = np.random.default_rng(0).standard_normal((2, *case.keras_input_shape)).astype(np.float32)
    result = run_check(case.build_keras(), case.build_torch(), inputs, ParitySettings(devices=("cpu",)), "cpu",
                       "lowlevel")
    assert result.passed and result.activations is not None and result.activations.partial
    notes = " ".join(result.notes)
    assert "activation range not exercised" in notes and "ReLU6" in notes and "relu" in notes
    assert "has no Keras layers" in notes
