"""Speed as a ratio of the two models measured in the same run: median of (target time / source time) over rounds.

How, and why:
- Warm-up first: tf.function tracing, CUDA context creation and cuDNN autotuning happen in the first calls and would
  dominate the first samples.
- Each timed call ends with a device synchronisation (the adapters' ``speed_call`` does it: torch.cuda.synchronize(),
  tf.test.experimental.sync_devices()), because both frameworks return before GPU work has finished.
- Calibration, as pytest-benchmark does it: a sample shorter than ``MIN_SAMPLE_S`` is mostly timer and dispatch noise,
  so each sample runs the call ``iterations`` times; then as many rounds as fit the time budget, within
  [MIN_ROUNDS, MAX_ROUNDS]. Before each sample the cores are left idle for ``SETTLE_S`` (not timed).
- Measured with benchmarks/speed_stability.py on a shared 2-core machine (max/min of the ratio over 5 processes):
  5 ms samples 1.55; 10 ms samples 1.05-1.65 over five batches with the pause, 1.16-1.18 without; the run-to-run
  spread comes from the two frameworks slowing each other down in one process (see README, Measurements).
- Rounds are interleaved (source, target; then target, source; ...) so a noisy neighbour slows both sides alike and
  neither side always runs on caches the other warmed. The figure is the median of the per-round ratios, reported with
  its spread (min and max of the per-round ratios).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from pytest_parity.result import SpeedResult

WARMUP_CALLS = 3
MIN_SAMPLE_S = 0.010
MIN_ROUNDS = 7
MAX_ROUNDS = 101
TIME_BUDGET_S = 2.0
# Idle time before each timed sample, outside the timing: the other framework's worker threads spin-wait after their
# work (OpenMP, Eigen's pool) and would otherwise steal the cores from the sample that follows.
SETTLE_S = 0.005

Clock = Callable[[], float]


def _timed(call: Callable[[], Any], iterations: int, clock: Clock, settle_s: float) -> float:
    if settle_s:
        time.sleep(settle_s)
    started = clock()
    for _ in range(iterations):
        call()
    return (clock() - started) / iterations


def plan_rounds(source_s: float, target_s: float, budget_s: float) -> tuple[int, int]:
    """(iterations per sample, rounds) for calls that take ``source_s`` and ``target_s`` seconds once warm."""
    shortest = max(min(source_s, target_s), 1e-9)
    iterations = max(1, math.ceil(MIN_SAMPLE_S / shortest - 1e-9))  # 1e-9: float noise must not add a call
    round_s = iterations * (source_s + target_s)
    rounds = int(budget_s / max(round_s, 1e-9))
    return iterations, max(MIN_ROUNDS, min(MAX_ROUNDS, rounds))


def measure_speed(source_call: Callable[[], Any], target_call: Callable[[], Any], allowed: float | None, *,
                  timed: str = "forward", gated: bool = True, budget_s: float = TIME_BUDGET_S,
                  clock: Clock = time.perf_counter, settle_s: float = SETTLE_S) -> SpeedResult:
    for _ in range(WARMUP_CALLS):
        source_call()
        target_call()
    iterations, rounds = plan_rounds(_timed(source_call, 1, clock, settle_s), _timed(target_call, 1, clock, settle_s),
                                     budget_s)
    source_times, target_times, ratios = [], [], []
    for index in range(rounds):
        if index % 2:
            target_s = _timed(target_call, iterations, clock, settle_s)
            source_s = _timed(source_call, iterations, clock, settle_s)
        else:
            source_s = _timed(source_call, iterations, clock, settle_s)
            target_s = _timed(target_call, iterations, clock, settle_s)
        source_times.append(source_s)
        target_times.append(target_s)
        ratios.append(target_s / max(source_s, 1e-12))
    ratio = statistics.median(ratios)
    return SpeedResult(ratio=ratio, source_s=statistics.median(source_times),
                       target_s=statistics.median(target_times), rounds=rounds, ratio_min=min(ratios),
                       ratio_max=max(ratios), allowed=allowed,
                       passed=not gated or allowed is None or ratio <= allowed, gated=gated, timed=timed,
                       iterations=iterations)


def describe(speed: SpeedResult) -> str:
    """'target is 2.31x slower than source (median of 15 rounds, spread 2.05-2.60x, allowed 1.50x)'."""
    if speed.ratio >= 1:
        comparison = f"target is {speed.ratio:.2f}x slower than source"
    else:
        comparison = f"target is {1 / speed.ratio:.2f}x faster than source (ratio {speed.ratio:.2f}x)"
    allowed = f", allowed {speed.allowed:.2f}x" if speed.allowed is not None else ""
    gate = "" if speed.gated else ", report only"
    return (f"speed: {comparison} (median of {speed.rounds} rounds, spread {speed.ratio_min:.2f}-"
            f"{speed.ratio_max:.2f}x{allowed}; timed: {speed.timed}{gate})")
