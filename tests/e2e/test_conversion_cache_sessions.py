"""The conversion cache in real sessions: a warm re-run skips the export with identical figures, damaged entries are
rebuilt, the switches work, a cache dir that cannot be written warns once and changes nothing else, and pytest-xdist
workers share it."""

from __future__ import annotations

import json
import pickle

import pytest

SUITE = """
import keras
import pytest
import torch

def torch_model(width):
    return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("width", [4, 8])
def test_torch(parity, width):
    parity.check(torch_model(width), inputs=parity.randn(5, 6))

@pytest.mark.parity(devices=("cpu",))
def test_keras(parity):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(2)])
    parity.check(model, inputs=parity.randn(4, 6))
"""

TIMING_FIELDS = ("conversion_s", "run_s", "conversion_cache")


def _run(pytester, cache_dir, *args):
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(f"--parity-report={report}", "-o", f"cache_dir={cache_dir}", *args)
    results = sorted(json.loads(report.read_text())["results"], key=lambda entry: entry["nodeid"])
    outcomes = [entry["conversion_cache"] for entry in results]
    for entry in results:
        for field in TIMING_FIELDS:
            entry.pop(field)
    return result, results, outcomes


def _entries(cache_dir):
    return sorted((cache_dir / "d" / "parity-conversions").glob("*.onnx-entry"))


def test_a_warm_run_skips_the_export_and_gives_the_same_figures(pytester):
    pytester.makepyfile(test_suite=SUITE)
    cache_dir = pytester.path / "cache"
    cold, cold_results, cold_outcomes = _run(pytester, cache_dir)
    cold.assert_outcomes(passed=3)
    assert cold_outcomes == ["miss"] * 3 and len(_entries(cache_dir)) == 3
    cold.stdout.fnmatch_lines(["conversion cache: 3 miss"])
    warm, warm_results, warm_outcomes = _run(pytester, cache_dir)
    warm.assert_outcomes(passed=3)
    assert warm_outcomes == ["hit"] * 3
    assert warm_results == cold_results
    warm.stdout.fnmatch_lines(["conversion cache: 3 hit"])


def test_a_damaged_entry_is_rebuilt_and_a_valid_frame_around_a_pickle_is_never_unpickled(pytester, tmp_path):
    from pytest_parity.bridge.cache import frame

    pytester.makepyfile(test_suite=SUITE)
    cache_dir = pytester.path / "cache"
    _run(pytester, cache_dir, "-k", "keras")
    (entry,) = _entries(cache_dir)
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 3])  # a partial entry
    result, _, outcomes = _run(pytester, cache_dir, "-k", "keras")
    result.assert_outcomes(passed=1)
    assert outcomes == ["rebuilt"]

    class LeavesAMark:
        def __reduce__(self):
            return (open, (str(tmp_path / "unpickled"), "w"))

    entry.write_bytes(frame(pickle.dumps(LeavesAMark())))  # checksum right, content a pickle
    result, _, outcomes = _run(pytester, cache_dir, "-k", "keras")
    result.assert_outcomes(passed=1)
    assert outcomes == ["rebuilt"] and not (tmp_path / "unpickled").exists()
    _, _, outcomes = _run(pytester, cache_dir, "-k", "keras")
    assert outcomes == ["hit"]


def test_the_switches_clear_and_turn_off_the_cache(pytester):
    pytester.makepyfile(test_suite=SUITE)
    cache_dir = pytester.path / "cache"
    _run(pytester, cache_dir, "-k", "torch")
    _, _, outcomes = _run(pytester, cache_dir, "-k", "torch", "--parity-cache-clear")
    assert outcomes == ["miss", "miss"]
    result, _, outcomes = _run(pytester, cache_dir, "-k", "torch", "--parity-cache=off")
    assert outcomes == [None, None]
    result.stdout.no_fnmatch_line("conversion cache:*")
    _, _, outcomes = _run(pytester, cache_dir, "-k", "torch", "-o", "parity_cache=off")
    assert outcomes == [None, None]
    result = pytester.runpytest_subprocess("-o", "parity_cache=maybe")
    result.stderr.fnmatch_lines(["*ini option parity_cache must be one of on, off, a directory*got 'maybe'*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_a_cache_dir_that_cannot_be_written_warns_once_and_the_session_goes_on(pytester):
    pytester.makepyfile(test_suite=SUITE)
    blocker = pytester.path / "blocker"
    blocker.write_text("a file where the cache dir should be")
    # -W error: the warning must not turn into a failure; it is a note in the warnings summary.
    result, _, outcomes = _run(pytester, blocker / "cache", "-W", "error::pytest_parity.errors.ParityCacheWarning")
    result.assert_outcomes(passed=3)
    assert outcomes == [None, None, None]
    # Once for the session, not once per check (pytest's own cache warnings may sit beside it).
    warning_lines = [line for line in result.outlines if "ParityCacheWarning: the parity conversion cache" in line]
    assert len(warning_lines) == 1, result.stdout.str()
    assert "cannot be created" in warning_lines[0]


def test_xdist_workers_share_the_cache(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_suite=SUITE)
    cache_dir = pytester.path / "cache"
    _, serial_results, _ = _run(pytester, cache_dir, "-p", "no:xdist")
    parallel, parallel_results, outcomes = _run(pytester, cache_dir, "-n", "2")
    parallel.assert_outcomes(passed=3)
    assert outcomes == ["hit"] * 3 and parallel_results == serial_results
    parallel.stdout.fnmatch_lines(["conversion cache: 3 hit"])
