"""Unit tests for the plain-data results (pytest_parity.result) and the reports built from them (report.py)."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from pytest_parity.reports import records as report
from pytest_parity.result import Comparison, ParityResult, SpeedResult, TreeComparison
from pytest_parity.verdict.compare import compare_arrays, compare_trees

NAN = float("nan")
INF = float("inf")


def _comparison(name="t", passed=True, max_abs=0.0, max_rel=0.0, mismatched=0, total=4, problem=None):
    return Comparison(name=name, passed=passed, max_abs=max_abs, max_rel=max_rel, mismatched=mismatched, total=total,
                      atol=1e-5, rtol=1e-4, problem=problem)


def _outputs(passed=True):
    e = np.array([1.0, 2.0, 3.0])
    a = e.copy() if passed else e + 1.0
    return compare_trees({"logits": a}, {"logits": e}, atol=1e-5, rtol=1e-4)


def _speed(passed=True, ratio=1.25):
    return SpeedResult(ratio=ratio, source_s=0.01, target_s=0.0125, rounds=7, ratio_min=1.1, ratio_max=1.4,
                       allowed=2.0 if passed else 1.0, passed=passed)


def _result(**kwargs):
    kwargs.setdefault("route", "tensorflow -> onnx -> torch")
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("outputs", _outputs())
    return ParityResult(**kwargs)


# --------------------------------------------------------------------------------------------------------------------
# ParityResult.passed
# --------------------------------------------------------------------------------------------------------------------


def test_passes_when_everything_passes():
    result = _result(grads={"w": _comparison("w")}, weights={"w": _comparison("w")}, speed=_speed())
    assert result.passed


def test_passes_without_grads_weights_or_speed():
    assert _result().passed
    assert _result(grads={}).passed


def test_fails_on_outputs():
    assert not _result(outputs=_outputs(passed=False)).passed


def test_fails_on_a_gradient():
    grads = {"w": _comparison("w"), "b": _comparison("b", passed=False, max_abs=1.0, mismatched=1)}
    assert not _result(grads=grads).passed


def test_fails_on_a_transferred_weight():
    assert not _result(weights={"w": _comparison("w", passed=False, mismatched=1)}).passed


def test_fails_on_speed():
    assert not _result(speed=_speed(passed=False)).passed
    assert _result(speed=_speed(passed=True)).passed


def test_unmatched_weights_alone_do_not_fail():
    assert _result(unmatched_weights={"bn/gamma:0": "folded"}).passed


def test_worst_grad_prefers_failing_then_largest():
    grads = {
        "big_but_passing": _comparison("big_but_passing", max_abs=10.0),
        "small_failing": _comparison("small_failing", passed=False, max_abs=0.1, mismatched=1),
        "larger_failing": _comparison("larger_failing", passed=False, max_abs=0.5, mismatched=1),
    }
    assert _result(grads=grads).worst_grad.name == "larger_failing"
    passing = {"a": _comparison("a", max_abs=1e-6), "b": _comparison("b", max_abs=1e-5)}
    assert _result(grads=passing).worst_grad.name == "b"
    assert _result().worst_grad is None
    assert _result(grads={}).worst_grad is None


# --------------------------------------------------------------------------------------------------------------------
# to_dict and JSON safety
# --------------------------------------------------------------------------------------------------------------------


def test_to_dict_keys_and_values():
    result = _result(device="cuda", grads={"w": _comparison("w")}, speed=_speed(),
                     weight_names={"w": "fc.weight"}, unmatched_weights={"g": "folded"}, conversion_s=1.5, run_s=0.5)
    data = result.to_dict()
    for key in ("device", "route", "passed", "outputs", "grads", "speed"):
        assert key in data
    assert data["device"] == "cuda"
    assert data["route"] == "tensorflow -> onnx -> torch"
    assert data["passed"] is True
    assert {"max_abs", "max_rel", "mismatched", "total", "atol", "rtol", "passed"} <= set(data["outputs"])
    assert data["outputs"]["total"] == 3
    assert data["outputs"]["atol"] == 1e-5
    assert data["outputs"]["rtol"] == 1e-4
    assert data["outputs"]["passed"] is True
    assert set(data["outputs"]["leaves"]) == {"output['logits']"}
    assert data["grads"]["w"] == {"max_abs": 0.0, "max_rel": 0.0, "mismatched": 0, "total": 4, "atol": 1e-5,
                                  "rtol": 1e-4, "passed": True}
    assert data["speed"]["ratio"] == 1.25
    assert data["speed"]["rounds"] == 7
    assert data["speed"]["passed"] is True
    assert data["weight_names"] == {"w": "fc.weight"}
    assert data["unmatched_weights"] == {"g": "folded"}
    assert data["conversion_s"] == 1.5
    assert data["run_s"] == 0.5
    assert data["diagnosis"] is None


def test_to_dict_without_grads_or_speed_gives_none():
    data = _result().to_dict()
    assert data["grads"] is None
    assert data["speed"] is None


def test_to_dict_passed_reflects_failure():
    data = _result(outputs=_outputs(passed=False)).to_dict()
    assert data["passed"] is False
    assert data["outputs"]["passed"] is False
    assert data["outputs"]["mismatched"] == 3


def test_comparison_to_dict_includes_problem_only_when_set():
    assert "problem" not in _comparison().to_dict()
    assert _comparison(problem="shape mismatch: x").to_dict()["problem"] == "shape mismatch: x"


def test_non_finite_figures_are_serialised_as_strings():
    data = _comparison(passed=False, max_abs=INF, max_rel=NAN).to_dict()
    assert data["max_abs"] == "inf"
    assert data["max_rel"] == "nan"
    assert _comparison(max_abs=-INF).to_dict()["max_abs"] == "-inf"


def test_result_with_nan_and_inf_dumps_as_strict_json():
    structure = compare_trees({"a": np.ones(2)}, {"a": np.ones(2), "b": np.ones(3)}, atol=1e-5, rtol=1e-4)
    complex_leaf = compare_arrays("c", np.array([1j]), np.array([1j]), atol=0.0, rtol=0.0)  # NaN figures
    outputs = TreeComparison(leaves={**structure.leaves, "c": complex_leaf}, atol=1e-5, rtol=1e-4)
    result = _result(outputs=outputs, grads={"w": _comparison("w", passed=False, max_abs=INF, max_rel=NAN)},
                     weights={"w": _comparison("w", passed=False, max_abs=NAN, max_rel=-INF)}, speed=_speed())
    text = json.dumps(result.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["outputs"]["max_abs"] == "nan"  # NaN counts as the worst figure, whatever the leaf order
    assert data["outputs"]["leaves"]["c"]["max_abs"] == "nan"
    assert data["grads"]["w"]["max_abs"] == "inf"
    assert data["grads"]["w"]["max_rel"] == "nan"
    assert data["weights"]["w"]["max_rel"] == "-inf"


def test_to_dict_does_not_share_mutable_state():
    names = {"w": "fc.weight"}
    result = _result(weight_names=names)
    data = result.to_dict()
    data["weight_names"]["w"] = "changed"
    assert result.weight_names["w"] == "fc.weight"


# --------------------------------------------------------------------------------------------------------------------
# report: record, environment, write_json
# --------------------------------------------------------------------------------------------------------------------


def test_record_adds_the_node_id():
    entry = report.record("tests/test_x.py::test_y[cpu]", _result())
    assert entry["nodeid"] == "tests/test_x.py::test_y[cpu]"
    assert entry["device"] == "cpu"
    assert entry["passed"] is True


def test_environment_lists_packages_with_versions():
    env = report.environment()
    assert isinstance(env, dict)
    assert env["numpy"] == np.__version__
    assert env["pytest"] == pytest.__version__
    assert env["python"].count(".") == 2
    for name in report.ENVIRONMENT_PACKAGES:
        assert name in env
        assert env[name] is None or isinstance(env[name], str)


def test_write_json_document(tmp_path):
    records = [report.record("t::a", _result()), report.record("t::b", _result(outputs=_outputs(passed=False)))]
    path = tmp_path / "nested" / "dir" / "parity-report.json"
    report.write_json(str(path), records)
    document = json.loads(path.read_text(encoding="utf-8"))
    assert set(document) == {"version", "created", "environment", "results"}
    assert document["version"] == report.REPORT_VERSION == 1
    created = datetime.datetime.fromisoformat(document["created"])
    assert created.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - created).total_seconds()) < 600
    assert isinstance(document["environment"], dict)
    assert document["environment"]["numpy"] == np.__version__
    # Each result as recorded, with its outcome added beside the other keys.
    assert document["results"] == [{**records[0], "outcome": "pass"}, {**records[1], "outcome": "fail"}]
    assert "outcome" not in records[0]  # the records themselves are left as they are
    # No temporary file is left behind.
    assert [p.name for p in path.parent.iterdir()] == ["parity-report.json"]


def test_write_json_with_non_finite_figures_is_strict_json(tmp_path):
    outputs = compare_trees([np.ones(2)], [np.ones(2), np.ones(1)], atol=1e-5, rtol=1e-4)
    path = tmp_path / "report.json"
    report.write_json(str(path), [report.record("t::inf", _result(outputs=outputs))])

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    assert document["results"][0]["outputs"]["max_abs"] == "inf"


def test_write_json_overwrites_an_existing_report(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old", encoding="utf-8")
    report.write_json(str(path), [])
    assert json.loads(path.read_text(encoding="utf-8"))["results"] == []


# --------------------------------------------------------------------------------------------------------------------
# summary_lines
# --------------------------------------------------------------------------------------------------------------------


def _records():
    failing_grads = {
        "dense/kernel:0": _comparison("dense/kernel:0", passed=False, max_abs=0.25, mismatched=1),
        "dense/bias:0": _comparison("dense/bias:0", max_abs=5e-6),
    }
    return [
        report.record("tests/test_a.py::test_one[cpu]", _result(grads={"w": _comparison("w", max_abs=1e-6)},
                                                                speed=_speed(ratio=1.25))),
        report.record("tests/test_a.py::test_two[cuda]", _result(device="cuda", outputs=_outputs(passed=False),
                                                                 grads=failing_grads)),
        report.record("tests/test_a.py::test_three[cpu]", _result()),
    ]


def test_summary_lines_header_rows_and_total():
    records = _records()
    lines = report.summary_lines(records, width=1000)  # wide enough for one line per check
    assert len(lines) == 1 + len(records) + 1
    header = lines[0].split()
    assert header[0] == "test"
    for column in ("device", "route", "outputs", "grads", "speed", "result"):
        assert column in lines[0]
    assert lines[1].startswith("tests/test_a.py::test_one[cpu]")
    assert lines[2].startswith("tests/test_a.py::test_two[cuda]")
    assert lines[3].startswith("tests/test_a.py::test_three[cpu]")
    assert lines[-1] == "2 of 3 parity check(s) passed"


def test_summary_lines_cells():
    lines = report.summary_lines(_records(), width=1000)
    assert lines[1].endswith("PASS")
    assert lines[2].endswith("FAIL")
    assert lines[3].endswith("PASS")
    assert "1.25x" in lines[1]
    assert "cuda" in lines[2]
    assert "tensorflow -> onnx -> torch" in lines[1]
    # outputs max abs: 0 for a passing row, 1 for the failing one
    assert "0.00e+00" in lines[1]
    assert "1.00e+00" in lines[2]
    # The worst gradient is the failing one, named.
    assert "2.50e-01 (dense/kernel:0)" in lines[2]
    assert "1.00e-06 (w)" in lines[1]


def test_summary_lines_columns_are_aligned():
    lines = report.summary_lines(_records(), width=1000)
    table = lines[:-1]
    start = table[0].index("device")
    for line in table[1:]:
        assert line[start - 2:start] == "  "
        assert line[start] != " "
    assert table[2][start:].startswith("cuda")


def test_summary_lines_dashes_for_missing_grads_and_speed():
    lines = report.summary_lines([report.record("t::x", _result())])
    cells = lines[1].split("  ")
    assert [c.strip() for c in cells if c.strip()][-3:] == ["-", "-", "PASS"]
    assert lines[-1] == "1 of 1 parity check(s) passed"


def test_summary_lines_show_non_finite_figures_as_stored():
    outputs = compare_trees({"a": np.ones(2)}, {"a": np.ones(2), "b": np.ones(1)}, atol=1e-5, rtol=1e-4)
    grads = {"w": _comparison("w", passed=False, max_abs=INF, mismatched=4, problem="no gradient reaches"),
             "v": _comparison("v", passed=False, max_abs=3.0, mismatched=1)}
    lines = report.summary_lines([report.record("t::x", _result(outputs=outputs, grads=grads))])
    assert "inf" in lines[1]
    assert "inf (w)" in lines[1]  # infinity is the worst, even stored as a string
    assert lines[1].endswith("FAIL")
    assert lines[-1] == "0 of 1 parity check(s) passed"


def test_summary_lines_empty():
    lines = report.summary_lines([])
    assert len(lines) == 2
    assert lines[0].startswith("test")
    assert lines[1] == "0 of 0 parity check(s) passed"


def test_summary_lines_accept_records_read_back_from_json(tmp_path):
    path = tmp_path / "r.json"
    records = _records()
    report.write_json(str(path), records)
    read_back = json.loads(path.read_text(encoding="utf-8"))["results"]
    assert report.summary_lines(read_back) == report.summary_lines(records)


def test_html_report_of_an_edge_case_record_renders_without_figures_it_does_not_have(tmp_path):
    from html.parser import HTMLParser

    from pytest_parity.reports.html import write_html

    shape_problem = compare_trees(np.ones(3), np.ones(4), atol=1e-5, rtol=1e-4)  # no elementwise histogram
    nan_outputs = compare_trees(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), atol=1e-5, rtol=1e-4)
    records = [report.record("t.py::shape[cpu]", _result(outputs=shape_problem)),
               report.record("t.py::nan & <odd>[cpu]", _result(outputs=nan_outputs, speed=_speed(passed=False),
                                                              drift=["outputs max abs grew"]))]
    path = tmp_path / "deep" / "report.html"
    write_html(str(path), json.loads(json.dumps(records)))  # as read back from a worker or a file
    page = path.read_text()
    HTMLParser().feed(page)
    assert "0 of 2 parity check(s) passed" in page
    assert "no elementwise histogram" in page and "shape mismatch" in page
    assert "nan &amp; &lt;odd&gt;" in page and "outputs max abs grew" in page
    assert page.count("<svg") == 1 and ">NaN/Inf: 1</title>" in page
    assert not list(tmp_path.joinpath("deep").glob(".*partial"))


@pytest.mark.parametrize(("atol", "position"), [(0.0, 1.0), (1e-5, 9.0), (1e-13, 1.0), (10.0, 14.0)])
def test_the_atol_line_sits_where_bins_stop_being_wholly_below_it(atol, position):
    from pytest_parity.reports.html import _position_of

    assert _position_of(atol, 16) == pytest.approx(position)


def test_weights_cell_says_how_many_compared_gradients_are_within_rounding_of_zero():
    account = {"total": 4, "compared": 4, "within_rounding_of_zero": ["a", "b"], "gradients_checked": True}
    assert report.weights_cell({"weight_account": account}) == "weights 4 of 4 (2 within rounding of zero)"
    assert report.weights_cell({"weight_account": {**account, "within_rounding_of_zero": []}}) == "weights 4 of 4"
    assert report.weights_cell({"weight_account": None}) == "-"


def test_near_ties_show_in_the_summary_json_and_baseline_figure():
    from dataclasses import replace

    from pytest_parity.reports import baseline

    differing = compare_arrays("w", np.r_[np.zeros(99), 1.0], np.r_[np.zeros(99), 0.0] + 1e-9, atol=1e-4, rtol=1e-3)
    confirmed = replace(differing, passed=True, near_ties=differing.mismatched)
    entry = report.record("t::x", _result(grads={"w": confirmed}))
    assert entry["passed"] and entry["grads"]["w"]["near_ties"] == 1
    assert entry["grads"]["w"]["max_abs_without_near_ties"] < 1e-8
    assert "1.00e+00 (w) incl. 1 near-tie(s)" in "\n".join(report.summary_lines([entry]))
    assert report.key_figures(entry)["grads_near_ties"] == 1  # a JUnit property
    assert "grads_near_ties" not in report.key_figures(report.record("t::y", _result()))
    from pytest_parity.reports.html import render

    page = render({"version": 1, "created": "now", "environment": {}, "results": [entry]})
    assert "1 element(s) of 1 agreed on moved inputs only: near-ties, see the notes" in page
    # The near-tie's chance size is no drift against a baseline that had none.
    assert baseline.drift(entry, {**entry, "grads": {"w": {"max_abs": 1e-8, "passed": True}}}) == []
