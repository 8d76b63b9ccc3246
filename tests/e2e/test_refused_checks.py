"""Checks refused before comparing anything are listed like the others: summary, JSON and HTML (issue 14), and
target= given as an override is the override, not a second model."""

from __future__ import annotations

import json
import os

TEST_FILE = """
import keras
import pytest
import torch

from fixtures.bad_ports import missing_bias_keras, missing_bias_torch


def dense():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="dense")


@pytest.mark.parity(devices=("cpu",))
def test_port_without_a_bias(parity):
    parity.check(missing_bias_keras(), missing_bias_torch(), inputs=parity.randn(2, 6))


@pytest.mark.parity(devices=("cpu",))
def test_target_override(parity):
    parity.check(torch.nn.Linear(4, 2), inputs=parity.randn(3, 4), target="tensorflow")


@pytest.mark.parity(devices=("cpu",), target="tensorflow")
def test_target_marker(parity):
    parity.check(torch.nn.Linear(4, 2), inputs=parity.randn(3, 4))


@pytest.mark.parity(devices=("cpu",), atol=-1.0)
def test_bad_marker(parity):
    parity.check(dense(), inputs=parity.randn(3, 4))


@pytest.mark.parity(devices=("cpu",))
def test_passes(parity):
    parity.check(dense(), inputs=parity.randn(3, 4))
"""


def test_refused_checks_appear_in_the_summary_json_and_html(pytester, request, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(request.config.rootpath), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_refusals=TEST_FILE)
    report, html = pytester.path / "report.json", pytester.path / "report.html"
    result = pytester.runpytest_subprocess(f"--parity-report={report}", f"--parity-html={html}", "-p",
                                           "no:cacheprovider", f"--rootdir={pytester.path}")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1 and outcomes["failed"] == 3 and outcomes["errors"] == 1
    output = result.stdout.str()
    for test, route in [("test_port_without_a_bias", "port: tensorflow -> torch"),
                        ("test_target_override", "torch -> onnx -> tensorflow"),
                        ("test_target_marker", "torch -> onnx -> torch"), ("test_bad_marker", "-")]:
        # Two lines per check (test id and result, then its figures): one would pass 120 columns.
        lines = output.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith(f"test_refusals.py::{test}[cpu]"))
        figures = lines[at + 1]  # the route abbreviated (tensorflow -> tf) only where the line would not fit
        assert lines[at].rstrip().endswith("REFUSED") and route in figures.replace(" tf ", " tensorflow "), figures
    assert "4 of them refused before comparing anything" in output
    assert "test_refusals.py::test_port_without_a_bias[cpu]: port mode cannot carry the weights" in output
    entries = {entry["nodeid"].split("::")[1]: entry for entry in json.loads(report.read_text())["results"]}
    assert len(entries) == 5 and entries["test_passes[cpu]"]["passed"]
    refused = entries["test_port_without_a_bias[cpu]"]
    assert refused["passed"] is False and "has a bias" in refused["refused"] and refused["outputs"] is None
    # The override and the marker form are refused with the same message.
    assert entries["test_target_override[cpu]"]["refused"] == entries["test_target_marker[cpu]"]["refused"]
    assert "convert mode cannot target TensorFlow" in entries["test_target_override[cpu]"]["refused"]
    page = html.read_text()
    assert page.count(">REFUSED<") >= 8  # summary row and section of each
    assert "has a bias" in page
