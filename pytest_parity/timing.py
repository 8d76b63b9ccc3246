"""Speed as a ratio of the two models measured in the same run.

Rounds are interleaved (source, target, source, target, ...) so that a noisy neighbour slows both sides alike, and the
figure is the median of the per-round ratios. The timed call is a forward pass in inference mode; each call returns
numpy, which synchronises the device (both frameworks run GPU work asynchronously).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from pytest_parity.result import SpeedResult

WARMUP_CALLS = 2
MIN_ROUNDS = 5
MAX_ROUNDS = 50
TIME_BUDGET_S = 2.0


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure_speed(source_call: Callable[[], Any], target_call: Callable[[], Any], allowed: float | None,
                  budget_s: float = TIME_BUDGET_S) -> SpeedResult:
    for _ in range(WARMUP_CALLS):  # tf.function tracing, CUDA context, cuDNN autotuning
        source_call()
        target_call()
    # Calibrate: as many rounds as fit the budget, within [MIN_ROUNDS, MAX_ROUNDS].
    one_round = _timed(source_call) + _timed(target_call)
    rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(one_round, 1e-9))))
    source_times, target_times, ratios = [], [], []
    for index in range(rounds):
        # Alternate who goes first, so neither side always runs on a cache warmed by the other.
        if index % 2:
            target_s, source_s = _timed(target_call), _timed(source_call)
        else:
            source_s, target_s = _timed(source_call), _timed(target_call)
        source_times.append(source_s)
        target_times.append(target_s)
        ratios.append(target_s / max(source_s, 1e-12))
    ratio = statistics.median(ratios)
    return SpeedResult(ratio=ratio, source_s=statistics.median(source_times),
                       target_s=statistics.median(target_times), rounds=rounds, ratio_min=min(ratios),
                       ratio_max=max(ratios), allowed=allowed, passed=allowed is None or ratio <= allowed)
