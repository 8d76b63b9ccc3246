"""The speed harness with a fake clock: calibration, interleaving, the ratio and its spread, gating and wording."""

from __future__ import annotations

import pytest

from pytest_parity import timing


class FakeClock:
    """Time advances only when a fake model runs: source calls take ``source_s``, target calls ``target_s``."""

    def __init__(self):
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def model(self, name: str, seconds):
        def call():
            self.calls.append(name)
            self.now += seconds(len(self.calls)) if callable(seconds) else seconds
        return call


@pytest.mark.parametrize(("source_s", "target_s", "iterations", "rounds"), [
    (0.010, 0.020, 1, 66),      # 2 s budget / 30 ms per round
    (0.0001, 0.00001, 1000, 18),  # rounds from the budget: 1000 x 0.11 ms per round
    (0.0001, 0.0002, 100, 66),  # fast calls: 100 per sample reach the 10 ms minimum sample
    (1.0, 2.0, 1, 7),           # slow calls: the minimum number of rounds, whatever the budget
])
def test_plan_rounds_calibrates_iterations_then_rounds(source_s, target_s, iterations, rounds):
    assert timing.plan_rounds(source_s, target_s, budget_s=2.0) == (iterations, rounds)


def test_ratio_is_the_median_of_interleaved_rounds_after_warm_up():
    clock = FakeClock()
    result = timing.measure_speed(clock.model("s", 0.010), clock.model("t", 0.020), 1.5, clock=clock, settle_s=0)
    assert result.ratio == pytest.approx(2.0) and result.ratio_min == pytest.approx(2.0)
    assert result.source_s == pytest.approx(0.010) and result.target_s == pytest.approx(0.020)
    assert not result.passed and result.gated and result.allowed == 1.5
    warm_up = 2 * timing.WARMUP_CALLS + 2  # warm-up pairs, then one calibration call each
    assert clock.calls[:warm_up] == ["s", "t"] * (timing.WARMUP_CALLS + 1)
    # Rounds alternate who goes first.
    assert clock.calls[warm_up:warm_up + 4] == ["s", "t", "t", "s"]
    assert len(clock.calls) == warm_up + 2 * result.rounds * result.iterations


def test_spread_reports_the_slowest_and_fastest_round():
    clock = FakeClock()
    # Every 10th target call is slowed down by a noisy neighbour.
    result = timing.measure_speed(clock.model("s", 0.010), clock.model("t", lambda n: 0.05 if n % 10 == 0 else 0.01),
                                  None, clock=clock, settle_s=0)
    assert result.ratio == pytest.approx(1.0)
    assert result.ratio_max > 4 and result.ratio_min == pytest.approx(1.0)
    assert result.passed  # nothing allowed, nothing gated


def test_report_only_never_fails():
    clock = FakeClock()
    result = timing.measure_speed(clock.model("s", 0.01), clock.model("t", 0.03), 1.1, gated=False, clock=clock,
                                  settle_s=0)
    assert result.passed and not result.gated and result.ratio == pytest.approx(3.0)
    assert timing.describe(result).endswith("timed: forward, report only)")


def _measure(source_s, target_s, allowed, **options):
    clock = FakeClock()
    return timing.measure_speed(clock.model("s", source_s), clock.model("t", target_s), allowed, clock=clock,
                                settle_s=0, **options)


def test_describe_slower_and_faster():
    slower = timing.describe(_measure(0.01, 0.0231, 1.5, timed="forward_backward"))
    assert slower.startswith("speed: target is 2.31x slower than source (median of ")
    assert "allowed 1.50x; timed: forward_backward)" in slower
    faster = timing.describe(_measure(0.02, 0.01, None))
    assert faster.startswith("speed: target is 2.00x faster than source (ratio 0.50x)")
