"""The first step and tensor that diverge in a training check, and the known convention most likely behind it.

The configuration diff names most causes before any step; this module ties a numerical divergence to one of them
(the mismatch that concerns the diverging layer), or reads the signature of the difference itself: a statistic that
moves on one side only (a BatchNorm kept in inference mode), an update off by one constant factor (learning rate or
loss scale), updates that differ only where the gradient is small (an optimizer epsilon).
"""

from __future__ import annotations

import numpy as np

from pytest_parity.result import Comparison, TrainingStep

# Share of a tensor's largest source update above which an element's update is "large" for the signature tests.
LARGE_UPDATE = 0.1


def first_divergence(steps: list[TrainingStep], order: list[str], configuration: list[str],
                     updates: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]],
                     hints: list[tuple[str | None, str]] | None = None) -> str | None:
    """'step 2: 'bn/moving_mean' (target 'bn.running_mean') differs first; likely cause: ...' or None on a pass.

    ``order``: tensor names in model order; ``updates``: (step, name) -> (source update, target update), in the
    target's layout, for the failing tensors of the first failing step; ``hints``: (a word the diverging tensor's name
    must hold, or None for any tensor; text): known framework differences that explain a divergence without failing
    by themselves (Keras' sparse Embedding updates)."""
    failing_step = next((step for step in steps if not step.passed), None)
    if failing_step is None:
        return None
    failing = {c.name: c for c in failing_step.failures()}
    first: Comparison | None = None
    for name in order:
        for key in (f"{name} (update)", name):
            if key in failing:
                first = failing[key]
                break
        if first is not None:
            break
    if first is None:
        first = failing.get("loss") or next(iter(failing.values()))
    tensor = first.name.removesuffix(" (update)")
    text = f"step {failing_step.step} of {len(steps)}: {first.name!r} diverges first"
    cause = _cause(tensor, configuration, updates.get((failing_step.step, tensor)), hints or [])
    return text + (f"; likely cause: {cause}" if cause else "")


# Which configuration entries most likely explain a divergence when none names the diverging layer: plain value
# mismatches first, the subtle conventions (epsilon) last.
CAUSE_ORDER = ("trainability", "BatchNormalization", "learning rate", "optimizer:", "optimizer beta",
               "optimizer momentum", "optimizer rho", "optimizer nesterov", "optimizer amsgrad", "optimizer centered",
               "optimizer dampening", "optimizer lr_decay", "optimizer initial", "gradient clipping", "weight decay",
               "loss", "dropout", "Adam epsilon", "optimizer epsilon")


def _rank(entry: str) -> int:
    return next((index for index, prefix in enumerate(CAUSE_ORDER) if entry.startswith(prefix)), len(CAUSE_ORDER))


def _cause(tensor: str, configuration: list[str], update: tuple[np.ndarray, np.ndarray] | None,
           hints: list[tuple[str | None, str]]) -> str | None:
    layer = tensor.rsplit("/", 1)[0].rsplit(".", 1)[0] if ("/" in tensor or "." in tensor) else tensor
    related = [entry for entry in configuration if layer and (f"'{layer}" in entry or f"'{tensor}'" in entry)]
    if related:
        return related[0]
    about_this_tensor = [text for word, text in hints if word is not None and word in tensor.lower()]
    if about_this_tensor:
        return about_this_tensor[0]
    if configuration:
        return sorted(configuration, key=_rank)[0]
    general = [text for word, text in hints if word is None]
    if general:
        return general[0]
    if update is not None:
        return _update_signature(*update)
    return None


def _update_signature(source: np.ndarray, target: np.ndarray) -> str | None:
    source, target = np.asarray(source, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    scale = float(np.max(np.abs(source), initial=0.0))
    target_scale = float(np.max(np.abs(target), initial=0.0))
    if scale == 0.0 and target_scale > 0.0:
        return ("the source leaves this tensor unchanged and the target updates it: frozen in the source "
                "(trainable=False / requires_grad=False), or a statistic the source does not update")
    if scale > 0.0 and target_scale == 0.0:
        return ("the target leaves this tensor unchanged: frozen in the target (requires_grad=False, trainable=False, "
                "not in the optimizer), a BatchNorm kept in inference mode, or a gradient that never reaches it "
                "(detach, no_grad)")
    large = np.abs(source) > LARGE_UPDATE * scale
    if not np.any(large):
        return None
    ratios = target[large] / source[large]
    median = float(np.median(ratios))
    if median > 0 and float(np.max(np.abs(ratios / median - 1.0))) < 1e-2 and abs(median - 1.0) > 1e-2:
        return (f"every update is {median:.4g} times the source's: a different learning rate, a loss scaled "
                f"differently (reduction 'sum' vs 'mean', a loss weight), or momentum/decay that scales the step")
    small = ~large & (np.abs(source) > 0)
    if np.any(small) and float(np.max(np.abs(ratios - 1.0))) < 1e-2:
        return ("the updates agree where the gradient is large and differ where it is small: an optimizer epsilon "
                "(Keras Adam's epsilon-hat vs torch's eps, or epsilon inside vs outside the square root)")
    return None
