"""The near-tie re-check on its own: which failures are re-checked, on what inputs, and what the user is told."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.errors import ParityError
from pytest_parity.result import ParityResult
from pytest_parity.verdict.compare import compare_arrays, compare_trees
from pytest_parity.verdict.near_ties import INPUT_MOVE, check_confirming_near_ties, move_float_inputs

AGREEING = compare_trees([np.ones(4)], [np.ones(4)], atol=1e-5, rtol=1e-4)
DIFFERING = compare_trees([np.zeros(4)], [np.ones(4)], atol=1e-5, rtol=1e-4)
NEAR_TIE = compare_arrays("input", np.r_[np.zeros(99), 1.0], np.zeros(100), atol=1e-4, rtol=1e-3)
DEFECT = compare_arrays("input", np.ones(100), np.zeros(100), atol=1e-4, rtol=1e-3)
CLEAN = compare_arrays("input", np.zeros(100), np.zeros(100), atol=1e-4, rtol=1e-3)


def _result(outputs=AGREEING, grad=CLEAN):
    return ParityResult(route="port: tensorflow -> torch", device="cpu", outputs=outputs, grads={"input": grad})


class Attempts:
    """Stands in for one parity check: returns or raises the given results in turn, and keeps the inputs it got."""

    def __init__(self, *results):
        self.results = list(results)
        self.inputs = []

    def __call__(self, inputs):
        self.inputs.append(inputs)
        result = self.results.pop(0)
        if not result.passed:
            raise ParityError("parity check failed: ...", result)
        return result


def _generator():
    return np.random.default_rng(0)


def test_a_near_tie_that_moves_away_passes_with_a_note_quoting_the_first_figures():
    attempts = Attempts(_result(grad=NEAR_TIE), _result())
    inputs = {"image": np.ones((2, 3), np.float32), "ids": np.arange(3)}
    result = check_confirming_near_ties(attempts, inputs, True, _generator())
    assert result.passed and len(attempts.inputs) == 2
    moved = attempts.inputs[1]
    assert moved["image"].dtype == np.float32 and not np.array_equal(moved["image"], inputs["image"])
    assert np.allclose(moved["image"], inputs["image"], rtol=10 * INPUT_MOVE)
    np.testing.assert_array_equal(moved["ids"], inputs["ids"])  # token ids keep their meaning
    assert "near-tie: on the given inputs 1 gradient(s) differed: 'input' 1 of 100 elements" in result.notes[0]


def _differing_at(*indices, size=100):
    target = np.zeros(size)
    target[list(indices)] = 1.0
    return compare_arrays("input", target, np.zeros(size), atol=1e-4, rtol=1e-3)


def test_the_result_keeps_the_given_inputs_figures_and_marks_the_near_ties():
    first = _result(grad=_differing_at(3, 40))
    result = check_confirming_near_ties(Attempts(first, _result()), np.ones(3, np.float32), True, _generator())
    assert result.passed and result.grads["input"].max_abs == 1.0
    assert result.grads["input"].near_ties == 2 and result.grads["input"].to_dict()["near_ties"] == 2
    assert "(1 draw)" in result.notes[-1] and "figures are the given inputs'" in result.notes[-1]
    assert not first.passed  # the failure's own result is left as it was


def test_near_ties_elsewhere_on_the_moved_inputs_do_not_count_against_the_first_ones():
    # A large network meets near-ties on almost any inputs: the moved inputs' own differences are at other elements,
    # which agreed on the given inputs.
    attempts = Attempts(_result(grad=_differing_at(3, 40)), _result(grad=_differing_at(7, 90)))
    assert check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator()).passed


def test_an_element_that_differs_again_gets_a_second_draw():
    attempts = Attempts(_result(grad=_differing_at(3, 40)), _result(grad=_differing_at(3, 7)),
                        _result(grad=_differing_at(40)))
    result = check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator())
    assert result.passed and len(attempts.inputs) == 3 and "(2 draws)" in result.notes[-1]
    assert not np.array_equal(attempts.inputs[1], attempts.inputs[2])  # each draw moves the inputs anew


def test_an_element_that_differs_on_every_draw_fails_the_check():
    attempts = Attempts(_result(grad=_differing_at(3, 40)), _result(grad=_differing_at(3, 7)),
                        _result(grad=_differing_at(3, 50)))
    with pytest.raises(ParityError, match=r"still differ at the same elements \('input' 1 of 100; 2 draw\(s\)\)"):
        check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator())


def test_a_defect_that_stays_fails_with_the_first_figures_and_says_the_recheck_failed():
    first = _result(grad=NEAR_TIE)
    attempts = Attempts(first, _result(grad=NEAR_TIE), _result())
    with pytest.raises(ParityError, match=r"near-tie re-check: .* still differ .*not a near-tie") as failure:
        check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator())
    assert failure.value.result is first
    assert len(attempts.inputs) == 2  # not one element moved away: no second draw
    assert "hint: " not in str(failure.value)


def test_moved_inputs_that_fail_in_the_outputs_end_the_recheck():
    attempts = Attempts(_result(grad=NEAR_TIE), _result(outputs=DIFFERING))
    with pytest.raises(ParityError, match=r"fails in more than gradients \(the outputs differ.*not a near-tie"):
        check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator())


def test_the_share_is_taken_over_the_differing_gradients_together():
    # A flip deep inside touches a fifth of a small BatchNorm beta and a few elements of the kernels around it.
    beta = compare_arrays("bn/beta", np.r_[np.ones(4), np.zeros(16)], np.zeros(20), atol=1e-4, rtol=1e-3)
    kernel = compare_arrays("conv/kernel", np.r_[1.0, np.zeros(999)], np.zeros(1000), atol=1e-4, rtol=1e-3)
    first = ParityResult(route="r", device="cpu", outputs=AGREEING, grads={"bn/beta": beta, "conv/kernel": kernel})
    clean = {name: compare_arrays(name, np.zeros(size), np.zeros(size), atol=1e-4, rtol=1e-3)
             for name, size in (("bn/beta", 20), ("conv/kernel", 1000))}
    moved = ParityResult(route="r", device="cpu", outputs=AGREEING, grads=clean)
    result = check_confirming_near_ties(Attempts(first, moved), np.ones(3, np.float32), True, _generator())
    assert result.passed and result.grads["bn/beta"].near_ties == 4


def test_a_gradient_the_moved_inputs_do_not_compare_is_not_confirmed():
    first = ParityResult(route="r", device="cpu", outputs=AGREEING, grads={"w": _differing_at(3)})
    with pytest.raises(ParityError, match="still differ at the same elements"):
        check_confirming_near_ties(Attempts(first, _result()), np.ones(3, np.float32), True, _generator())


@pytest.mark.parametrize("first", [_result(grad=DEFECT), _result(outputs=DIFFERING, grad=NEAR_TIE)],
                         ids=["most-gradient-elements-differ", "outputs-differ"])
def test_failures_without_the_near_tie_signature_are_not_rechecked(first):
    attempts = Attempts(first, _result())
    with pytest.raises(ParityError) as failure:
        check_confirming_near_ties(attempts, np.ones(3, np.float32), True, _generator())
    assert len(attempts.inputs) == 1 and "re-check" not in str(failure.value)


def test_no_recheck_when_switched_off_or_no_input_is_float():
    for inputs, enabled in ((np.ones(3, np.float32), False), (np.arange(3), True)):
        attempts = Attempts(_result(grad=NEAR_TIE), _result())
        with pytest.raises(ParityError):
            check_confirming_near_ties(attempts, inputs, enabled, _generator())
        assert len(attempts.inputs) == 1


def test_moved_inputs_keep_structure_and_are_seeded():
    inputs = (np.ones(4, np.float32), [np.full(2, 3.0, np.float16)])
    first, second = move_float_inputs(inputs, _generator()), move_float_inputs(inputs, _generator())
    assert isinstance(first, tuple) and isinstance(first[1], list) and first[1][0].dtype == np.float16
    np.testing.assert_array_equal(first[0], second[0])
    assert move_float_inputs({"ids": np.arange(4)}, _generator()) is None
