"""The training check against a zoo of training bugs (fixtures/training_mutants.py): every mutant fails with a
ParityError whose message names its cause, in both directions where the bug exists in both (Keras source -> torch
target, torch source -> Keras target); the correct ports they come from pass on three seeds.

What the outputs-only method (inference outputs after copying the weights) catches of the same zoo is measured by
benchmarks/training_mutants.py, not asserted here.
"""

from __future__ import annotations

import pytest

from fixtures.training_mutants import BASES, MUTANTS
from pytest_parity import ParityError


def _run(parity, case):
    batches = case.make_batches(parity.randn, parity.randint, 3)
    source, target, arguments = case.arguments(batches)
    return parity.check_training(source, target, **arguments)


@pytest.mark.parity
@pytest.mark.parametrize("mutant", MUTANTS, ids=str)
def test_training_mutant_fails_naming_its_cause(parity, mutant):
    with pytest.raises(ParityError) as failure:
        _run(parity, mutant.case)
    message = str(failure.value)
    assert "first divergence" in message or "configuration:" in message
    assert mutant.expect.lower() in message.lower(), message


@pytest.mark.parametrize("case", [pytest.param(case, id=f"{case.name}-seed{seed}", marks=pytest.mark.parity(seed=seed))
                                  for case in BASES for seed in (0, 1, 2)])
def test_correct_training_port_passes(parity, case):
    result = _run(parity, case)
    assert result.passed and not result.training.configuration


def test_zoo_is_broad():
    assert len({m.name for m in MUTANTS}) >= 15
    assert {m.category for m in MUTANTS} >= {"batchnorm", "optimizer", "loss", "clipping", "dropout", "trainability",
                                             "forward"}
    both = {m.name for m in MUTANTS if m.direction == "keras->torch"} & {m.name for m in MUTANTS
                                                                          if m.direction == "torch->keras"}
    assert len(both) >= 8
