"""The terminal summary of real sessions (issue 23, item 4): what a baseline session wrote or compared, a drift
failure in the summary, JSON and JUnit, and no summary line wider than 120 columns for a long test id."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

SUITE = """
import pytest
import torch

LONG = "-".join(["a-rather-long-parameter-id"] * 6)

@pytest.mark.parity(devices=("cpu",), speed=1e3)
@pytest.mark.parametrize("width", [4, 8], ids=[LONG + "-4", LONG + "-8"])
def test_a_model_with_a_long_test_id_in_a_module_with_a_long_name_too(parity, width):
    torch.manual_seed(width)
    model = torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))
    parity.check(model, inputs=parity.randn(5, 6))
"""


def _summary(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "parity summary" in line)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("=")), len(lines))
    return lines[start + 1:end]


def _text(summary: list[str]) -> str:
    """The summary's lines joined as one text: a line wrapped at 120 columns (a long path) reads as before."""
    return " ".join(line.strip() for line in summary)


def test_baseline_figures_drift_and_width_of_the_summary(pytester):
    pytester.makepyfile(test_models_with_long_names_for_the_summary_width=SUITE)
    path = pytester.path / "baseline.json"
    common = ("-p", "no:cacheprovider")
    written = pytester.runpytest_subprocess(f"--parity-baseline={path}", "--parity-baseline-update", *common)
    written.assert_outcomes(passed=2)
    summary = _summary(written.stdout.str())
    assert f"parity baseline: wrote 2 entries to {path}" in _text(summary)
    assert max(len(line) for line in summary) <= 120, "\n".join(summary)

    compared = pytester.runpytest_subprocess(f"--parity-baseline={path}", *common)
    compared.assert_outcomes(passed=2)
    assert f"parity baseline: compared 2 entries from {path}, 0 drifted" in _text(_summary(compared.stdout.str()))

    # A baseline from a faster past: both checks pass speed=1e3 and fail on drift.
    stored = json.loads(path.read_text())
    for entry in stored["results"]:
        entry["speed"]["ratio"] = 0.01
    path.write_text(json.dumps(stored))
    report, junit = pytester.path / "report.json", pytester.path / "junit.xml"
    drifted = pytester.runpytest_subprocess(f"--parity-baseline={path}", f"--parity-report={report}",
                                            f"--junitxml={junit}", *common)
    drifted.assert_outcomes(failed=2)
    summary = _summary(drifted.stdout.str())
    assert max(len(line) for line in summary) <= 120, "\n".join(summary)
    assert sum(line.endswith("  FAIL (drift)") for line in summary) == 2, "\n".join(summary)
    assert f"parity baseline: compared 2 entries from {path}, 2 drifted" in _text(summary)
    results = json.loads(report.read_text())["results"]
    assert [entry["outcome"] for entry in results] == ["drift", "drift"]
    assert all(entry["passed"] is False and entry["drift"] for entry in results)
    # The reports keep the full test id the summary shortened.
    assert "a-rather-long-parameter-id-" * 6 in results[0]["nodeid"]
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert "speed ratio worsened from 0.01x" in properties["parity_drift"]
