"""Combining a sharded run's reports (reports/combine.py, python -m pytest_parity combine) without frameworks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from pytest_parity.__main__ import main
from pytest_parity.reports import baseline, combine
from pytest_parity.reports import records as report
from pytest_parity.result import ParityResult, SpeedResult
from pytest_parity.verdict.compare import compare_trees

MACHINE = "Linux x86_64, Test CPU, 2 CPUs"


def _record(nodeid, passed=True, speed=None):
    expected = np.array([1.0, 2.0, 3.0])
    outputs = compare_trees({"y": expected if passed else expected + 1}, {"y": expected}, atol=1e-5, rtol=1e-4)
    timed = None if speed is None else SpeedResult(ratio=speed, source_s=0.01, target_s=0.01 * speed, rounds=7,
                                                   ratio_min=speed, ratio_max=speed, allowed=None, passed=True)
    record = report.record(nodeid, ParityResult(route="torch -> onnx -> torch", device="cpu", outputs=outputs,
                                                speed=timed, conversion_s=0.5, run_s=0.1))
    return record


def _shard_report(path, name, records, collected=None, ran=None, group=None, splits=None, machine=MACHINE,
                  version=report.REPORT_VERSION):
    collected = collected if collected is not None else [entry["nodeid"] for entry in records]
    ran = ran if ran is not None else {entry["nodeid"]: "passed" if entry["passed"] else "failed" for entry in records}
    block = combine.shard_block({"name": name, "group": group, "splits": splits, "collected": collected,
                                 "selected": list(ran), "ran": ran})
    document = report.document(records, shard=block, environment_block={"python": "3.11.9", "machine": machine})
    document["version"] = version
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


def _two_shards(tmp_path, second_outcome=True):
    everything = ["t.py::test_a[cpu]", "t.py::test_b[cpu]", "t.py::test_c[cpu]"]
    first = _shard_report(tmp_path / "parity-group-1-of-2.json", "group-1-of-2",
                          [_record("t.py::test_b[cpu]"), _record("t.py::test_a[cpu]")], collected=everything,
                          group=1, splits=2)
    second = _shard_report(tmp_path / "parity-group-2-of-2.json", "group-2-of-2",
                           [_record("t.py::test_c[cpu]", passed=second_outcome)], collected=everything, group=2,
                           splits=2)
    return first, second


def test_shard_names_and_report_file_names():
    assert combine.shard_name("tf220-1", 1, 4) == "tf220-1"  # --parity-shard wins
    assert combine.shard_name(None, 2, 4) == "group-2-of-4"
    assert combine.shard_name(None, None, None, host="runner", pid=42) == "runner-42"
    assert combine.shard_report_name("group-2-of-4") == "parity-group-2-of-4.json"
    assert combine.shard_report_name("linux/py 3.11") == "parity-linux_py_3.11.json"


def test_the_shards_results_are_unioned_by_test_id_in_the_single_run_format(tmp_path):
    _two_shards(tmp_path)
    combined = combine.combine(combine.load_reports(combine.report_paths([str(tmp_path)])))
    document = combined.document
    assert {"version", "created", "environment", "results"} <= set(document)
    assert [entry["nodeid"] for entry in document["results"]] == ["t.py::test_a[cpu]", "t.py::test_b[cpu]",
                                                                  "t.py::test_c[cpu]"]
    assert [entry["shard"] for entry in document["results"]] == ["group-1-of-2", "group-1-of-2", "group-2-of-2"]
    assert all(entry["outcome"] == "pass" for entry in document["results"])
    assert document["environment"]["machine"] == MACHINE and document["environment"]["devices"] == ["cpu"]
    assert "machine" not in document["results"][0]  # one kind of machine: the environment block says it
    assert combined.conflicts == [] and combined.not_run == [] and not combined.failed()
    assert [shard["name"] for shard in document["combined"]["shards"]] == ["group-1-of-2", "group-2-of-2"]


def test_a_failed_check_fails_the_combined_run(tmp_path):
    combined = combine.combine(combine.load_reports(list(_two_shards(tmp_path, second_outcome=False))))
    assert combined.failed() and combined.conflicts == []
    assert any("t.py::test_c[cpu]: FAIL" in line for line in combine.summary_lines(combined))


def test_conflicting_outcomes_are_flagged_and_the_worst_is_shown(tmp_path):
    first = _shard_report(tmp_path / "a.json", "a", [_record("t.py::test_a[cpu]")])
    second = _shard_report(tmp_path / "b.json", "b", [_record("t.py::test_a[cpu]", passed=False)])
    same = _shard_report(tmp_path / "c.json", "c", [_record("t.py::test_a[cpu]")])
    combined = combine.combine(combine.load_reports([first, second, same]))
    assert combined.conflicts == [{"nodeid": "t.py::test_a[cpu]", "outcomes": {"a": "pass", "b": "fail", "c": "pass"},
                                   "shown": "b"}]
    assert [entry["shard"] for entry in combined.results] == ["b"] and combined.failed()
    # The same outcome in two shards is no conflict: one result, from the first shard.
    combined = combine.combine(combine.load_reports([first, same]))
    assert combined.conflicts == [] and [entry["shard"] for entry in combined.results] == ["a"]


def test_tests_collected_but_run_by_no_shard_are_listed_with_the_missing_group(tmp_path):
    first, _ = _two_shards(tmp_path)
    combined = combine.combine(combine.load_reports([first]))
    assert combined.not_run == ["t.py::test_c[cpu]"] and combined.failed()
    assert "no report from group 2 of 2: its tests are listed as run by no shard" in combined.notes
    lines = combine.summary_lines(combined)
    assert "1 parity test(s) collected but run by no shard:" in lines and "  t.py::test_c[cpu]" in lines


def test_a_skipped_test_ran_and_is_not_missing(tmp_path):
    path = _shard_report(tmp_path / "s.json", "s", [_record("t.py::test_a[cpu]")],
                         collected=["t.py::test_a[cpu]", "t.py::test_b[cuda]"],
                         ran={"t.py::test_a[cpu]": "passed", "t.py::test_b[cuda]": "skipped"})
    combined = combine.combine(combine.load_reports([path]))
    assert combined.not_run == [] and not combined.failed() and combined.tests["t.py::test_b[cuda]"] == "skipped"


def test_shards_on_different_machines_keep_their_machine_per_result(tmp_path):
    first = _shard_report(tmp_path / "a.json", "a", [_record("t.py::test_a[cpu]", speed=1.1)], machine="m1")
    second = _shard_report(tmp_path / "b.json", "b", [_record("t.py::test_b[cpu]", speed=1.2)], machine="m2")
    combined = combine.combine(combine.load_reports([first, second]))
    assert [entry["machine"] for entry in combined.results] == ["m1", "m2"]
    assert combined.document["environment"]["machine"] == "m1 (a); m2 (b)"
    assert any("2 kinds of machine" in note for note in combined.notes)
    # A baseline written from it compares each speed ratio only on its own machine kind.
    path = tmp_path / "baseline.json"
    combine.update_baseline(str(path), combined)
    on_m1 = baseline.load(str(path), this_machine="m1")
    assert on_m1.entries[("t.py::test_a[cpu]", "cpu")]["speed"]["ratio"] == 1.1
    assert on_m1.entries[("t.py::test_b[cpu]", "cpu")]["speed"] is None and on_m1.speed_other_machine == 1
    assert "speed not compared for 1 entry taken on another kind of machine" in baseline.compared_line(on_m1, [])


def test_update_baseline_from_the_combined_result_keeps_other_and_conflicting_entries(tmp_path):
    path = tmp_path / "baseline.json"
    old = [_record("t.py::test_a[cpu]"), _record("t.py::test_old[cpu]")]
    report.write_json(str(path), old, environment_block={"machine": MACHINE})
    first = _shard_report(tmp_path / "a.json", "a", [_record("t.py::test_a[cpu]"), _record("t.py::test_n[cpu]")])
    second = _shard_report(tmp_path / "b.json", "b", [_record("t.py::test_a[cpu]", passed=False)])
    combined = combine.combine(combine.load_reports([first, second]))
    assert combine.update_baseline(str(path), combined) == (1, 2, 1)
    stored = json.loads(path.read_text())
    assert sorted(entry["nodeid"] for entry in stored["results"]) == ["t.py::test_a[cpu]", "t.py::test_n[cpu]",
                                                                      "t.py::test_old[cpu]"]
    assert all(entry["passed"] for entry in stored["results"])  # the conflicting test kept its old entry
    assert stored["environment"]["machine"] == MACHINE and "shard" not in stored["results"][0]


def test_a_shard_baseline_update_keeps_the_entries_of_tests_it_did_not_run(tmp_path):
    path = str(tmp_path / "baseline.json")
    baseline.update(path, [_record("t.py::test_a[cpu]"), _record("t.py::test_b[cpu]")])
    before = {entry["nodeid"]: entry for entry in json.loads(Path(path).read_text())["results"]}
    assert baseline.update(path, [_record("t.py::test_a[cpu]", speed=2.0)]) == (1, 1)
    after = {entry["nodeid"]: entry for entry in json.loads(Path(path).read_text())["results"]}
    assert after["t.py::test_b[cpu]"] == before["t.py::test_b[cpu]"] and after["t.py::test_a[cpu]"]["speed"]


def test_html_and_junit_of_the_combined_run(tmp_path):
    first, _ = _two_shards(tmp_path)
    combined = combine.combine(combine.load_reports([first]))
    combine.write_html(str(tmp_path / "c.html"), combined)
    page = (tmp_path / "c.html").read_text()
    assert "<title>Parity report: 2 of 2 passed</title>" in page and "<h2>Shards</h2>" in page
    assert "collected but run by no shard" in page and page.index("<h2>Shards</h2>") < page.index("<h2>Checks</h2>")
    combine.write_junit(str(tmp_path / "c.xml"), combined)
    suite = ElementTree.parse(tmp_path / "c.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("3", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_a[cpu]"].iter("property")}
    assert properties["parity_passed"] == "True" and properties["parity_shard"] == "group-1-of-2"
    assert cases["test_c[cpu]"].find("error").get("message") == "collected but run by no shard"


def test_a_plain_report_is_unchanged_and_combines_as_one_shard(tmp_path):
    path = tmp_path / "plain.json"
    report.write_json(str(path), [_record("t.py::test_a[cpu]")])
    assert set(json.loads(path.read_text())) == {"version", "created", "environment", "results"}
    combined = combine.combine(combine.load_reports([str(path)]))
    assert [entry["shard"] for entry in combined.results] == ["plain"] and not combined.failed()


@pytest.mark.parametrize("setup, arguments, message", [
    (None, [], "no reports named: give the shards' report files or the folder holding them"),
    (None, ["missing.json"], "missing.json does not exist. Name the shards' report files"),
    ("{not json", ["r.json"], "r.json is not valid JSON (Expecting property name"),
    ("[]", ["r.json"], "r.json is not a parity report (no 'version' and 'results' list)"),
    ('{"version": 1, "results": [{"nodeid": "x"}]}', ["r.json"], "result 0 lacks device, route, passed"),
    ("version", ["r.json", "v2.json"], "the reports have conflicting versions (version 1: "),
    ("twin", ["r.json", "twin.json"], "both come from shard 'same': a re-run of a shard"),
    ("{}", ["."], "holds no parity report"),
    ("ok", ["r.json", "--json", "r.json"], "r.json is both an input and an output"),
])
def test_bad_input_is_a_clear_error_with_exit_status_2(tmp_path, monkeypatch, capsys, setup, arguments, message):
    monkeypatch.chdir(tmp_path)
    if setup in ("version", "twin", "ok"):
        _shard_report(tmp_path / "r.json", "same", [_record("t.py::test_a[cpu]")])
        if setup == "version":
            _shard_report(tmp_path / "v2.json", "other", [_record("t.py::test_b[cpu]")], version=2)
        if setup == "twin":
            _shard_report(tmp_path / "twin.json", "same", [_record("t.py::test_b[cpu]")])
    elif setup == "{}":
        (tmp_path / "durations.json").write_text("{}")
    elif setup is not None:
        (tmp_path / "r.json").write_text(setup)
    assert main(["combine", *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("pytest-parity combine: error: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_the_command_writes_the_outputs_and_exits_by_the_result(tmp_path, capsys):
    first, _ = _two_shards(tmp_path)
    out = tmp_path / "out"
    assert main(["combine", str(tmp_path), "--json", str(out / "c.json"), "--html", str(out / "c.html"),
                 "--junit", str(out / "c.xml")]) == 0
    assert json.loads((out / "c.json").read_text())["combined"]["not_run"] == []
    assert "3 of 3 parity check(s) passed" in capsys.readouterr().out
    # Run again over the same folder: the combined report written there is not read as a shard.
    assert main(["combine", str(tmp_path), "--json", str(tmp_path / "again.json")]) == 0
    assert main(["combine", str(tmp_path), "--json", str(tmp_path / "third.json")]) == 0
    assert main(["combine", first]) == 1  # group 2's test ran in no shard
    assert main([]) == 2
