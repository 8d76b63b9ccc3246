"""Which trainable weights a check compared, and the verdict's claim about them (shared by convert and port mode).

A PASS says every trainable weight's gradient was compared. A weight the check could not follow into the target (a
converter folded it into another tensor, merged it with an equal one, a port has no counterpart for it) is named with
the reason and fails the check, unless the user accepted it by name or pattern (unmatched_weights=): then the pass
is partial, and says so. A weight whose source gradient is absent or exactly zero on these inputs does not influence
the outputs: it is reported as unused, not as a failure. A weight trainable on one side of a port and frozen on the
other always fails, whatever unmatched_weights= accepts: it is a defect of the port, not a limit of the check.

``result.unmatched_weights`` (the weights the check found no counterpart for) and the account describe the same weights
alike: ``unmatched_reasons`` gives an unused weight the account's reason, and says of a non-trainable tensor (a buffer,
a frozen weight) that it is not trainable, so not part of the account, instead of a converter's folding.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any

import numpy as np

from pytest_parity.result import Comparison, WeightAccount
from pytest_parity.verdict import tolerances

# How the reason for a weight trainable on one side only begins (modes/port/trainability): the failure's advice for it
# is to make the two sides alike, not to accept a partial pass.
FROZEN_ON_ONE_SIDE = "trainable on one side only:"
# How ``unmatched_reasons`` begins the reason of a weight the account reports as unused, and of a non-trainable tensor.
UNUSED = "unused:"
NOT_TRAINABLE = "not trainable:"


def account_weights(trainable: Iterable[str], compared: Iterable[str], why_not_compared: dict[str, str],
                    source_gradients: dict[str, Any] | None, accepted: str | tuple[str, ...],
                    gradients_checked: bool, comparisons: dict[str, Comparison] | None = None,
                    zero_in_exact_arithmetic: Iterable[str] = (),
                    frozen_on_one_side: dict[str, str] | None = None) -> WeightAccount:
    """``why_not_compared``: reasons the mode knows for weights it could not follow; any other trainable weight
    that was not compared gets a generic one. ``accepted``: "fail" (none), "allow" (all), or names / fnmatch
    patterns. ``comparisons``: the gradient comparisons, to find those a zeroed target would also pass;
    ``zero_in_exact_arithmetic``: those of them a float64 run showed to be zero (there a zero target is right).
    The others are not comparisons a wrong value would fail: not compared, with the reason.
    ``frozen_on_one_side``: weights trainable on one side of a port and frozen on the other, with the reason; they
    count among the trainable weights (even when it is the source that freezes them) and are never compared, unused
    or accepted."""
    frozen = frozen_on_one_side or {}
    trainable = list(dict.fromkeys([*trainable, *frozen]))
    if not gradients_checked:
        # grad=False: the user asked for no gradients at all; the account says so instead of failing each weight.
        return WeightAccount(total=len(trainable), compared=0, gradients_checked=False)
    done = set(compared)
    uncompared: dict[str, str] = {}
    allowed: dict[str, str] = {}
    unused: dict[str, str] = {}
    comparisons = comparisons or {}
    for name in trainable:
        if name in frozen:
            uncompared[name] = frozen[name]
            continue
        if name in done:
            # Matched, but with no gradient in the source on these inputs (None, or exactly zero: a saturated
            # softmax, a branch behind dead ReLUs, an argmax): a zeroed target would pass its comparison, so it
            # checked only that the target's is zero too. Reported as unused here, not counted as compared.
            if (source_gradients is not None and name in source_gradients and _no_influence(source_gradients[name])
                    and (name not in comparisons or comparisons[name].passed)):
                unused[name] = ("its gradient is zero in the source on these inputs, and in the target too: it does "
                                "not influence the outputs here, so no wrong value of it could show")
            continue
        reason = why_not_compared.get(name, "the check found no tensor in the target that it corresponds to")
        if source_gradients is not None and _no_influence(source_gradients.get(name)):
            unused[name] = ("its gradient in the source is zero on these inputs: it does not influence the outputs, "
                            "so there is nothing to compare")
        elif _accepted(name, accepted):
            allowed[name] = reason
        else:
            uncompared[name] = reason
    exact_zero = set(zero_in_exact_arithmetic)
    near_zero = [name for name in trainable
                 if name in done and name not in frozen and name in comparisons
                 and tolerances.halved_would_pass(comparisons[name])]
    # A comparison a halved (or zeroed) target would pass, where no float64 run told a zero gradient from a vanished
    # one, is not a comparison a wrong value would fail: the weight counts as not compared (allowed by name for a
    # partial pass).
    within_rounding = [name for name in near_zero if name not in exact_zero]
    for name in within_rounding:
        comparison = comparisons[name]
        reason = (f"its whole source gradient (max |g| {comparison.source_max_abs:.3g}) lies within twice the "
                  f"check's float32 rounding floor ({comparison.atol:.3g}), so a halved or zeroed target gradient "
                  f"would pass too, and no float64 run could measure this tensor's own rounding to judge it at its own "
                  f"scale (one is made of the PyTorch side only, when it can run in float64)")
        (allowed if _accepted(name, accepted) else uncompared)[name] = reason
    return WeightAccount(total=len(trainable),
                         compared=sum(1 for name in trainable
                                      if name in done and name not in within_rounding and name not in unused
                                      and name not in frozen),
                         uncompared=uncompared, allowed=allowed, unused=unused,
                         within_rounding_of_zero=tuple(within_rounding),
                         zero_in_exact_arithmetic=tuple(name for name in near_zero if name in exact_zero))


def _no_influence(gradient: Any) -> bool:
    return gradient is None or not np.any(np.asarray(gradient))


def _accepted(name: str, accepted: str | tuple[str, ...]) -> bool:
    if accepted == "allow":
        return True
    if isinstance(accepted, str):
        return False
    return any(name == pattern or fnmatch.fnmatchcase(name, pattern) for pattern in accepted)


def uncompared_section(account: WeightAccount, limit: int) -> list[str]:
    """The failure message's lines for weights whose gradient was not compared (empty when there are none)."""
    if not account.uncompared:
        return []
    lines = [f"weights: the gradients of {len(account.uncompared)} of {account.total} trainable weight(s) were not "
             f"compared, so the check cannot claim they agree"]
    for name, reason in list(account.uncompared.items())[:limit]:
        lines.append(f"  weight {name!r}: {reason}")
    if len(account.uncompared) > limit:
        lines.append(f"  ... and {len(account.uncompared) - limit} more")
    frozen = [reason for reason in account.uncompared.values() if reason.startswith(FROZEN_ON_ONE_SIDE)]
    if len(frozen) < len(account.uncompared):
        lines.append("  What you can do: give the weights distinct, non-constant values if they are equal or "
                     "constant; or accept a partial pass for these weights by name with unmatched_weights=[...] "
                     "(fnmatch patterns allowed), or unmatched_weights='allow' for all; the result then says which "
                     "were not compared")
    if frozen:
        lines.append("  A weight trainable on one side only is a defect of the port, not a limit of the check: "
                     "freeze or unfreeze the layer alike on both sides (requires_grad in PyTorch, trainable in "
                     "Keras), as each line says; unmatched_weights= does not accept it")
    return lines


def unmatched_reasons(unmatched: dict[str, str], account: WeightAccount | None, trainable: Iterable[str],
                      reasons_known: bool = False) -> dict[str, str]:
    """``result.unmatched_weights`` told as the weight account tells the same weights: a weight the account reports
    unused gets its reason, prefixed ``unused:``; a tensor that is not trainable (a buffer such as a rotary embedding's
    inverse frequencies, a frozen weight) is not in the account, and says so, prefixed ``not trainable:``, instead of a
    reason written for a trainable weight (a converter folding it into another tensor). The others keep theirs.
    ``reasons_known``: the mode's reasons are facts (port mode: a layer never called), kept after the prefix; convert
    mode's are the likeliest cause of a tensor not found, which the account's reason replaces."""
    trainable = set(trainable)
    unused = account.unused if account is not None else {}
    reasons: dict[str, str] = {}
    for name, reason in unmatched.items():
        known = f" ({reason})" if reasons_known else ""
        if name in unused:
            reasons[name] = f"{UNUSED} {unused[name]}{known}"
        elif name not in trainable:
            reasons[name] = (f"{NOT_TRAINABLE} it has no gradient, so it is not part of the weight account{known}; no "
                             f"tensor of the target was found to hold its values (a buffer the forward pass does not "
                             f"read, or one folded into another tensor). Where the model reads it, the outputs "
                             f"comparison covers it")
        else:
            reasons[name] = reason
    return reasons
