"""Gradient tolerances that scale with the tensor compared, so that no comparison is one that cannot fail.

A fixed absolute tolerance passes any target whose values lie inside it: at grad_atol 1e-4, most weight gradients of
a model with small layer scales or zero-initialised last norms (timm's ConvNeXt, EfficientNet, RegNet) are entirely
below 1e-4, so an all-zero, halved or sign-flipped target gradient would pass. So each gradient tensor g gets

    atol(g) = min(grad_atol, max(SCALE_SHARE * max|g|, NOISE_SHARE * G))

where G is the largest |element| over every gradient of the check (inputs and weights). The first term makes a zeroed,
halved or negated target fail whenever SCALE_SHARE < 0.5 - grad_rtol. The second is the float32 rounding floor of the
whole computation: a gradient that is zero in exact arithmetic (a key-projection bias before a softmax, which shifts
every logit of a row alike) comes out as rounding noise of the model's scale, and two frameworks' noise differs; it is
judged against that floor, which is also all that can be said of it. grad_atol stays the ceiling: never looser than
the user asked.

The shares are measured (benchmarks/gradient_scale_tolerances.py, 2849 gradient tensors of 30 checks: the demo's Keras
models, the PyTorch convert-mode models, torchvision, timm and transformers). Honest differences relative to their own
tensor reach 6.6e-6 (99th percentile 3.6e-6): SCALE_SHARE 1e-2 leaves a margin of 1500. Gradients that are zero in
exact arithmetic (BERT's key biases, MLP-Mixer's token-MLP output biases, PoolFormer's norm biases ahead of a
normalisation) differ by up to 8.1e-9 G: NOISE_SHARE 1e-7 leaves a margin of 12 (3e-9 already fails 7 of them).
Below the floor a zeroed gradient cannot be told from rounding: weight_accounting counts such tensors per check.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pytest_parity.result import Comparison

SCALE_SHARE = 1e-2
NOISE_SHARE = 1e-7


def largest_magnitude(gradients: Iterable[np.ndarray | None]) -> float:
    """G: the largest finite |element| over the given gradients (0.0 when there are none)."""
    largest = 0.0
    for gradient in gradients:
        if gradient is None:
            continue
        values = np.abs(np.asarray(gradient, dtype=np.float64))
        values = values[np.isfinite(values)]
        if values.size:
            largest = max(largest, float(values.max()))
    return largest


def gradient_atol(own: float, grad_atol: float, overall: float, *, scale_share: float = SCALE_SHARE,
                  noise_share: float = NOISE_SHARE) -> float:
    """The absolute tolerance for one source gradient tensor whose largest |element| is ``own``, in a check whose
    largest gradient element is ``overall`` (see the module's docstring)."""
    return min(grad_atol, max(scale_share * own, noise_share * overall))


def zero_would_pass(comparison: Comparison) -> bool:
    """A zeroed target would pass this comparison: every |source| element <= atol + rtol |source| (exact zeros
    excluded: there a zero target is right, and unused weights are reported as such)."""
    scale = comparison.source_max_abs
    return 0.0 < scale * (1.0 - comparison.rtol) <= comparison.atol


def halved_would_pass(comparison: Comparison) -> bool:
    """A halved target would pass this comparison: |source| / 2 <= atol + rtol |source| for every element. Every
    tensor a zeroed target passes is one of these, and so is a tensor just above the rounding floor (its largest
    element between 1 and 2 floors), where the floor, not the tensor's own scale, decides."""
    scale = comparison.source_max_abs
    return 0.0 < scale * (0.5 - comparison.rtol) <= comparison.atol
