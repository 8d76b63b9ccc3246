"""Sharded runs end to end: four pytest-split shards under pytest-xdist, combined, give one serial run's report figure
for figure; a missing shard's tests are listed as run by no shard; the baseline written from the combined result gates
a later shard (docs/sharding.md)."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ElementTree

import pytest

SUITE = """
import pytest
import torch

def test_not_a_parity_test():
    pass

def build(width, activation=torch.nn.Tanh):
    torch.manual_seed(width)
    return torch.nn.Sequential(torch.nn.Linear(6, width), activation(), torch.nn.Linear(width, 3))

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("width", [4, 8, 16])
def test_mlp(parity, width):
    parity.check(build(width), inputs=parity.randn(5, 6))

# GELU(tanh) and convolutions come back from ONNX with rounding differences: figures that are not all zero.
@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("width", [32, 64])
def test_gelu(parity, width):
    parity.check(build(width, lambda: torch.nn.GELU(approximate="tanh")), inputs=parity.randn(5, 6) * 10)

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("channels", [8, 16])
def test_conv(parity, channels):
    torch.manual_seed(channels)
    model = torch.nn.Sequential(torch.nn.Conv1d(6, channels, 3, padding=1), torch.nn.SiLU(),
                                torch.nn.Conv1d(channels, 3, 3))
    parity.check(model, inputs=parity.randn(5, 6, 10))

@pytest.mark.parity(devices=("cpu",), atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
def test_strict(parity):
    parity.check(build(64), inputs=parity.randn(64, 6) * 100)

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.skip(reason="a parity test that is skipped: it ran, and recorded nothing")
def test_skipped(parity):
    parity.check(build(4), inputs=parity.randn(5, 6))
"""

PARITY_TESTS = 9  # 3 + 2 + 2 + 1 + the skipped one
# Timings differ between runs by nature; every other figure must not. "shard" names the shard a result came from.
NOT_FIGURES = ("conversion_s", "run_s", "shard")


def _figures(results):
    return sorted(({key: value for key, value in entry.items() if key not in NOT_FIGURES} for entry in results),
                  key=lambda entry: entry["nodeid"])


@pytest.fixture
def sharded(pytester, request, monkeypatch):
    """The suite's serial report and four shards' reports (pytest -n 2 --splits 4 --group i --parity-report=DIR/)."""
    pytest.importorskip("xdist")
    pytest.importorskip("pytest_split")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(request.config.rootpath), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_suite=SUITE)
    common = ("-p", "no:cacheprovider", f"--rootdir={pytester.path}")
    serial = pytester.path / "serial.json"
    pytester.runpytest_subprocess(f"--parity-report={serial}", "-p", "no:xdist", *common).assert_outcomes(
        passed=9, skipped=1)
    shards = pytester.path / "shards"
    for group in range(1, 5):
        result = pytester.runpytest_subprocess("-n", "2", "--splits", "4", "--group", str(group),
                                               f"--parity-report={shards}/", *common)
        assert result.ret == 0, result.stdout.str()
        assert (shards / f"parity-group-{group}-of-4.json").is_file()
    return pytester, serial, shards


def _combine(pytester, *arguments):
    return pytester.run(sys.executable, "-m", "pytest_parity", "combine", *map(str, arguments))


def test_four_shards_combined_equal_one_serial_run_figure_for_figure(sharded):
    pytester, serial, shards = sharded
    reports = sorted(shards.glob("*.json"))
    assert [path.name for path in reports] == [f"parity-group-{group}-of-4.json" for group in range(1, 5)]
    blocks = [json.loads(path.read_text())["shard"] for path in reports]
    # Each shard collected the whole suite's parity tests (before pytest-split deselected the others') and ran its
    # part; together they ran each parity test exactly once.
    assert all(len(block["collected"]) == PARITY_TESTS for block in blocks)
    ran = [nodeid for block in blocks for nodeid in block["ran"]]
    assert sorted(ran) == sorted(blocks[0]["collected"])
    assert [block["group"] for block in blocks] == [1, 2, 3, 4] and {block["splits"] for block in blocks} == {4}

    out = pytester.path / "combined"
    result = _combine(pytester, shards, "--json", out / "parity.json", "--html", out / "parity.html",
                      "--junit", out / "parity.xml")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(["combined 4 shard report(s): group-1-of-4 *", "8 of 8 parity check(s) passed",
                                 "1 parity test(s) skipped"])
    combined = json.loads((out / "parity.json").read_text())
    single = json.loads(serial.read_text())
    assert {"version", "created", "environment", "results"} <= set(combined) and "shard" not in single
    assert len(single["results"]) == 8
    assert _figures(combined["results"]) == _figures(single["results"])
    figures = [entry["outputs"]["max_abs"] for entry in single["results"]] + [
        comparison["max_abs"] for entry in single["results"] for comparison in entry["grads"].values()]
    assert any(figures), "every figure is 0: the comparison would prove little"
    assert combined["environment"] == single["environment"]
    assert combined["combined"]["conflicts"] == [] and combined["combined"]["not_run"] == []
    assert "<title>Parity report: 8 of 8 passed</title>" in (out / "parity.html").read_text()
    suite = ElementTree.parse(out / "parity.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("9", "0", "0",
                                                                                                      "1")

    # A shard that never reported: its tests are named, with its group, and the combined run fails.
    lost = max(range(4), key=lambda index: len(blocks[index]["ran"]))
    missing = _combine(pytester, *(path for index, path in enumerate(reports) if index != lost))
    assert missing.ret == 1
    not_run = [nodeid for nodeid in blocks[0]["collected"] if nodeid in blocks[lost]["ran"]]  # in collection order
    missing.stdout.fnmatch_lines([f"{len(not_run)} parity test(s) collected but run by no shard:",
                                  *(f"  {nodeid}" for nodeid in not_run),
                                  f"no report from group {lost + 1} of 4: its tests are listed as run by no shard"])

    # The baseline from the combined result gates a later shard, per test id.
    baseline = pytester.path / "baseline.json"
    written = _combine(pytester, shards, "--update-baseline", baseline)
    assert written.ret == 0
    written.stdout.fnmatch_lines([f"parity baseline: wrote 8 entries to {baseline}"])
    checks = [entry for entry in single["results"] if entry["nodeid"] in blocks[lost]["ran"]]
    later = pytester.runpytest_subprocess("--splits", "4", "--group", str(lost + 1), f"--parity-baseline={baseline}",
                                          "-p", "no:cacheprovider", "-p", "no:xdist", f"--rootdir={pytester.path}")
    assert later.ret == 0
    summary = " ".join(later.stdout.str().split())  # the summary wraps at 120 columns
    entries = "entry" if len(checks) == 1 else "entries"
    assert f"parity baseline: compared {len(checks)} {entries} from {baseline}, 0 drifted" in summary
