"""The demo parity suite, training mode: each seed system against its training port in the other framework, three
steps with the seed's optimizer and loss (fixtures/training_ports.py).

Some of them needed the check to learn a convention (an RMSprop port with Keras' formula in its train step, NLLLoss on
log-probabilities, a torch LSTM with one trainable bias): these cases keep it learnt.
"""

from __future__ import annotations

import pytest

from fixtures.training_ports import CASES

STEPS = 3


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES, ids=str)
def test_reference_training_port_agrees(parity, case):
    batches = case.make_batches(parity.randn, parity.randint, STEPS)
    source, target, arguments = case.arguments(batches)
    result = parity.check_training(source, target, **arguments)
    assert result.passed and result.route.startswith("training: ")
    assert len(result.training.steps) == STEPS
    assert not result.training.configuration and result.training.first_divergence is None
