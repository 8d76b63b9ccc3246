"""The speed gate with fake clocks: calibration, interleaving, the median's interval, the sequential verdict
(pass, fail, inconclusive), what an inconclusive measurement does, and the wording."""

from __future__ import annotations

import math
import random

import pytest

from pytest_parity.verdict import timing


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


def _measure(source_s, target_s, allowed, clock=None, **options):
    clock = clock or FakeClock()
    return timing.measure_speed(clock.model("s", source_s), clock.model("t", target_s), allowed,
                                clocks={"fake": timing.CounterTimer(clock)}, settle_s=0, **options)


@pytest.mark.parametrize(("source_s", "target_s", "iterations", "rounds"), [
    (0.010, 0.020, 1, 66),      # 2 s budget / 30 ms per round
    (0.0001, 0.00001, 1000, 18),  # rounds from the budget: 1000 x 0.11 ms per round
    (0.0001, 0.0002, 100, 66),  # fast calls: 100 per sample reach the 10 ms minimum sample
    (1.0, 2.0, 1, timing.MIN_ROUNDS),  # slow calls: the minimum number of rounds, whatever the budget
])
def test_plan_rounds_calibrates_iterations_then_rounds(source_s, target_s, iterations, rounds):
    assert timing.plan_rounds(source_s, target_s, budget_s=2.0) == (iterations, rounds)


def _binomial_tail(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


@pytest.mark.parametrize("n", [5, 11, 20, 66, 201])
def test_median_interval_is_the_binomial_order_statistic_interval(n):
    values = [float(v) for v in range(n)]
    random.Random(n).shuffle(values)
    alpha = timing.ALPHA / timing.MAX_LOOKS
    low, high = timing.median_interval(values, alpha)
    if n < timing.MIN_ROUNDS:
        assert (low, high) == (-math.inf, math.inf)  # too few rounds: no interval at this level
        return
    k = int(low) + 1  # values are 0..n-1, so x_(k) == k - 1
    assert high == n - k  # symmetric: x_(n+1-k)
    assert 2 * _binomial_tail(n, k - 1) <= alpha < 2 * _binomial_tail(n, k)  # the widest k that keeps the level


def test_median_interval_covers_the_true_median_at_its_level():
    # Lognormal ratios with median 1.5: the interval misses 1.5 no more often than alpha allows.
    generator = random.Random(0)
    alpha, misses, trials = 0.05, 0, 2000
    for _ in range(trials):
        low, high = timing.median_interval([1.5 * math.exp(generator.gauss(0, 0.3)) for _ in range(30)], alpha)
        misses += not low <= 1.5 <= high
    assert misses / trials <= alpha


def test_minimum_rounds_give_an_interval_at_the_per_look_level():
    alpha = timing.ALPHA / timing.MAX_LOOKS
    assert timing.median_interval([1.0] * timing.MIN_ROUNDS, alpha) == (1.0, 1.0)
    assert timing.median_interval([1.0] * (timing.MIN_ROUNDS - 1), alpha) == (-math.inf, math.inf)


def test_rounds_are_interleaved_after_warm_up_and_a_clear_case_needs_one_look():
    clock = FakeClock()
    result = _measure(0.010, 0.020, 1.5, clock)
    assert result.ratio == pytest.approx(2.0) and result.ratio_min == pytest.approx(2.0)
    assert result.source_s == pytest.approx(0.010) and result.target_s == pytest.approx(0.020)
    assert result.verdict == "fail" and not result.passed and result.gated and result.allowed == 1.5
    assert result.looks == 1 and result.clock == "fake" and result.cross_check_ratio is None
    assert result.ratio_low == pytest.approx(2.0) and result.ratio_high == pytest.approx(2.0)
    assert result.confidence == pytest.approx(1 - timing.ALPHA / timing.MAX_LOOKS)
    warm_up = 2 * timing.WARMUP_CALLS + 2  # warm-up pairs, then one calibration call each
    assert clock.calls[:warm_up] == ["s", "t"] * (timing.WARMUP_CALLS + 1)
    assert clock.calls[warm_up:warm_up + 4] == ["s", "t", "t", "s"]  # rounds alternate who goes first
    assert len(clock.calls) == warm_up + 2 * result.rounds * result.iterations


def test_a_clear_pass_needs_one_look():
    result = _measure(0.010, 0.011, 2.0)
    assert result.verdict == "pass" and result.passed and result.looks == 1
    assert result.ratio_high <= 2.0


def _two_valued_target(fast_share: float, seed: int = 0):
    """Target calls of 18 ms (ratio 0.9 against a 20 ms source) with probability ``fast_share``, else 40 ms (ratio
    2.0); every call is at least the 10 ms minimum sample, so each sample is one call and each round one ratio."""
    generator = random.Random(seed)
    return lambda n: 0.018 if generator.random() < fast_share else 0.040


def test_noise_straddling_the_limit_is_inconclusive_after_every_look():
    # Half the rounds at 0.9x, half at 2.0x, limit 1.5: no amount of rounds puts the median on one side.
    result = _measure(0.020, _two_valued_target(0.5), 1.5)
    assert result.verdict == "inconclusive" and result.looks == timing.MAX_LOOKS
    assert result.ratio_low <= 1.5 < result.ratio_high
    assert result.passed and result.inconclusive  # the default action is warn: the test decides, not timing
    assert timing.describe(result).startswith("speed inconclusive: target is ")
    assert "speed_inconclusive='fail'" in timing.describe(result)


def test_inconclusive_fails_when_the_user_says_so():
    result = _measure(0.020, _two_valued_target(0.5), 1.5, inconclusive="fail")
    assert result.verdict == "inconclusive" and not result.passed


def test_more_looks_decide_what_one_look_cannot():
    # 80% of the rounds at 0.9x: the median is 0.9, but ten rounds (one short look) rarely all fall below 1.5; more
    # rounds narrow the interval below the limit.
    result = _measure(0.020, _two_valued_target(0.8, seed=1), 1.5, look_s=0.5)
    assert result.verdict == "pass" and result.looks >= 2 and result.ratio == pytest.approx(0.9)
    assert result.rounds % result.looks == 0  # each look adds the same batch of rounds


def test_report_only_never_fails_and_takes_one_look():
    result = _measure(0.01, 0.03, 1.1, gated=False)
    assert result.passed and not result.gated and result.ratio == pytest.approx(3.0) and result.looks == 1
    assert timing.describe(result).endswith("timed: forward, report only)")


def test_without_a_limit_there_is_no_verdict():
    result = _measure(0.01, 0.03, None)
    assert result.passed and result.verdict is None and result.looks == 1 and not result.inconclusive


def test_spread_reports_the_slowest_and_fastest_round():
    # Every 10th target call is slowed down by a noisy neighbour; the median and its interval ignore it.
    result = _measure(0.010, lambda n: 0.05 if n % 10 == 0 else 0.01, 2.0)
    assert result.ratio == pytest.approx(1.0) and result.verdict == "pass"
    assert result.ratio_max > 4 and result.ratio_min == pytest.approx(1.0)


def test_the_first_clock_decides_and_the_other_is_kept_as_a_cross_check():
    cpu, wall = FakeClock(), FakeClock()

    def model(name, cpu_s, wall_s):
        def call():
            cpu.now += cpu_s
            wall.now += wall_s
        return call

    # The target's thread pool spins while it waits: its CPU time doubles, its wall time does not.
    result = timing.measure_speed(model("s", 0.01, 0.01), model("t", 0.02, 0.01), 1.5,
                                  clocks={timing.WALL: timing.CounterTimer(wall), timing.CPU: timing.CounterTimer(cpu)},
                                  settle_s=0)
    assert result.clock == timing.WALL and result.ratio == pytest.approx(1.0) and result.verdict == "pass"
    assert result.cross_check_clock == timing.CPU and result.cross_check_ratio == pytest.approx(2.0)
    assert "clock: wall, by process CPU time 2.00x" in timing.describe(result)


def test_clocks_per_device():
    assert list(timing.clocks_for("cpu")) == [timing.WALL, timing.CPU]
    assert list(timing.clocks_for("cuda")) == [timing.WALL_SYNCHRONISED]

    class Events:
        def start(self):
            return 0

        def stop(self, token):
            return 1.0

    assert list(timing.clocks_for("cuda", Events())) == [timing.CUDA_EVENTS, timing.WALL_SYNCHRONISED]


def test_describe_slower_and_faster():
    slower = timing.describe(_measure(0.01, 0.0231, 1.5, timed="forward_backward"))
    assert slower.startswith("speed: target is 2.31x slower than source (median of ")
    assert "interval 2.31-2.31x" in slower
    assert "allowed 1.50x; clock: fake; timed: forward_backward)" in slower
    faster = timing.describe(_measure(0.02, 0.01, None))
    assert faster.startswith("speed: target is 2.00x faster than source (ratio 0.50x)")

