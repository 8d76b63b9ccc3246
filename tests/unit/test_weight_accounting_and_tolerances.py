"""The verdict's claims: every trainable weight's gradient compared (or named), and gradient tolerances under which a
zeroed, halved or negated target gradient fails whatever its scale."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity import ParityUsageError
from pytest_parity.frameworks import flatten_inputs
from pytest_parity.result import WeightAccount
from pytest_parity.settings import ParitySettings, resolve
from pytest_parity.verdict import tolerances
from pytest_parity.verdict.gradients import compare_gradients
from pytest_parity.verdict.weight_accounting import account_weights, uncompared_section

GRADS = {"conv/kernel": np.ones(3), "bn/gamma": np.full(2, 0.5), "bn/beta": np.full(2, 0.1), "pool/unused": None}


def test_every_trainable_weight_compared_is_a_full_account():
    account = account_weights(["a", "b"], ["a", "b"], {}, {"a": np.ones(1), "b": np.ones(1)}, "fail", True)
    assert account == WeightAccount(total=2, compared=2)
    assert not account.partial and account.describe() == "weights compared 2 of 2"


def test_an_uncompared_weight_is_named_with_its_reason_and_fails():
    account = account_weights(list(GRADS), ["conv/kernel"], {"bn/gamma": "folded into conv/kernel"}, GRADS, "fail",
                              True)
    assert account.uncompared == {"bn/gamma": "folded into conv/kernel",
                                  "bn/beta": "the check found no tensor in the target that it corresponds to"}
    assert list(account.unused) == ["pool/unused"]  # no gradient in the source: it does not influence the outputs
    assert account.compared == 1 and account.total == 4
    assert account.describe() == "weights compared 1 of 4 (2 not compared, 1 unused)"
    lines = uncompared_section(account, limit=8)
    assert lines[0].startswith("weights: the gradients of 2 of 4 trainable weight(s) were not compared")
    assert "  weight 'bn/gamma': folded into conv/kernel" in lines
    assert "unmatched_weights=[...]" in lines[-1]


def test_an_all_zero_source_gradient_is_unused_not_uncompared():
    account = account_weights(["w"], [], {}, {"w": np.zeros(3)}, "fail", True)
    assert account.unused and not account.uncompared


@pytest.mark.parametrize(("accepted", "allowed", "uncompared"), [
    ("allow", {"bn/gamma", "bn/beta"}, set()),
    (("bn/*",), {"bn/gamma", "bn/beta"}, set()),
    (("bn/gamma",), {"bn/gamma"}, {"bn/beta"}),
    (("other",), set(), {"bn/gamma", "bn/beta"}),
])
def test_the_user_can_accept_a_partial_pass_by_name_or_pattern(accepted, allowed, uncompared):
    account = account_weights(list(GRADS), ["conv/kernel"], {}, GRADS, accepted, True)
    assert set(account.allowed) == allowed and set(account.uncompared) == uncompared
    assert account.partial is bool(allowed)


def test_grad_false_is_a_partial_account_that_fails_nothing():
    account = account_weights(list(GRADS), [], {}, None, "fail", False)
    assert account.partial and not account.uncompared and account.compared == 0
    assert account.describe() == "weights: gradients of 4 not compared (grad=False)"


@pytest.mark.parametrize("value", [["bn/*", 3], [], "", 5, ("",)])
def test_unmatched_weights_setting_is_validated(value):
    with pytest.raises(ParityUsageError, match="unmatched_weights="):
        resolve(ParitySettings(), (), {"unmatched_weights": value})


@pytest.mark.parametrize(("value", "expected"), [("fail", "fail"), ("allow", "allow"), ("bn/*", ("bn/*",)),
                                                 (["a", "b*"], ("a", "b*"))])
def test_unmatched_weights_setting_accepts_modes_and_patterns(value, expected):
    assert resolve(ParitySettings(), (), {"unmatched_weights": value}).unmatched_weights == expected


# --------------------------------------------------------------------------------------------------------------------
# Scale-aware gradient tolerances
# --------------------------------------------------------------------------------------------------------------------


def test_gradient_atol_scales_with_the_tensor_below_grad_atol():
    assert tolerances.gradient_atol(1e-5, 1e-4, overall=1e-2) == pytest.approx(tolerances.SCALE_SHARE * 1e-5)
    # Never looser than the user's grad_atol.
    assert tolerances.gradient_atol(10.0, 1e-4, overall=10.0) == 1e-4
    # A gradient that is rounding noise of the model's scale is judged against that floor.
    assert tolerances.gradient_atol(1e-12, 1e-4, overall=1.0) == pytest.approx(tolerances.NOISE_SHARE)


def _check_gradients(source: dict[str, np.ndarray], target: dict[str, np.ndarray]):
    inputs = flatten_inputs(np.zeros((1, 2), np.float32))
    return compare_gradients(inputs, [None], [None], source, target, list(source), ParitySettings())


@pytest.mark.parametrize("mutate", [np.zeros_like, lambda g: g / 2, np.negative])
@pytest.mark.parametrize("scale", [1e-6, 1e-5, 1e-4, 1e-3, 1e-1, 1.0])
def test_a_zeroed_halved_or_negated_gradient_fails_at_any_scale_above_the_rounding_floor(mutate, scale):
    rng = np.random.default_rng(0)
    large = rng.standard_normal(64)  # sets the check's overall scale; its rounding floor is ~3e-7
    small = scale * rng.standard_normal(64)
    honest = _check_gradients({"large": large, "small": small}, {"large": large.copy(), "small": small.copy()})
    assert all(c.passed for c in honest.values())
    mutated = _check_gradients({"large": large, "small": small}, {"large": large.copy(), "small": mutate(small)})
    assert mutated["large"].passed and not mutated["small"].passed
    # With the old fixed atol of 1e-4, every tensor under it passed mutated.
    assert mutated["small"].atol <= max(tolerances.SCALE_SHARE * np.abs(small).max(),
                                        tolerances.NOISE_SHARE * np.abs(large).max())


def test_float32_rounding_of_a_small_gradient_still_passes():
    rng = np.random.default_rng(1)
    small = (1e-6 * rng.standard_normal(256)).astype(np.float32)
    rounded = small * (1 + rng.uniform(-1e-6, 1e-6, small.shape)).astype(np.float32)
    grads = _check_gradients({"small": small, "big": np.ones(4, np.float32)},
                             {"small": rounded, "big": np.ones(4, np.float32)})
    assert grads["small"].passed


def test_a_gradient_a_zeroed_target_would_also_pass_counts_as_not_compared():
    large = np.ones(8)
    below_floor = np.full(8, 1e-9)  # under 1e-7 of the check's largest gradient: rounding, by the floor
    grads = _check_gradients({"large": large, "tiny": below_floor}, {"large": large, "tiny": below_floor})
    account = account_weights(["large", "tiny"], ["large", "tiny"], {}, {"large": large, "tiny": below_floor},
                              "fail", True, grads)
    # No float64 run judged it: a comparison a zeroed target would pass is no comparison, so the check fails it.
    assert account.within_rounding_of_zero == ("tiny",)
    assert "float32 rounding floor" in account.uncompared["tiny"]
    assert account.describe() == "weights compared 1 of 2 (1 not compared)"
    allowed = account_weights(["large", "tiny"], ["large", "tiny"], {}, {"large": large, "tiny": below_floor},
                              ["tiny"], True, grads)
    assert allowed.partial and "tiny" in allowed.allowed and not allowed.uncompared


# -- near-zero gradients judged against their own float32 rounding (float64_referee.rejudge_near_zero) ------------

def _near_zero_case(target_tiny: np.ndarray, own64_tiny: np.ndarray | None, tiny: np.ndarray | None = None):
    """A check whose 'tiny' gradient lies under the rounding floor; 'own' is one side's float32 and float64 run."""
    from pytest_parity.verdict import float64_referee

    large = np.ones(8, np.float32)
    tiny = np.full(8, 3e-12, np.float32) if tiny is None else tiny
    grads = _check_gradients({"large": large, "tiny": tiny}, {"large": large, "tiny": target_tiny})
    assert tolerances.halved_would_pass(grads["tiny"])  # the floor alone cannot judge it
    own32 = {"large": large, "tiny": tiny}
    own64 = None if own64_tiny is None else {"large": large.astype(np.float64), "tiny": own64_tiny}
    return float64_referee.rejudge_near_zero(grads, own32, {"large": large, "tiny": target_tiny}, own32, own64,
                                             grad_atol=1e-4)


@pytest.mark.parametrize("mutant", [lambda g: g * 0, lambda g: g / 2, lambda g: -g])
def test_a_real_gradient_that_vanished_fails_a_zeroed_halved_or_negated_target(mutant):
    tiny = np.linspace(1e-12, 3e-12, 8).astype(np.float32)
    exact = tiny.astype(np.float64) * (1 + 1e-7)  # float32 rounding of the tensor itself: ~1e-7 of it
    outcome = _near_zero_case(mutant(tiny), exact, tiny)
    assert not outcome.grads["tiny"].passed
    assert outcome.grads["tiny"].atol < 1e-13  # its own scale, not the model's rounding floor
    assert outcome.zero_in_exact_arithmetic == () and outcome.unresolved == ()


def test_a_real_gradient_that_vanished_passes_a_target_that_rounds_differently():
    tiny = np.linspace(1e-12, 3e-12, 8).astype(np.float32)
    exact = tiny.astype(np.float64) * (1 + 1e-7)
    outcome = _near_zero_case((tiny * (1 + 3e-7)).astype(np.float32), exact, tiny)
    assert outcome.grads["tiny"].passed and outcome.grads["large"].passed


def test_a_gradient_zero_in_exact_arithmetic_is_checked_to_be_zero():
    noise = np.random.default_rng(0).uniform(-3e-9, 3e-9, 8).astype(np.float32)  # float32 noise of a zero gradient
    exact = np.full(8, 1e-18)
    other_noise = np.random.default_rng(1).uniform(-3e-9, 3e-9, 8).astype(np.float32)
    outcome = _near_zero_case(other_noise, exact, noise)
    assert outcome.grads["tiny"].passed and outcome.zero_in_exact_arithmetic == ("tiny",)
    # ... and a target whose gradient is not zero there fails: beyond 100 times the tensor's own float32 rounding.
    wrong = _near_zero_case(np.full(8, 1e-6, np.float32), exact, noise)
    assert not wrong.grads["tiny"].passed and wrong.grads["tiny"].atol < 3.1e-7


def test_a_zero_gradient_whose_rounding_noise_exceeds_the_floor_is_judged_by_that_noise():
    # A conv bias right before an InstanceNorm: zero in exact arithmetic, float32 noise of 1.4e-7 of the check's
    # largest gradient, above the floor (1e-7). Judged against its own measured rounding, it is zero, not a failure.
    noise = np.random.default_rng(2).uniform(-1.4e-7, 1.4e-7, 8).astype(np.float32)
    other_noise = np.random.default_rng(3).uniform(-1.4e-7, 1.4e-7, 8).astype(np.float32)
    outcome = _near_zero_case(other_noise, np.full(8, 1e-18), noise)
    assert outcome.grads["tiny"].passed and outcome.zero_in_exact_arithmetic == ("tiny",)


def test_without_a_float64_run_a_near_zero_gradient_stays_unresolved_and_never_looser_than_grad_atol():
    outcome = _near_zero_case(np.zeros(8, np.float32), None)
    assert outcome.unresolved == ("tiny",)
    assert outcome.grads["tiny"].passed  # unchanged: the account names it (within rounding of zero)
    # However large the measured rounding, the tolerance stays under the user's grad_atol, as every gradient's does.
    loose = _near_zero_case(np.zeros(8, np.float32), np.full(8, 1.0))
    assert loose.grads["tiny"].atol == 1e-4


def test_the_account_names_gradients_zero_in_exact_arithmetic_apart_from_those_within_rounding():
    large = np.ones(8)
    tiny = np.full(8, 1e-9)
    grads = _check_gradients({"large": large, "a": tiny, "b": tiny}, {"large": large, "a": tiny, "b": tiny})
    account = account_weights(["large", "a", "b"], ["large", "a", "b"], {}, {"large": large, "a": tiny, "b": tiny},
                              "fail", True, grads, zero_in_exact_arithmetic=("a",))
    assert account.zero_in_exact_arithmetic == ("a",) and account.within_rounding_of_zero == ("b",)
    assert account.describe() == "weights compared 2 of 3 (1 not compared, 1 zero in exact arithmetic)"


def test_a_gradient_just_above_the_floor_is_judged_at_its_own_scale_too():
    """Between one and two rounding floors a zeroed target fails but a halved one would pass: the floor, not the
    tensor, decides, so it is re-judged like the tensors below the floor."""
    from pytest_parity.verdict import float64_referee

    large = np.ones(8, np.float32)
    near = np.full(8, 1.5e-7, np.float32)  # the floor is 1e-7 of the largest gradient
    halved = _check_gradients({"large": large, "near": near}, {"large": large, "near": near / 2})
    assert halved["near"].passed and not tolerances.zero_would_pass(halved["near"])
    assert tolerances.halved_would_pass(halved["near"])
    own64 = {"large": large.astype(np.float64), "near": near.astype(np.float64) * (1 + 1e-7)}
    outcome = float64_referee.rejudge_near_zero(halved, {"large": large, "near": near},
                                                {"large": large, "near": near / 2}, {"large": large, "near": near},
                                                own64, grad_atol=1e-4)
    assert not outcome.grads["near"].passed and outcome.zero_in_exact_arithmetic == ()


def test_a_compared_weight_whose_source_gradient_is_exactly_zero_is_unused():
    from pytest_parity.verdict.compare import compare_arrays

    zero = compare_arrays("dead", np.zeros(3), np.zeros(3), atol=1e-9, rtol=1e-3)
    account = account_weights(["live", "dead", "none"], ["live", "dead", "none"], {},
                              {"live": np.ones(3), "dead": np.zeros(3), "none": None}, "fail", True,
                              {"dead": zero})
    assert account.compared == 1 and set(account.unused) == {"dead", "none"}
    # A target gradient that is not zero there fails its comparison, and the weight stays compared (and failing).
    nonzero = compare_arrays("dead", np.ones(3), np.zeros(3), atol=1e-9, rtol=1e-3)
    assert account_weights(["dead"], ["dead"], {}, {"dead": np.zeros(3)}, "fail", True, {"dead": nonzero}).compared == 1
