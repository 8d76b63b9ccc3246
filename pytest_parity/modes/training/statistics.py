"""BatchNormalization's moving variance in each framework's convention.

Both frameworks update a moving statistic as old * (1 - p) + batch * p (Keras writes momentum = 1 - p). For the
variance they take different batch figures: Keras the biased variance of the batch, torch the unbiased one, n / (n - 1)
times larger (n: elements per channel, batch x height x width; exactly 8/7 for a batch of 8 vectors). No port can
change that, so a correct port's running variances differ by design; the check carries the source's update into the
target's convention instead of failing every BatchNorm port: from the source's step it recovers the batch variance,
rescales it, and applies the update with the source's momentum to the expected target value.
"""

from __future__ import annotations

import numpy as np


def expected_running_variance(expected_before: np.ndarray, source_before: np.ndarray, source_after: np.ndarray,
                              momentum: float, elements: int, source_framework: str) -> np.ndarray:
    """The target's running variance after a step, given the source's before and after it.

    ``momentum``: the source's, in the torch convention (the weight of the batch); ``elements``: n, the elements per
    channel the layer saw in this step. Computed in float64: recovering the batch figure divides by the momentum."""
    p = float(momentum)
    before, after = np.asarray(source_before, np.float64), np.asarray(source_after, np.float64)
    batch = (after - (1.0 - p) * before) / p
    n = float(elements)
    if n <= 1:
        return np.asarray(source_after, np.float64)  # one element per channel: torch gives NaN/inf; leave it
    # Keras source (biased) -> torch target (unbiased), or the reverse.
    rescaled = batch * (n / (n - 1.0)) if source_framework == "tensorflow" else batch * ((n - 1.0) / n)
    return (1.0 - p) * np.asarray(expected_before, np.float64) + p * rescaled
