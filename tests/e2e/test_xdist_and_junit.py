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
