"""pytest-xdist runs give one merged summary and report with the same figures as a serial run; JUnit XML carries each
check's key figures as properties."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import pytest

SUITE = """
import pytest
import torch

def build(width):
    torch.manual_seed(width)
    return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("width", [4, 8, 16, 32])
def test_mlp(parity, width):
    parity.check(build(width), inputs=parity.randn(5, 6))

@pytest.mark.parity(devices=("cpu",), atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
def test_strict(parity):
    parity.check(build(64), inputs=parity.randn(64, 6) * 100)
"""

# Timings differ between runs by nature; every other figure must not.
TIMING_FIELDS = ("conversion_s", "run_s")


def _results(pytester, *args):
    report = pytester.path / f"report{len(args)}.json"
    result = pytester.runpytest_subprocess(f"--parity-report={report}", "-p", "no:cacheprovider", *args)
    results = json.loads(report.read_text())["results"]
    for entry in results:
        for field in TIMING_FIELDS:
            entry.pop(field)
    return result, sorted(results, key=lambda entry: entry["nodeid"])


def test_xdist_gives_one_merged_summary_and_report_with_the_serial_figures(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_suite=SUITE)
    serial, serial_results = _results(pytester, "-p", "no:xdist")
    parallel, parallel_results = _results(pytester, "-n", "2")
    assert len(serial_results) == 5
    assert parallel_results == serial_results
    assert parallel.stdout.str().count("= parity summary =") == 1
    outcome = serial.parseoutcomes()
    parallel.stdout.fnmatch_lines([f"{outcome['passed']} of 5 parity check(s) passed"])
    nodeids = [entry["nodeid"] for entry in parallel_results]
    assert nodeids == sorted(nodeids)


def test_junit_xml_carries_each_checks_key_figures(pytester):
    pytester.makepyfile(test_suite=SUITE)
    junit = pytester.path / "junit.xml"
    pytester.runpytest_subprocess(f"--junitxml={junit}", "-p", "no:cacheprovider", "-k", "4 or strict")
    cases = {case.get("name"): case for case in ElementTree.parse(junit).getroot().iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_mlp[cpu-4]"].iter("property")}
    assert properties["parity_route"] == "torch -> onnx -> torch" and properties["parity_passed"] == "True"
    assert float(properties["parity_outputs_max_abs"]) < 1e-5
    assert {"parity_device", "parity_grads_max_abs", "parity_grads_failed", "parity_speed_ratio"} <= set(properties)
    strict = {p.get("name"): p.get("value") for p in cases["test_strict[cpu]"].iter("property")}
    assert strict and strict["parity_passed"] in ("True", "False")


TIMED_SUITE = """
import pytest
import torch

@pytest.mark.parity(devices=("cpu",), speed=1e3)
@pytest.mark.parametrize("width", [4, 8])
def test_timed(parity, width):
    torch.manual_seed(width)
    model = torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))
    parity.check(model, inputs=parity.randn(5, 6))
"""


def test_baseline_round_trip_drift_and_bad_baselines(pytester):
    pytester.makepyfile(test_suite=TIMED_SUITE)
    path = pytester.path / "baseline.json"
    common = ("-p", "no:cacheprovider")
    pytester.runpytest_subprocess(f"--parity-baseline={path}", "--parity-baseline-update", *common).assert_outcomes(
        passed=2)
    stored = json.loads(path.read_text())
    assert len(stored["results"]) == 2 and stored["environment"]["devices"] == ["cpu"]
    # The same code against its own baseline: no drift.
    pytester.runpytest_subprocess(f"--parity-baseline={path}", *common).assert_outcomes(passed=2)
    # A baseline from a faster past: the check still passes speed=1e3 but fails on drift, naming both figures. (Output
    # and gradient growth are unit-tested: torch -> onnx -> torch is exact here, so they cannot grow.)
    for entry in stored["results"]:
        entry["speed"]["ratio"] = 0.01
    path.write_text(json.dumps(stored))
    result = pytester.runpytest_subprocess(f"--parity-baseline={path}", *common)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([f"*parity check drifted from the baseline {path}*",
                                 "*speed ratio worsened from 0.01x to *x (more than 25% over the baseline)*"])
    # Unusable baselines stop the session with the reason, before any test runs.
    path.write_text("{not json")
    result = pytester.runpytest_subprocess(f"--parity-baseline={path}", *common)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*parity baseline * cannot be read (JSONDecodeError*--parity-baseline-update*"])
    path.write_text(json.dumps({"version": 2, "results": []}))
    result = pytester.runpytest_subprocess(f"--parity-baseline={path}", *common)
    result.stderr.fnmatch_lines(["*has report version 2; this pytest-parity reads version 1*"])
