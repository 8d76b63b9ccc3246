"""Unit tests for the comparison engine (pytest_parity.verdict.compare): numpy only, no framework."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pytest_parity.result import Comparison, TreeComparison
from pytest_parity.trees import flatten_tree, unflatten_like
from pytest_parity.verdict.compare import compare_arrays, compare_trees, describe

ATOL = 1e-5
RTOL = 1e-4


def _compare(actual, expected, **kwargs):
    kwargs.setdefault("atol", ATOL)
    kwargs.setdefault("rtol", RTOL)
    return compare_arrays("x", actual, expected, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# compare_arrays: tolerances
# --------------------------------------------------------------------------------------------------------------------


def test_identical_arrays_pass_with_zero_differences():
    e = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = _compare(e.copy(), e)
    assert c.passed
    assert c.mismatched == 0
    assert c.total == 12
    assert c.max_abs == 0.0
    assert c.max_rel == 0.0
    assert c.problem is None
    assert c.name == "x"
    assert (c.atol, c.rtol) == (ATOL, RTOL)


def test_passes_within_atol_plus_rtol_times_abs_expected():
    e = np.array([0.0, 1.0, -100.0, 1000.0])
    allowed = ATOL + RTOL * np.abs(e)
    # Every element sits at 99% of its own allowance: the 1000.0 element is off by ~0.1, far above atol alone.
    a = e + 0.99 * allowed * np.array([1, -1, 1, -1])
    c = _compare(a, e)
    assert c.passed, c
    assert c.mismatched == 0
    assert c.max_abs == pytest.approx(0.99 * allowed[3])


def test_fails_just_outside_the_allowance():
    e = np.array([0.0, 1.0, -100.0, 1000.0])
    allowed = ATOL + RTOL * np.abs(e)
    a = e.copy()
    a[2] = e[2] - 1.01 * allowed[2]
    c = _compare(a, e)
    assert not c.passed
    assert c.mismatched == 1
    assert c.total == 4
    assert c.max_abs_index == (2,)
    assert c.max_abs == pytest.approx(1.01 * allowed[2])


def test_every_element_just_outside_counts_as_a_mismatch():
    e = np.array([0.0, 1.0, -100.0, 1000.0])
    allowed = ATOL + RTOL * np.abs(e)
    c = _compare(e + 1.01 * allowed, e)
    assert not c.passed
    assert c.mismatched == 4


def test_atol_alone_applies_at_zero_reference():
    e = np.zeros(3)
    assert _compare(np.full(3, 0.9 * ATOL), e).passed
    c = _compare(np.array([0.0, 1.1 * ATOL, 0.0]), e)
    assert not c.passed
    assert c.mismatched == 1


def test_source_is_the_reference_comparison_is_asymmetric():
    # allowed = rtol * |expected|: with expected=1 the allowance is 0.6, with expected=2 it is 1.2; |diff| is 1.
    forward = compare_arrays("x", np.array([2.0]), np.array([1.0]), atol=0.0, rtol=0.6)
    backward = compare_arrays("x", np.array([1.0]), np.array([2.0]), atol=0.0, rtol=0.6)
    assert not forward.passed
    assert backward.passed
    # The relative figure divides by the source as well.
    assert forward.max_rel == pytest.approx(1.0)
    assert backward.max_rel == pytest.approx(0.5)


def test_accepts_python_scalars_and_lists():
    assert _compare(1.0, 1.0).passed
    c = _compare([1.0, 2.0], [1.0, 3.0])
    assert not c.passed
    assert c.total == 2


def test_zero_dim_arrays_report_empty_index():
    c = _compare(np.array(2.0), np.array(1.0))
    assert not c.passed
    assert c.total == 1
    assert c.max_abs == pytest.approx(1.0)
    assert c.max_abs_index == ()


# --------------------------------------------------------------------------------------------------------------------
# compare_arrays: shape and dtype
# --------------------------------------------------------------------------------------------------------------------


def test_shape_mismatch_fails_every_element_and_names_both_shapes():
    c = _compare(np.zeros((3, 2)), np.zeros((2, 3)))
    assert not c.passed
    assert c.problem == "shape mismatch: source (2, 3), target (3, 2)"
    assert c.mismatched == c.total == 6
    assert c.max_abs == float("inf")
    assert c.max_rel == float("inf")


def test_shape_mismatch_total_is_the_source_size():
    c = _compare(np.zeros(5), np.zeros(2))
    assert c.total == 2
    assert c.mismatched == 2
    assert "source (2,), target (5,)" in c.problem


def test_dtype_mismatch_fails_even_when_values_are_equal():
    e = np.array([1.0, 2.0], dtype=np.float64)
    c = _compare(e.astype(np.float32), e)
    assert not c.passed
    assert c.mismatched == 0
    assert c.problem == "dtype mismatch: source float64, target float32"


def test_dtype_mismatch_is_reported_together_with_value_problems():
    c = _compare(np.array([np.nan, 1.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float64))
    assert not c.passed
    assert c.problem.startswith("dtype mismatch: source float64, target float32; ")
    assert "NaN in the target only" in c.problem


def test_integer_tensors_must_match_exactly_whatever_the_tolerance():
    e = np.array([1, 2, 3], dtype=np.int64)
    c = compare_arrays("ids", np.array([1, 2, 4], dtype=np.int64), e, atol=10.0, rtol=10.0)
    assert not c.passed
    assert c.mismatched == 1
    assert (c.atol, c.rtol) == (0.0, 0.0)
    assert c.max_abs_index == (2,)


def test_equal_integer_tensors_pass():
    e = np.array([[1, 2], [3, 4]], dtype=np.int32)
    c = _compare(e.copy(), e)
    assert c.passed
    assert (c.atol, c.rtol) == (0.0, 0.0)


def test_boolean_tensors_must_match_exactly():
    e = np.array([True, False, True])
    assert _compare(e.copy(), e).passed
    c = _compare(np.array([True, True, True]), e, atol=1.0, rtol=1.0)
    assert not c.passed
    assert c.mismatched == 1
    assert (c.atol, c.rtol) == (0.0, 0.0)


def test_integer_target_against_float_source_keeps_tolerance_but_flags_dtype():
    c = compare_arrays("x", np.array([1, 2], dtype=np.int64), np.array([1.0, 2.0]), atol=0.5, rtol=0.0)
    assert (c.atol, c.rtol) == (0.5, 0.0)
    assert c.mismatched == 0
    assert not c.passed
    assert "dtype mismatch" in c.problem


def test_large_int64_values_are_compared_exactly():
    e = np.array([2**53], dtype=np.int64)
    a = np.array([2**53 + 1], dtype=np.int64)
    c = _compare(a, e)
    assert not c.passed
    assert c.mismatched == 1


def test_complex_tensors_are_refused():
    c = _compare(np.array([1 + 1j]), np.array([1 + 1j]))
    assert not c.passed
    assert c.problem == "complex tensors are not supported"


# --------------------------------------------------------------------------------------------------------------------
# compare_arrays: NaN and Inf
# --------------------------------------------------------------------------------------------------------------------


def test_nan_in_target_only_is_a_mismatch_with_its_index():
    e = np.zeros((2, 3))
    a = e.copy()
    a[1, 2] = np.nan
    c = _compare(a, e)
    assert not c.passed
    assert c.mismatched == 1
    assert "NaN in the target only at 1 element(s), first at index (1, 2)" in c.problem
    assert "source only" not in c.problem


def test_nan_in_source_only_is_a_mismatch():
    e = np.array([1.0, np.nan, np.nan])
    a = np.array([1.0, 2.0, 3.0])
    c = _compare(a, e)
    assert not c.passed
    assert c.mismatched == 2
    assert "NaN in the source only at 2 element(s), first at index (1,)" in c.problem
    assert "target only" not in c.problem


def test_nan_does_not_poison_the_finite_figures():
    e = np.array([1.0, 2.0, 3.0])
    a = np.array([np.nan, 2.5, 3.0])
    c = _compare(a, e)
    assert c.max_abs == pytest.approx(0.5)
    assert c.max_abs_index == (1,)
    assert np.isfinite(c.max_rel)


def test_nan_on_both_sides_fails_by_default():
    e = np.array([np.nan, 1.0])
    c = _compare(e.copy(), e)
    assert not c.passed
    assert c.mismatched == 1
    assert "NaN on both sides at 1 element(s), first at index (0,)" in c.problem
    assert "equal_nan" in c.problem


def test_nan_on_both_sides_passes_with_equal_nan():
    e = np.array([np.nan, 1.0])
    c = _compare(e.copy(), e, equal_nan=True)
    assert c.passed
    assert c.mismatched == 0
    assert c.problem is None


def test_equal_nan_does_not_excuse_nan_on_one_side():
    c = _compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0]), equal_nan=True)
    assert not c.passed
    assert "NaN in the target only" in c.problem


def test_same_sign_inf_matches():
    e = np.array([np.inf, -np.inf, 1.0])
    with np.errstate(invalid="ignore"):  # see test_same_sign_inf_emits_no_runtime_warning
        c = _compare(e.copy(), e)
    assert c.passed
    assert c.mismatched == 0
    assert c.problem is None


def test_same_sign_inf_emits_no_runtime_warning():
    e = np.array([np.inf, 1.0])
    c = _compare(e.copy(), e)
    assert c.passed


def test_opposite_inf_is_a_mismatch():
    c = _compare(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))
    assert not c.passed
    assert c.mismatched == 1
    assert "Inf" in c.problem


def test_inf_in_target_only_is_a_mismatch():
    c = _compare(np.array([1.0, np.inf]), np.array([1.0, 2.0]))
    assert not c.passed
    assert c.mismatched == 1
    assert "Inf in the target only at 1 element(s), first at index (1,)" in c.problem
    assert c.max_abs == 0.0  # the non-finite element has no finite difference to report


def test_inf_in_source_only_is_a_mismatch():
    c = _compare(np.array([1.0, 2.0]), np.array([-np.inf, 2.0]))
    assert not c.passed
    assert "Inf in the source only at 1 element(s), first at index (0,)" in c.problem


# --------------------------------------------------------------------------------------------------------------------
# compare_arrays: where the worst differences are
# --------------------------------------------------------------------------------------------------------------------


def test_index_of_greatest_absolute_and_relative_difference():
    e = np.array([[100.0, 1.0, 5.0], [10.0, 2.0, 3.0]])
    a = e.copy()
    a[0, 0] += 1.0  # abs 1.0, rel 0.01
    a[1, 1] += 0.6  # abs 0.6, rel 0.3
    c = _compare(a, e)
    assert c.max_abs == pytest.approx(1.0)
    assert c.max_abs_index == (0, 0)
    assert c.max_rel == pytest.approx(0.3)
    assert c.max_rel_index == (1, 1)
    assert c.mismatched == 2


def test_max_rel_ignores_zero_reference_elements():
    e = np.array([0.0, 2.0, 0.0])
    a = np.array([0.5, 2.002, -0.25])
    c = _compare(a, e)
    assert c.max_abs == pytest.approx(0.5)
    assert c.max_abs_index == (0,)
    assert c.max_rel == pytest.approx(0.001)
    assert c.max_rel_index == (1,)
    assert np.isfinite(c.max_rel)


def test_all_zero_reference_has_no_relative_index():
    c = _compare(np.array([0.0, 1e-3]), np.zeros(2))
    assert c.max_rel == 0.0
    assert c.max_rel_index is None
    assert c.max_abs_index == (1,)


def test_empty_arrays_pass():
    c = _compare(np.zeros((0, 3)), np.zeros((0, 3)))
    assert c.passed
    assert c.total == 0
    assert c.mismatched == 0
    assert c.max_abs == 0.0
    assert c.max_abs_index is None
    assert c.max_rel_index is None


def test_empty_against_non_empty_is_a_shape_mismatch():
    c = _compare(np.zeros((0,)), np.zeros((1,)))
    assert not c.passed
    assert c.problem.startswith("shape mismatch")


# --------------------------------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------------------------------


def test_describe_reads_like_torch_testing():
    e = np.array([[1.0, 2.0], [4.0, 8.0]])
    a = e.copy()
    a[0, 1] = 2.5
    text = describe("output", compare_arrays("output['logits']", a, e, atol=ATOL, rtol=RTOL))
    lines = text.splitlines()
    assert lines[0] == "output \"output['logits']\":"
    assert "Mismatched elements: 1 / 4 (25.0%)" in text
    assert "Greatest absolute difference: 0.5 at index (0, 1) (up to 1e-05 allowed)" in text
    assert "Greatest relative difference: 0.25 at index (0, 1) (up to 0.0001 allowed)" in text
    assert len(lines) == 4


def test_describe_one_dimensional_index_has_trailing_comma():
    text = describe("gradient", _compare(np.array([1.0, 3.0]), np.array([1.0, 2.0])))
    assert "at index (1,)" in text
    assert text.startswith("gradient 'x':")


def test_describe_puts_the_problem_first_and_keeps_the_figures():
    text = describe("output", _compare(np.array([np.nan, 1.0]), np.array([0.0, 1.0])))
    lines = text.splitlines()
    assert lines[1].strip().startswith("NaN in the target only")
    assert "Mismatched elements: 1 / 2 (50.0%)" in text
    assert "Greatest absolute difference" in text


def test_describe_without_finite_difference_shows_dash_index():
    text = describe("output", _compare(np.array([np.nan]), np.array([1.0])))
    assert "Greatest absolute difference: 0 at index - " in text


@pytest.mark.parametrize("problem", [
    "shape mismatch: source (2,), target (3,)",
    "structure mismatch: key 'a' is missing from the target's output",
    "no gradient reaches the target tensor 'w'",
])
def test_describe_stops_after_a_shape_structure_or_missing_gradient_problem(problem):
    c = Comparison(name="t", passed=False, max_abs=float("inf"), max_rel=float("inf"), mismatched=2, total=2,
                   atol=0.0, rtol=0.0, problem=problem)
    text = describe("output", c)
    assert text == f"output 't':\n    {problem}"
    assert "Mismatched elements" not in text


def test_describe_zero_total_does_not_divide_by_zero():
    text = describe("output", _compare(np.zeros(0), np.zeros(0)))
    assert "Mismatched elements: 0 / 0 (0.0%)" in text


# --------------------------------------------------------------------------------------------------------------------
# flatten_tree / unflatten_like
# --------------------------------------------------------------------------------------------------------------------


def _nested():
    return {"logits": np.ones((2, 3)), "aux": [np.zeros(1), (np.full(2, 2.0), np.full(3, 3.0))], "n": np.array(4.0)}


def test_flatten_tree_paths():
    pairs = flatten_tree(_nested(), "output")
    assert [path for path, _ in pairs] == [
        "output['logits']", "output['aux'][0]", "output['aux'][1][0]", "output['aux'][1][1]", "output['n']"]
    assert pairs[0][1].shape == (2, 3)
    assert pairs[3][1].tolist() == [3.0, 3.0, 3.0]


def test_flatten_tree_leaf_and_tuple():
    leaf = np.zeros(2)
    assert flatten_tree(leaf, "output") == [("output", leaf)]
    assert [p for p, _ in flatten_tree((leaf, leaf), "output")] == ["output[0]", "output[1]"]


def test_flatten_tree_does_not_descend_into_strings():
    assert flatten_tree(["ab", b"cd"], "o") == [("o[0]", "ab"), ("o[1]", b"cd")]


def test_unflatten_like_round_trip():
    tree = _nested()
    leaves = [leaf for _, leaf in flatten_tree(tree, "output")]
    new_leaves = [leaf * 10 for leaf in leaves]
    rebuilt = unflatten_like(tree, new_leaves)
    assert isinstance(rebuilt, dict)
    assert list(rebuilt) == ["logits", "aux", "n"]
    assert isinstance(rebuilt["aux"], list)
    assert isinstance(rebuilt["aux"][1], tuple)
    np.testing.assert_array_equal(rebuilt["logits"], np.full((2, 3), 10.0))
    np.testing.assert_array_equal(rebuilt["aux"][1][1], np.full(3, 30.0))
    again = [leaf for _, leaf in flatten_tree(rebuilt, "output")]
    assert len(again) == len(new_leaves)
    for x, y in zip(again, new_leaves, strict=True):
        assert x is y


def test_unflatten_like_single_leaf():
    assert unflatten_like(np.zeros(1), ["leaf"]) == "leaf"


def test_unflatten_like_round_trip_namedtuple():
    Pair = collections.namedtuple("Pair", "first second")
    tree = Pair(np.zeros(1), np.ones(2))
    rebuilt = unflatten_like(tree, [leaf for _, leaf in flatten_tree(tree, "o")])
    assert isinstance(rebuilt, Pair)
    np.testing.assert_array_equal(rebuilt.second, np.ones(2))


# --------------------------------------------------------------------------------------------------------------------
# compare_trees
# --------------------------------------------------------------------------------------------------------------------


def test_compare_trees_nested_paths_and_per_leaf_results():
    expected = {"logits": np.ones(4), "parts": [np.zeros(2), (np.full(3, 5.0),)]}
    actual = {"logits": np.ones(4), "parts": [np.array([0.0, 1.0]), (np.full(3, 5.0),)]}
    tree = compare_trees(actual, expected, atol=ATOL, rtol=RTOL)
    assert isinstance(tree, TreeComparison)
    assert list(tree.leaves) == ["output['logits']", "output['parts'][0]", "output['parts'][1][0]"]
    assert tree.leaves["output['logits']"].passed
    assert not tree.leaves["output['parts'][0]"].passed
    assert tree.leaves["output['parts'][0]"].name == "output['parts'][0]"
    assert not tree.passed
    assert [f.name for f in tree.failures] == ["output['parts'][0]"]
    assert (tree.atol, tree.rtol) == (ATOL, RTOL)


def test_compare_trees_tuple_outputs_use_indices():
    tree = compare_trees((np.ones(2), np.ones(3)), (np.ones(2), np.ones(3)), atol=ATOL, rtol=RTOL)
    assert list(tree.leaves) == ["output[0]", "output[1]"]
    assert tree.passed


def test_compare_trees_list_against_tuple_is_not_a_structure_problem():
    tree = compare_trees([np.ones(2)], (np.ones(2),), atol=ATOL, rtol=RTOL)
    assert tree.passed


def test_compare_trees_custom_path_and_single_leaf():
    tree = compare_trees(np.ones(2), np.ones(2), atol=ATOL, rtol=RTOL, path="grad")
    assert list(tree.leaves) == ["grad"]
    assert tree.passed


def test_compare_trees_passes_equal_nan_through():
    e = {"a": np.array([np.nan, 1.0])}
    assert not compare_trees({"a": e["a"].copy()}, e, atol=ATOL, rtol=RTOL).passed
    assert compare_trees({"a": e["a"].copy()}, e, atol=ATOL, rtol=RTOL, equal_nan=True).passed


def test_compare_trees_missing_key():
    expected = {"logits": np.ones((2, 3)), "probs": np.ones(2)}
    tree = compare_trees({"logits": np.ones((2, 3))}, expected, atol=ATOL, rtol=RTOL)
    leaf = tree.leaves["output['probs']"]
    assert not leaf.passed
    assert leaf.problem.startswith("structure mismatch")
    assert "'probs' is missing from the target" in leaf.problem
    assert leaf.total == leaf.mismatched == 2
    assert tree.leaves["output['logits']"].passed
    assert not tree.passed


def test_compare_trees_extra_key():
    tree = compare_trees({"a": np.ones(2), "extra": np.ones(5)}, {"a": np.ones(2)}, atol=ATOL, rtol=RTOL)
    leaf = tree.leaves["output['extra']"]
    assert not leaf.passed
    assert leaf.problem.startswith("structure mismatch")
    assert "'extra' is in the target's output but not the source's" in leaf.problem
    assert leaf.total == 5
    assert not tree.passed


def test_compare_trees_different_lengths():
    tree = compare_trees([np.ones(2)], [np.ones(2), np.ones(3)], atol=ATOL, rtol=RTOL)
    assert list(tree.leaves) == ["output"]
    leaf = tree.leaves["output"]
    assert not leaf.passed
    assert leaf.problem == "structure mismatch: source gives 2 outputs, target gives 1"
    assert leaf.total == leaf.mismatched == 5
    assert leaf.max_abs == float("inf")


def test_compare_trees_dict_source_array_target():
    tree = compare_trees(np.ones(2), {"a": np.ones(2)}, atol=ATOL, rtol=RTOL)
    leaf = tree.leaves["output"]
    assert not leaf.passed
    assert leaf.problem == "structure mismatch: source gives a dict, target gives an array of shape (2,)"


def test_compare_trees_sequence_source_dict_target():
    tree = compare_trees({"a": np.ones(2)}, [np.ones(2)], atol=ATOL, rtol=RTOL)
    leaf = tree.leaves["output"]
    assert not leaf.passed
    assert leaf.problem == "structure mismatch: source gives a sequence of 1, target gives a dict"


def test_compare_trees_nested_structure_problem_has_nested_path():
    expected = {"outer": [np.ones(1), np.ones(1)]}
    tree = compare_trees({"outer": [np.ones(1)]}, expected, atol=ATOL, rtol=RTOL)
    assert list(tree.leaves) == ["output['outer']"]
    assert tree.leaves["output['outer']"].problem.startswith("structure mismatch")


@pytest.mark.parametrize("source_shape", [
    (2,),
    (),
])
def test_compare_trees_array_source_dict_target_is_a_structure_mismatch(source_shape):
    tree = compare_trees({"a": np.ones(2)}, np.ones(source_shape), atol=ATOL, rtol=RTOL)
    leaf = tree.leaves["output"]
    assert not leaf.passed
    assert leaf.problem.startswith("structure mismatch")


# --------------------------------------------------------------------------------------------------------------------
# TreeComparison aggregates
# --------------------------------------------------------------------------------------------------------------------


def test_tree_comparison_aggregates_worst_and_sums():
    expected = {"a": np.array([1.0, 2.0, 4.0]), "b": np.array([[10.0, 100.0]])}
    actual = {"a": np.array([1.5, 2.0, 4.0]), "b": np.array([[13.0, 100.0]])}
    tree = compare_trees(actual, expected, atol=ATOL, rtol=RTOL)
    assert tree.max_abs == pytest.approx(3.0)  # from b
    assert tree.max_rel == pytest.approx(0.5)  # from a
    assert tree.mismatched == 2
    assert tree.total == 5
    assert not tree.passed
    assert len(tree.failures) == 2


def test_tree_comparison_structure_failure_makes_worst_infinite():
    tree = compare_trees({"a": np.ones(2)}, {"a": np.ones(2), "b": np.ones(3)}, atol=ATOL, rtol=RTOL)
    assert tree.max_abs == float("inf")
    assert tree.max_rel == float("inf")
    assert tree.mismatched == 3
    assert tree.total == 5


def test_tree_comparison_empty_defaults():
    tree = TreeComparison(leaves={}, atol=ATOL, rtol=RTOL)
    assert tree.passed
    assert tree.max_abs == 0.0
    assert tree.max_rel == 0.0
    assert tree.mismatched == 0
    assert tree.total == 0
    assert tree.failures == []


def test_tree_comparison_worst_does_not_depend_on_leaf_order():
    unsupported = _compare(np.array([1 + 0j]), np.array([1 + 0j]))
    off = compare_arrays("b", np.array([1.5]), np.array([1.0]), atol=0.0, rtol=0.0)
    first = TreeComparison(leaves={"a": unsupported, "b": off}, atol=0.0, rtol=0.0)
    second = TreeComparison(leaves={"b": off, "a": unsupported}, atol=0.0, rtol=0.0)
    assert str(first.max_abs) == str(second.max_abs)


def test_the_error_histogram_counts_each_element_once_in_its_decade():
    from pytest_parity.result import error_histogram_labels

    expected = np.zeros(8)
    actual = np.array([0.0, 1e-13, 5e-7, 1e-6, 0.5, 2.0, np.nan, -3e-9])
    counts = dict(zip(error_histogram_labels(), compare_arrays("x", actual, expected, atol=1e-5, rtol=0).histogram))
    assert counts == {**{label: 0 for label in error_histogram_labels()}, "0": 1, "< 1e-12": 1, "[1e-9, 1e-8)": 1,
                      "[1e-7, 1e-6)": 1, "[1e-6, 1e-5)": 1, "[1e-1, 1)": 1, ">= 1": 1, "NaN/Inf": 1}


def test_a_tree_histogram_sums_its_leaves_and_structure_problems_have_none():
    tree = compare_trees([np.ones(3), np.ones(2)], [np.ones(3), np.zeros(2)], atol=1e-5, rtol=1e-4)
    assert tree.histogram[0] == 3 and tree.histogram[-2] == 2 and sum(tree.histogram) == 5
    assert compare_arrays("x", np.ones(3), np.ones(4), atol=0, rtol=0).histogram is None
    assert compare_trees([np.ones(3)], np.ones(3), atol=0, rtol=0).histogram is None
