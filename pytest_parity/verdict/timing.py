"""Speed: is target time / source time within the allowed ratio? A sequential test that decides only on evidence.

How, and why:
- Warm-up first: tf.function tracing, CUDA context creation and cuDNN autotuning happen in the first calls and would
  dominate the first samples.
- Each timed call ends with a device synchronisation (the adapters' ``speed_call`` does it: torch.cuda.synchronize(),
  tf.test.experimental.sync_devices()), because both frameworks return before GPU work has finished.
- Calibration, as pytest-benchmark does it: a sample shorter than ``MIN_SAMPLE_S`` is mostly timer and dispatch noise,
  so each sample runs the call ``iterations`` times. Before each sample the cores are left idle for ``SETTLE_S``.
- Rounds are interleaved (source, target; then target, source; ...) so a neighbour's load lands on both sides of a
  round alike and neither side always runs on caches the other warmed. Each round gives one ratio target / source.
- The clock (``clocks_for``): on the CPU, wall time decides and the process's CPU time (every thread of both
  frameworks) is kept beside it as a cross-check. CPU time was the candidate, since a neighbour that takes the cores
  away inflates wall time and not CPU time; but benchmarks/speed_gate_noise.py measured that for a TensorFlow/PyTorch
  pair CPU time is inflated by contention as much (the frameworks' thread pools spin-wait, burning CPU, while a peer
  thread is descheduled) and left more verdicts inconclusive (5 of 15 vs 2 of 15 at a limit 1.3x the idle ratio,
  3 of 20 vs 0 of 20 at 2x, both under load), and it measures work, not the latency a user gates on. On cuda: CUDA
  events when both sides are PyTorch, else synchronised wall time (TensorFlow offers no device timer).
- The verdict is a sequential test. After each look (``LOOK_S`` worth of rounds, at least ``MIN_ROUNDS``), a
  distribution-free confidence interval of the median per-round ratio is taken from order statistics (the binomial
  interval for a median, which assumes nothing about the shape of the timing distribution, only independent rounds).
  Its level is 1 - ``ALPHA`` / ``MAX_LOOKS`` (Bonferroni over the looks, so looking several times does not raise the
  chance of a wrong verdict above ``ALPHA``). The interval entirely at or below the allowed ratio: pass; entirely
  above: fail; straddling it: measure again, up to ``MAX_LOOKS`` looks; still straddling: inconclusive, which is
  neither a pass nor a failure (what it does to the test is the user's choice: speed_inconclusive=).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_parity.result import SpeedResult

WARMUP_CALLS = 3
MIN_SAMPLE_S = 0.010
# Fewer rounds than this give no interval at the per-look level alpha / looks = 0.0025 (2 / 2**10 = 0.002 fits, so at
# 10 rounds the interval is their min..max: all ten on one side of the limit decide).
MIN_ROUNDS = 10
MAX_ROUNDS = 201
# Timing budget per look and the number of looks: a clear case is decided after one look (~2 s), an unclear one gets
# up to MAX_LOOKS * LOOK_S of timing before it is called inconclusive.
LOOK_S = 2.0
MAX_LOOKS = 4
# Family-wise error of the verdict over all looks, for independent rounds.
ALPHA = 0.01
# Idle time before each timed sample, outside the timing: the other framework's worker threads spin-wait after their
# work (OpenMP, Eigen's pool) and would otherwise steal the cores from the sample that follows.
SETTLE_S = 0.005

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


class Timer(Protocol):
    """Measures one sample: ``start()`` returns a token, ``stop(token)`` the seconds since it."""

    def start(self) -> Any: ...

    def stop(self, token: Any) -> float: ...


@dataclass(frozen=True)
class CounterTimer:
    """A timer over a monotonic counter in seconds (time.perf_counter, time.process_time, a fake clock in tests)."""

    counter: Callable[[], float]

    def start(self) -> float:
        return self.counter()

    def stop(self, token: float) -> float:
        return self.counter() - token


WALL = "wall"
CPU = "process CPU time"
WALL_SYNCHRONISED = "synchronised wall"
CUDA_EVENTS = "CUDA events"


def clocks_for(device: str, cuda_event_timer: Timer | None = None) -> dict[str, Timer]:
    """The clocks to sample: the deciding one first, then at most one kept as a cross-check."""
    wall = CounterTimer(time.perf_counter)
    if device == "cpu":
        return {WALL: wall, CPU: CounterTimer(time.process_time)}
    if cuda_event_timer is not None:
        return {CUDA_EVENTS: cuda_event_timer, WALL_SYNCHRONISED: wall}
    return {WALL_SYNCHRONISED: wall}


def median_interval(values: Sequence[float], alpha: float) -> tuple[float, float]:
    """Distribution-free (1 - alpha) confidence interval of the median: the order statistics x_(k) and x_(n+1-k) with
    the largest k such that P(Binomial(n, 1/2) <= k - 1) <= alpha / 2. (-inf, inf) when n is too small for any k."""
    ordered = sorted(values)
    n = len(ordered)
    cumulative, k = 0.0, 0
    for successes in range(n // 2 + 1):
        cumulative += math.comb(n, successes) / 2.0 ** n
        if cumulative > alpha / 2:
            break
        k = successes + 1
    if k == 0:
        return -math.inf, math.inf
    return ordered[k - 1], ordered[n - k]


def _timed(call: Callable[[], Any], iterations: int, timers: dict[str, Timer], settle_s: float) -> dict[str, float]:
    if settle_s:
        time.sleep(settle_s)
    tokens = {name: timer.start() for name, timer in timers.items()}
    for _ in range(iterations):
        call()
    return {name: max(timer.stop(tokens[name]), 0.0) / iterations for name, timer in reversed(timers.items())}


def plan_rounds(source_s: float, target_s: float, budget_s: float) -> tuple[int, int]:
    """(iterations per sample, rounds) for calls that take ``source_s`` and ``target_s`` seconds once warm."""
    shortest = max(min(source_s, target_s), 1e-9)
    iterations = max(1, math.ceil(MIN_SAMPLE_S / shortest - 1e-9))  # 1e-9: float noise must not add a call
    round_s = iterations * (source_s + target_s)
    rounds = int(budget_s / max(round_s, 1e-9))
    return iterations, max(MIN_ROUNDS, min(MAX_ROUNDS, rounds))


def decide(interval: tuple[float, float], allowed: float) -> str:
    low, high = interval
    if high <= allowed:
        return PASS
    if low > allowed:
        return FAIL
    return INCONCLUSIVE


def measure_speed(source_call: Callable[[], Any], target_call: Callable[[], Any], allowed: float | None, *,
                  timed: str = "forward", gated: bool = True, inconclusive: str = "warn",
                  clocks: dict[str, Timer] | None = None, look_s: float = LOOK_S, max_looks: int = MAX_LOOKS,
                  alpha: float = ALPHA, settle_s: float = SETTLE_S) -> SpeedResult:
    """Time both calls in interleaved rounds until the ratio's interval is clear of ``allowed`` (or the looks run
    out); ``clocks`` as from ``clocks_for`` (default: the CPU ones), the first one decides."""
    timers = clocks if clocks is not None else clocks_for("cpu")
    deciding = next(iter(timers))
    measuring_started = time.perf_counter()
    for _ in range(WARMUP_CALLS):
        source_call()
        target_call()
    iterations, rounds_per_look = plan_rounds(_timed(source_call, 1, timers, settle_s)[deciding],
                                              _timed(target_call, 1, timers, settle_s)[deciding], look_s)
    # Without a limit to decide against (report only, or allowed=None) one look is all the figures need.
    looks_allowed = max_looks if gated and allowed is not None else 1
    level_alpha = alpha / max_looks
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in timers}
    verdict, looks, interval = INCONCLUSIVE, 0, (-math.inf, math.inf)
    timing_started = time.perf_counter()
    # A slow model's MIN_ROUNDS can take longer than a look's budget: no further look once the whole budget is spent.
    while looks < looks_allowed and (looks == 0 or time.perf_counter() - timing_started < max_looks * look_s):
        looks += 1
        for index in range(rounds_per_look):
            first, second = (target_call, source_call) if index % 2 else (source_call, target_call)
            first_times = _timed(first, iterations, timers, settle_s)
            second_times = _timed(second, iterations, timers, settle_s)
            source_sample, target_sample = (second_times, first_times) if index % 2 else (first_times, second_times)
            for name, (source_list, target_list) in samples.items():
                source_list.append(source_sample[name])
                target_list.append(target_sample[name])
        interval = median_interval(_ratios(*samples[deciding]), level_alpha)
        if allowed is not None:
            verdict = decide(interval, allowed)
            if verdict != INCONCLUSIVE:
                break
    ratios = _ratios(*samples[deciding])
    source_times, target_times = samples[deciding]
    passed = not gated or allowed is None or verdict == PASS or (verdict == INCONCLUSIVE and inconclusive != "fail")
    cross_check = next((name for name in timers if name != deciding), None)
    return SpeedResult(
        ratio=statistics.median(ratios), source_s=statistics.median(source_times),
        target_s=statistics.median(target_times), rounds=len(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        allowed=allowed, passed=passed, gated=gated, timed=timed, iterations=iterations, clock=deciding,
        ratio_low=interval[0], ratio_high=interval[1], confidence=1 - level_alpha,
        verdict=None if allowed is None else verdict, looks=looks,
        cross_check_clock=cross_check,
        cross_check_ratio=None if cross_check is None else statistics.median(_ratios(*samples[cross_check])),
        measure_s=time.perf_counter() - measuring_started)


def _ratios(source_times: list[float], target_times: list[float]) -> list[float]:
    # A sample the clock could not resolve (CPU time ticks, 0 s) makes no ratio worth keeping: floor it at 1 ns.
    return [max(target, 1e-9) / max(source, 1e-9) for source, target in zip(source_times, target_times)]


def _interval_text(speed: SpeedResult) -> str:
    if not math.isfinite(speed.ratio_low) or not math.isfinite(speed.ratio_high):
        return "too few rounds for an interval"
    return f"{speed.confidence:.2%} interval {speed.ratio_low:.2f}-{speed.ratio_high:.2f}x"


def describe(speed: SpeedResult) -> str:
    """'target is 2.31x slower than source (median of 15 rounds, 99.75% interval 2.05-2.60x, allowed 1.50x;
    clock: wall, by process CPU time 2.40x; timed: forward)', with 'speed inconclusive: ...' in front when the
    evidence did not decide."""
    if speed.ratio >= 1:
        comparison = f"target is {speed.ratio:.2f}x slower than source"
    else:
        comparison = f"target is {1 / speed.ratio:.2f}x faster than source (ratio {speed.ratio:.2f}x)"
    allowed = f", allowed {speed.allowed:.2f}x" if speed.allowed is not None else ""
    gate = "" if speed.gated else ", report only"
    cross_check = (f", by {speed.cross_check_clock} {speed.cross_check_ratio:.2f}x"
                   if speed.cross_check_ratio is not None else "")
    text = (f"{comparison} (median of {speed.rounds} rounds in {speed.looks} look(s), {_interval_text(speed)}, "
            f"spread {speed.ratio_min:.2f}-{speed.ratio_max:.2f}x{allowed}; clock: {speed.clock}{cross_check}; "
            f"timed: {speed.timed}{gate})")
    if speed.verdict == INCONCLUSIVE and speed.gated:
        return (f"speed inconclusive: {text}. The interval still contains the allowed ratio after "
                f"{speed.measure_s:.1f} s of timing, so noise could decide either way; rerun on a quieter machine, "
                f"or use speed_inconclusive='fail' to make this a failure")
    return f"speed: {text}"
