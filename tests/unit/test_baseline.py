"""Baselines without frameworks: loading (and refusing) stored reports, and what counts as drift."""

from __future__ import annotations

import json

import pytest

from pytest_parity.reports import baseline
from pytest_parity.reports import records as report


def _entry(nodeid="t.py::test[cpu]", outputs=1e-7, grad=1e-6, speed=None):
    return {"nodeid": nodeid, "device": "cpu", "route": "r", "passed": True,
            "outputs": {"max_abs": outputs, "max_rel": 0.0, "mismatched": 0, "total": 1},
            "grads": {"w": {"max_abs": grad, "passed": True}}, "speed": None if speed is None else {"ratio": speed}}


def test_drift_names_old_and_new_figures():
    assert baseline.drift(_entry(), _entry()) == []
    problems = baseline.drift(_entry(outputs=5e-5, grad=2e-4, speed=2.0), _entry(speed=1.5))
    assert problems[0] == "worst output difference grew from 1e-07 to 5e-05 (more than 10x the baseline)"
    assert problems[1] == "worst gradient difference grew from 1e-06 to 0.0002 (more than 10x the baseline)"
    assert problems[2] == "speed ratio worsened from 1.50x to 2.00x (more than 25% over the baseline)"


def test_an_exact_baseline_does_not_make_rounding_infinite_growth():
    assert baseline.drift(_entry(outputs=5e-7), _entry(outputs=0.0)) == []
    assert baseline.drift(_entry(outputs=2e-6), _entry(outputs=0.0))  # beyond 10 x the 1e-7 floor


def test_load_refuses_missing_corrupt_and_other_versions(tmp_path):
    with pytest.raises(baseline.BaselineError, match="does not exist; create it with --parity-baseline-update"):
        baseline.load(str(tmp_path / "none.json"))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"version": 1, "results": [')
    with pytest.raises(baseline.BaselineError, match=r"cannot be read \(JSONDecodeError"):
        baseline.load(str(corrupt))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"version": 99, "results": []}))
    with pytest.raises(baseline.BaselineError, match="has report version 99; this pytest-parity reads version 1"):
        baseline.load(str(other))
    not_report = tmp_path / "list.json"
    not_report.write_text("[]")
    with pytest.raises(baseline.BaselineError, match="is not a parity report"):
        baseline.load(str(not_report))


def test_update_keeps_entries_of_tests_that_did_not_run(tmp_path):
    path = str(tmp_path / "baseline.json")
    baseline.update(path, [_entry("a"), _entry("b")])
    baseline.update(path, [_entry("b", outputs=3e-7)])
    loaded = baseline.load(path)
    assert set(loaded.entries) == {("a", "cpu"), ("b", "cpu")}
    assert loaded.entries[("b", "cpu")]["outputs"]["max_abs"] == 3e-7
    assert loaded.environment["devices"] == ["cpu"] and loaded.environment["python"]
    assert json.loads((tmp_path / "baseline.json").read_text())["version"] == report.REPORT_VERSION


@pytest.mark.parametrize("damage, named", [
    (lambda e: e.pop("outputs"), "has no 'outputs' figures"),
    (lambda e: e["outputs"].update(max_abs=None), "has outputs.max_abs = None, not a number"),
    (lambda e: e["outputs"].update(max_abs="big"), "has outputs.max_abs = 'big', not a number"),
    (lambda e: e["grads"]["w"].pop("max_abs"), "has grads['w'] without a numeric max_abs"),
    (lambda e: e.update(grads=[1, 2]), "has 'grads' = [1, 2], not a mapping of gradient figures"),
    (lambda e: e.update(speed={"ratio": None}), "has a 'speed' entry without a numeric ratio"),
])
def test_an_entry_drift_cannot_use_is_refused_at_load_naming_the_entry(tmp_path, damage, named):
    entry = _entry("t.py::test_a[cpu]")
    damage(entry)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(report.document([entry])))
    with pytest.raises(baseline.BaselineError) as refused:
        baseline.load(str(path))
    assert f"the entry of t.py::test_a[cpu] [cpu] {named}" in str(refused.value)
    assert "Regenerate the baseline with --parity-baseline-update" in str(refused.value)


def test_stored_non_finite_figures_are_usable():
    entry = _entry(outputs="inf")
    assert baseline._entry_problem(entry) is None


def test_an_update_never_replaces_a_file_it_cannot_read(tmp_path):
    path = tmp_path / "baseline.json"
    conflicted = "<<<<<<< HEAD\n{\"version\": 1}\n=======\n{}\n>>>>>>> branch\n"
    path.write_text(conflicted)
    with pytest.raises(baseline.BaselineError) as refused:
        baseline.refuse_to_overwrite_unreadable(str(path))
    assert "refuses to replace it" in str(refused.value) and "left as it is" in str(refused.value)
    with pytest.raises(baseline.BaselineError):
        baseline.update(str(path), [_entry("a")])
    assert path.read_text() == conflicted
    baseline.refuse_to_overwrite_unreadable(str(tmp_path / "new.json"))  # a file that does not exist yet is created
