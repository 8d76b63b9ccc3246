"""speed= with the real frameworks: gating, report-only and off modes, what is timed, and the failure's wording.

No assertion here depends on how fast anything is (this machine is shared and noisy): a ratio bound of 1e-3 cannot
be met by any model, and 1e3 is always met.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.ports import GOOD_PORTS
from pytest_parity import ParityError
from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import timing

CIFAR = next(case for case in GOOD_PORTS if case.name == "cifar_cnn")
INPUTS = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)


def _port_check(**settings):
    return run_check(CIFAR.build_keras(), CIFAR.build_torch(), INPUTS,
                     ParitySettings(devices=("cpu",), layouts=CIFAR.layouts, **settings), "cpu", "speed")


@pytest.mark.parametrize("timed", ["forward", "forward_backward"])
def test_speed_is_measured_with_its_spread_for_both_kinds_of_timing(timed):
    result = _port_check(speed=1e3, timed=timed)
    speed = result.speed
    assert result.passed and speed.timed == timed and speed.gated
    assert speed.rounds >= timing.MIN_ROUNDS and speed.iterations >= 1
    assert speed.ratio_min <= speed.ratio_low <= speed.ratio <= speed.ratio_high <= speed.ratio_max
    assert speed.verdict == "pass" and speed.clock == timing.WALL and speed.cross_check_clock == timing.CPU
    assert speed.cross_check_ratio > 0
    assert speed.source_s > 0 and speed.target_s > 0


def test_a_ratio_that_cannot_be_met_fails_with_the_figure_spread_and_bound():
    with pytest.raises(ParityError) as failure:
        _port_check(speed=1e-3)
    message = str(failure.value)
    assert "outputs: agree within tolerance" in message
    assert "speed: target is " in message and "allowed 0.00x; clock: wall, by process CPU time " in message
    assert failure.value.result.speed.passed is False and failure.value.result.speed.verdict == "fail"


def test_report_only_measures_without_failing():
    result = run_check(CIFAR.build_keras(), CIFAR.build_torch(), INPUTS,
                       ParitySettings(devices=("cpu",), layouts=CIFAR.layouts, speed=1e-3), "cpu", "speed",
                       speed_gate=False)
    assert result.passed and result.speed is not None and not result.speed.gated


def test_convert_mode_times_both_sides():
    import keras

    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    result = run_check(model, None, INPUTS[:, 0, 0, :1].repeat(16, axis=1), ParitySettings(speed=1e3), "cpu", "s")
    assert result.speed is not None and result.speed.passed


SESSION = """
import numpy as np
import pytest
import torch

@pytest.mark.parity(devices=("cpu",), speed=1e-3)
def test_speed(parity):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    parity.check(model, inputs=parity.randn(16, 8))
"""


# The summary gives each check two lines here (test id and result, then its figures): one would pass 120 columns.
@pytest.mark.parametrize(("mode", "outcome", "expected"), [
    ("gate", "failed", ["test_session.py::test_speed[[]cpu[]]  FAIL", "*x [[]*-*[]] <= 0.00 wall"]),
    ("report", "passed", ["test_session.py::test_speed[[]cpu[]]  PASS", "*x [[]*-*[]] <= 0.00 wall report"]),
    ("off", "passed", ["test_session.py::test_speed[[]cpu[]]  PASS", "*torch -> onnx -> torch*  -"]),
])
def test_speed_modes_through_the_plugin(pytester, mode, outcome, expected):
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess(f"--parity-speed={mode}", "-p", "no:cacheprovider")
    result.assert_outcomes(**{outcome: 1})
    result.stdout.fnmatch_lines(expected)


# The statistical rule is unit-tested with fake clocks (tests/unit/test_timing.py); here the plumbing of an
# inconclusive measurement through the plugin, with the real frameworks: the verdict is forced inconclusive.
INCONCLUSIVE = """
import pytest
import torch
from pytest_parity.verdict import timing

timing.decide = lambda interval, allowed: timing.INCONCLUSIVE
timing.MAX_LOOKS = 1

@pytest.mark.parity(devices=("cpu",), speed=1.0{marker})
def test_speed(parity):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    parity.check(model, inputs=parity.randn(16, 8))
"""


@pytest.mark.parametrize(("options", "marker", "outcome", "expected"), [
    ((), "", {"passed": 1, "warnings": 1}, ["*ParitySpeedWarning*speed inconclusive: target is*",
                                             "*PASS (speed inconclusive)*",
                                             "1 of them with a speed measurement too noisy to decide*"]),
    (("--parity-speed-inconclusive=fail",), "", {"failed": 1}, ["*speed inconclusive: target is*", "*FAIL*"]),
    (("--parity-speed-inconclusive=skip",), "", {"skipped": 1}, ["*speed inconclusive*"]),
    # The marker wins over the command line.
    (("--parity-speed-inconclusive=fail",), ", speed_inconclusive='warn'", {"passed": 1, "warnings": 1},
     ["*PASS (speed inconclusive)*"]),
])
def test_an_inconclusive_measurement_does_what_the_user_chose(pytester, options, marker, outcome, expected):
    pytester.makepyfile(test_session=INCONCLUSIVE.format(marker=marker))
    result = pytester.runpytest_subprocess(*options, "-p", "no:cacheprovider", "-rs",
                                           "--parity-report=report.json")
    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(expected)
    speed = json.loads((pytester.path / "report.json").read_text())["results"][0]["speed"]
    assert speed["verdict"] == "inconclusive" and speed["clock"] == "wall"
    assert speed["passed"] is ("failed" not in outcome)


def test_the_session_reports_one_time_imports_apart_from_conversion_time(pytester):
    pytester.makepyfile(test_session=SESSION.replace("speed=1e-3", "speed=None"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--parity-report=report.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["one-time imports and warm-up of the frameworks and converters: * s (not counted in "
                                 "any check's conversion time)"])
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["results"][0]["conversion_s"] < 2.0  # a Linear's export alone; it was 4.6 s with the first imports
