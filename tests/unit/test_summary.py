"""The terminal summary (issue 23, item 4): drift failures, baseline figures, port notes, and a width of 120 columns
whatever the test ids and names; the reports keep everything in full."""

from __future__ import annotations

import json

import numpy as np

from pytest_parity.reports import baseline
from pytest_parity.reports import records as report
from pytest_parity.reports.html import render
from pytest_parity.result import Comparison, ParityResult, SpeedResult, WeightAccount
from pytest_parity.verdict.compare import compare_trees

LONG_ID = ("tests/integration/very/deep/package/test_a_model_family_with_a_long_name.py::"
           "test_every_variant_of_the_model_against_its_port[" + "-".join(["variant"] * 12) + "-cuda]")
LONG_GRADIENT = "encoder/transformer_layer_11/self_attention/query_key_value_projection/kernel"


def _result(**kwargs):
    kwargs.setdefault("route", "tensorflow -> onnx -> torch")
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("outputs", compare_trees({"y": np.ones(3)}, {"y": np.ones(3)}, atol=1e-5, rtol=1e-4))
    return ParityResult(**kwargs)


def _gradient(name, max_abs=1e-6, passed=True):
    return Comparison(name=name, passed=passed, max_abs=max_abs, max_rel=0.0, mismatched=0 if passed else 1, total=8,
                      atol=1e-4, rtol=1e-3)


def _worst_case_records():
    """A long test id, a long gradient name, an inconclusive speed, a partial pass, a refusal, a port note."""
    speed = SpeedResult(ratio=2.31, source_s=0.01, target_s=0.0231, rounds=41, ratio_min=2.0, ratio_max=2.7,
                        allowed=2.5, passed=True, clock="synchronised wall", ratio_low=2.05, ratio_high=2.6,
                        verdict="inconclusive")
    account = WeightAccount(total=7, compared=5, allowed={"a": "x", "b": "y"}, within_rounding_of_zero=("a", "b"))
    note = ("dense -> fc: the input is a flattened feature map, (4, 4, 8) in the source's flatten order and (8, 4, 4) "
            "in the target's (read from the activations), so the weight's input axis was permuted to match")
    return [
        report.record(LONG_ID, _result(grads={LONG_GRADIENT: _gradient(LONG_GRADIENT)}, speed=speed,
                                       weight_account=account)),
        report.record("t.py::test_port[cpu]", _result(route="port: tensorflow -> torch", notes=[note],
                                                      grads={"w": _gradient("w", 0.5, passed=False)})),
        report.refused_record(LONG_ID.replace("cuda]", "cpu]"), "cpu", "port: tensorflow -> torch",
                              "port mode cannot carry the weights of " + "a very long layer name " * 12),
    ]


def test_no_summary_line_exceeds_120_columns_and_the_reports_keep_the_full_names(tmp_path):
    records = _worst_case_records()
    lines = report.summary_lines(records)
    assert max(len(line) for line in lines) <= 120, "\n".join(line for line in lines if len(line) > 120)
    text = "\n".join(lines)
    # The long test id is cut in its middle (its file's start and its parameters' end stay); the gradient name keeps
    # its end; the figures, the result and the note are all there.
    assert LONG_ID not in text and "tests/integration/very/deep/" in text and "variant-variant-cuda]" in text
    assert "(...on/kernel)" in text  # the end of the gradient name
    assert "PASS (partial; speed inconclusive)" in text and "5 of 7 (2 near 0)" in text and "REFUSED" in text
    assert "the weight's input axis was permuted to match" in " ".join(text.split())
    # The reports keep every name in full.
    path = tmp_path / "report.json"
    report.write_json(str(path), records)
    stored = json.loads(path.read_text())["results"]
    assert stored[0]["nodeid"] == LONG_ID and LONG_GRADIENT in stored[0]["grads"]
    page = render(report.document(records))
    assert LONG_ID in page and LONG_GRADIENT in page


def test_rows_that_fit_stay_one_line_per_check():
    records = [report.record("t.py::test_a[cpu]", _result()), report.record("t.py::test_b[cpu]", _result())]
    lines = report.summary_lines(records)
    assert lines[1].startswith("t.py::test_a[cpu]") and lines[1].endswith("PASS")
    assert lines[0].split() == ["test", "device", "route", "outputs", "max", "abs", "grads", "max", "abs", "weights",
                                "compared", "speed", "result"]


def test_rows_too_wide_put_the_test_id_above_its_figures():
    lines = report.summary_lines(_worst_case_records())
    assert lines[0].startswith("test  result  (figures under each")
    assert lines[1].split() == ["device", "route", "outputs", "grads", "weights", "speed"]
    # The test id, shortened in its middle, and its result (the weights it names are in the figures below).
    assert lines[2].startswith("tests/integration/") and "..." in lines[2]
    assert lines[2].endswith("-cuda]  PASS (partial; speed inconclusive)")
    figures = lines[3]
    assert figures.startswith("  cpu     tf -> onnx -> torch")
    assert figures.endswith("2.31x [2.05-2.60] <= 2.50 wall-sync")
    assert lines[4] == "t.py::test_port[cpu]  FAIL" and lines[6].endswith("-cpu]  REFUSED")
    # The columns stay aligned: each figure line's cells start where their heads do.
    start = lines[1].index("outputs")
    assert lines[3][start:].startswith("0.00e+00") and lines[5][start:].startswith("0.00e+00")


def test_a_drift_failure_reads_fail_drift_in_the_summary_and_drift_in_the_reports():
    entry = report.record("t.py::test_x[cpu]", _result())
    entry.update(passed=False, drift=["worst output difference grew from 1e-07 to 5e-05 (more than 10x the baseline)"])
    failed = report.record("t.py::test_y[cpu]", _result(grads={"w": _gradient("w", 0.5, passed=False)}))
    assert report.result_cell(entry) == "FAIL (drift)" and report.result_cell(failed) == "FAIL"
    lines = report.summary_lines([entry, failed])
    assert "t.py::test_x[cpu]  FAIL (drift)" in lines and "t.py::test_y[cpu]  FAIL" in lines
    assert [report.outcome(e) for e in (entry, failed)] == ["drift", "fail"]
    results = report.document([entry, failed])["results"]
    assert [r["outcome"] for r in results] == ["drift", "fail"]
    assert results[0]["drift"] == entry["drift"] and results[0]["passed"] is False  # the keys that were there stay
    assert report.outcome(report.refused_record("t", "cpu", "-", "why")) == "refused"
    assert "FAIL (drift)" in render(report.document([entry]))


def test_port_notes_appear_under_the_summary_and_other_routes_notes_do_not():
    port = report.record("t.py::test_port[cpu]", _result(route="port: torch -> tensorflow",
                                                         notes=["embeddings paired by table shape, not call order"]))
    convert = report.record("t.py::test_convert[cpu]", _result(notes=["input given as float64 ran as float32"]))
    lines = report.summary_lines([port, convert])
    start = lines.index("port notes (what the weight transfer changed so the two models could be compared):")
    assert lines[start + 1:] == ["  t.py::test_port[cpu]:", "    embeddings paired by table shape, not call order"]
    assert not any("float64" in line for line in lines)
    assert not any(line.startswith("port notes") for line in report.summary_lines([convert]))


def _baseline_entry(nodeid):
    return {"nodeid": nodeid, "device": "cpu", "route": "r", "passed": True,
            "outputs": {"max_abs": 1e-7, "max_rel": 0.0, "mismatched": 0, "total": 1},
            "grads": {"w": {"max_abs": 1e-6, "passed": True}}, "speed": None}


def test_baseline_lines_say_what_was_written_and_what_was_compared(tmp_path):
    path = str(tmp_path / "baseline.json")
    assert baseline.update(path, [_baseline_entry("a"), _baseline_entry("b")]) == (2, 0)
    assert baseline.written_line(path, 2, 0, 0) == f"parity baseline: wrote 2 entries to {path}"
    assert baseline.update(path, [_baseline_entry("b")]) == (1, 1)
    assert baseline.written_line(path, 1, 1, 1) == (
        f"parity baseline: wrote 2 entries to {path} (1 from this session, 1 kept from tests that did not run); "
        f"1 refused check(s) have no figures and were left out")
    stored = baseline.load(path)
    drifted = {**_baseline_entry("a"), "passed": False, "drift": ["speed ratio worsened"]}
    failed = {**_baseline_entry("b"), "passed": False, "drift": []}
    new = _baseline_entry("c")
    assert baseline.compared_line(stored, [drifted, _baseline_entry("b")]) == (
        f"parity baseline: compared 2 entries from {path}, 1 drifted")
    assert baseline.compared_line(stored, [drifted, failed, new]) == (
        f"parity baseline: compared 1 entry from {path}, 1 drifted; 1 not compared (failed their tolerances first); "
        f"1 check(s) without an entry (--parity-baseline-update adds them)")
    # A refused check is neither compared nor missing an entry.
    assert baseline.compared_line(stored, [report.refused_record("a", "cpu", "-", "why")]) == (
        f"parity baseline: compared 0 entries from {path}, 0 drifted")
