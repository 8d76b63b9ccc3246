"""The comparison engine: numpy only, no framework, unit-tested on its own.

The source is the reference: an element passes when ``|target - source| <= atol + rtol * |source|``.
Integer and boolean tensors must match exactly. NaN and Inf are handled explicitly: the same infinity on both sides
matches, NaN matches NaN only when ``equal_nan`` is set, and a NaN or Inf on one side only is a mismatch that the
message spells out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pytest_parity.result import ERROR_HISTOGRAM_DECADES, MAX_RECORDED_MISMATCHES, Comparison, TreeComparison
from pytest_parity.trees import flatten_tree

# Upper edges of the decade bins of |target - source|: 1e-12, 1e-11, ..., 1 (see result.error_histogram_labels).
_DECADE_EDGES = 10.0 ** np.arange(ERROR_HISTOGRAM_DECADES[0], ERROR_HISTOGRAM_DECADES[1] + 1)


def compare_trees(actual: Any, expected: Any, *, atol: float, rtol: float, path: str = "output",
                  equal_nan: bool = False) -> TreeComparison:
    """Compare every leaf of ``actual`` (target) with ``expected`` (source); structure differences are failures."""
    leaves: dict[str, Comparison] = {}
    _compare_node(actual, expected, path, atol, rtol, equal_nan, leaves)
    return TreeComparison(leaves=leaves, atol=atol, rtol=rtol)


def _compare_node(actual: Any, expected: Any, path: str, atol: float, rtol: float, equal_nan: bool,
                  leaves: dict[str, Comparison]) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            leaves[path] = _structure_problem(path, expected, f"source gives a dict, target gives {_kind(actual)}")
            return
        for key, value in expected.items():
            child = f"{path}[{key!r}]"
            if key not in actual:
                leaves[child] = _structure_problem(child, value, f"key {key!r} is missing from the target's output")
            else:
                _compare_node(actual[key], value, child, atol, rtol, equal_nan, leaves)
        for key in actual:
            if key not in expected:
                leaves[f"{path}[{key!r}]"] = _structure_problem(
                    f"{path}[{key!r}]", actual[key], f"key {key!r} is in the target's output but not the source's")
        return
    if isinstance(expected, Sequence) and not isinstance(expected, (str, bytes)):
        if not isinstance(actual, Sequence) or isinstance(actual, (str, bytes)):
            leaves[path] = _structure_problem(
                path, expected, f"source gives a sequence of {len(expected)}, target gives {_kind(actual)}")
            return
        if len(actual) != len(expected):
            leaves[path] = _structure_problem(
                path, expected, f"source gives {len(expected)} outputs, target gives {len(actual)}")
            return
        for index, (a, e) in enumerate(zip(actual, expected)):
            _compare_node(a, e, f"{path}[{index}]", atol, rtol, equal_nan, leaves)
        return
    if isinstance(actual, Mapping) or (isinstance(actual, Sequence) and not isinstance(actual, (str, bytes))):
        leaves[path] = _structure_problem(path, expected, f"source gives an array, target gives {_kind(actual)}")
        return
    leaves[path] = compare_arrays(path, actual, expected, atol=atol, rtol=rtol, equal_nan=equal_nan)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a dict"
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return f"a sequence of {len(value)}"
    return f"an array of shape {tuple(np.shape(value))}"


def _structure_problem(name: str, expected: Any, problem: str) -> Comparison:
    total = sum(int(np.size(leaf)) for _, leaf in flatten_tree(expected, name))
    return Comparison(name=name, passed=False, max_abs=float("inf"), max_rel=float("inf"), mismatched=total,
                      total=total, atol=0.0, rtol=0.0, problem=f"structure mismatch: {problem}")


def compare_arrays(name: str, actual: Any, expected: Any, *, atol: float, rtol: float,
                   equal_nan: bool = False) -> Comparison:
    """Compare one target tensor with its source tensor; never raises for numeric input."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    total = int(expected.size)
    if actual.shape != expected.shape:
        return Comparison(name=name, passed=False, max_abs=float("inf"), max_rel=float("inf"), mismatched=total,
                          total=total, atol=atol, rtol=rtol,
                          problem=f"shape mismatch: source {expected.shape}, target {actual.shape}")
    dtype_problem = None
    if actual.dtype != expected.dtype:
        dtype_problem = f"dtype mismatch: source {expected.dtype}, target {actual.dtype}"
    exact = not (np.issubdtype(expected.dtype, np.inexact) or np.issubdtype(actual.dtype, np.inexact))
    if exact:
        # Class ids, token ids, masks: "close" means nothing for them.
        atol, rtol = 0.0, 0.0
    if np.iscomplexobj(actual) or np.iscomplexobj(expected):
        return Comparison(name=name, passed=False, max_abs=float("nan"), max_rel=float("nan"), mismatched=total,
                          total=total, atol=atol, rtol=rtol, problem="complex tensors are not supported")
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)

    finite = np.isfinite(a) & np.isfinite(e)
    all_finite = bool(finite.all())
    if all_finite:
        # The common case, kept lean: this runs for every output, gradient and weight of every check.
        abs_diff = np.abs(a - e)
        abs_e = np.abs(e)
    else:
        # Differences only between finite pairs: inf - inf would warn (an error under filterwarnings=error).
        abs_diff = np.abs(np.where(finite, a, 0.0) - np.where(finite, e, 0.0))
        abs_e = np.abs(np.where(finite, e, 0.0))
    if exact:
        # Compared as integers: float64 cannot tell int64 values above 2**53 apart.
        ok = np.asarray(actual == expected)
    elif all_finite:
        ok = abs_diff <= atol + rtol * abs_e
    else:
        both_nan = np.isnan(a) & np.isnan(e)
        same_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
        ok = (finite & (abs_diff <= atol + rtol * abs_e)) | same_inf | (both_nan & equal_nan)
    mismatched = int(total - np.count_nonzero(ok))

    # Relative differences only where the source is non-zero: after a ReLU most reference values are exactly 0 and a
    # 1e-9 deviation there would make every relative figure infinite; those elements are judged by atol.
    nonzero = abs_e != 0
    rel_diff = abs_diff / np.where(nonzero, abs_e, 1.0)
    max_abs, max_abs_index = _worst(abs_diff, None if all_finite else finite)
    max_rel, max_rel_index = _worst(rel_diff, nonzero)

    histogram = _error_histogram(abs_diff, None if all_finite else finite)

    problems = [dtype_problem] if dtype_problem else []
    non_finite = None if all_finite else _non_finite_problem(a, e, equal_nan)
    if non_finite:
        problems.append(non_finite)
    return Comparison(name=name, passed=mismatched == 0 and dtype_problem is None, max_abs=max_abs, max_rel=max_rel,
                      mismatched=mismatched, total=total, atol=atol, rtol=rtol, max_abs_index=max_abs_index,
                      max_rel_index=max_rel_index, problem="; ".join(problems) or None, histogram=histogram,
                      source_max_abs=float(abs_e.max()) if abs_e.size else 0.0,
                      mismatched_at=np.flatnonzero(~ok) if 0 < mismatched <= MAX_RECORDED_MISMATCHES else None,
                      agreeing_max_abs=_worst(abs_diff, ok & finite)[0] if mismatched else max_abs)


def _error_histogram(abs_diff: np.ndarray, finite: np.ndarray | None) -> tuple[int, ...]:
    """Counts of |target - source| per bin: exactly 0, below 1e-12, one per decade up to 1, 1 and above, and pairs
    with NaN/Inf on either side (no difference to bin). Bin order is result.error_histogram_labels()."""
    values = abs_diff.reshape(-1) if finite is None else abs_diff[finite]
    zeros = int(values.size - np.count_nonzero(values))
    # searchsorted(side="right"): 0 below 1e-12, k for [edge k-1, edge k), len(edges) for >= 1.
    decades = np.bincount(np.searchsorted(_DECADE_EDGES, values[values != 0], side="right"),
                          minlength=len(_DECADE_EDGES) + 1)
    non_finite = 0 if finite is None else int(finite.size - np.count_nonzero(finite))
    return (zeros, *(int(count) for count in decades), non_finite)


def _worst(values: np.ndarray, valid: np.ndarray | None) -> tuple[float, tuple[int, ...] | None]:
    """Largest value and its index over the ``valid`` elements (all when None); values are >= 0."""
    if values.size == 0 or (valid is not None and not valid.any()):
        return 0.0, None
    flat_index = int(np.argmax(values if valid is None else np.where(valid, values, -1.0)))
    index = tuple(int(i) for i in np.unravel_index(flat_index, values.shape))
    return float(values.reshape(-1)[flat_index]), index


def _non_finite_problem(actual: np.ndarray, expected: np.ndarray, equal_nan: bool) -> str | None:
    parts = []
    for label, here, there in (("target", actual, expected), ("source", expected, actual)):
        nan_only_here = np.isnan(here) & ~np.isnan(there)
        if nan_only_here.any():
            parts.append(f"NaN in the {label} only at {int(nan_only_here.sum())} element(s), first at index "
                         f"{_first_index(nan_only_here)}")
        inf_here = np.isinf(here) & ~(np.isinf(there) & (np.sign(here) == np.sign(there))) & ~np.isnan(there)
        if inf_here.any():
            parts.append(f"Inf in the {label} only at {int(inf_here.sum())} element(s), first at index "
                         f"{_first_index(inf_here)}")
    both_nan = np.isnan(actual) & np.isnan(expected)
    if both_nan.any() and not equal_nan:
        parts.append(f"NaN on both sides at {int(both_nan.sum())} element(s), first at index "
                     f"{_first_index(both_nan)} (NaN never equals NaN unless equal_nan is set)")
    return "; ".join(parts) or None


def _first_index(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0]) if mask.ndim else ()


def describe(kind: str, comparison: Comparison) -> str:
    """The failure paragraph for one tensor, in the wording of torch.testing so it reads familiar."""
    lines = [f"{kind} {comparison.name!r}:"]
    if comparison.problem:
        lines.append(f"    {comparison.problem}")
    if comparison.problem and comparison.problem.startswith(("shape", "structure", "no gradient")):
        return "\n".join(lines)
    percent = 100.0 * comparison.mismatched / comparison.total if comparison.total else 0.0
    lines.append(f"    Mismatched elements: {comparison.mismatched} / {comparison.total} ({percent:.1f}%)")
    lines.append(f"    Greatest absolute difference: {comparison.max_abs:.6g} at index "
                 f"{_index_text(comparison.max_abs_index)} (up to {comparison.atol:g} allowed)")
    lines.append(f"    Greatest relative difference: {comparison.max_rel:.6g} at index "
                 f"{_index_text(comparison.max_rel_index)} (up to {comparison.rtol:g} allowed)")
    return "\n".join(lines)


def _index_text(index: tuple[int, ...] | None) -> str:
    if index is None:
        return "-"
    return "(" + ", ".join(str(i) for i in index) + ("," if len(index) == 1 else "") + ")"
