"""Weights trainable on one side of a port and frozen on the other (requires_grad=False, trainable=False).

Such a pair computes the same outputs, so nothing else in a check shows it, yet training the two models updates one and
not the other. A source weight that is frozen is not among the source's trainable weights, so without this it would
silently leave the weight account ("weights compared 10 of 10"); a target weight that is frozen has no gradient to
compare. Each is named with the layer and the flag on each side, and fails the check (weight_accounting).
"""

from __future__ import annotations

from collections.abc import Iterable

from pytest_parity.modes.port.transfer import TransferPlan, matching_parts
from pytest_parity.verdict.weight_accounting import FROZEN_ON_ONE_SIDE


def frozen_on_one_side(plan: TransferPlan, source_trainable: Iterable[str], target_trainable: Iterable[str],
                       source_framework: str, target_framework: str) -> dict[str, str]:
    """Source weight -> why, for each carried weight whose counterpart in the target is trainable where it is frozen,
    or frozen where it is trainable. Weights frozen on both sides (running statistics, a frozen backbone) are fine."""
    source_set, target_set = set(source_trainable), set(target_trainable)
    found: dict[str, str] = {}
    for pair in plan.pairs:
        for key, source_binding in pair.source.bindings.items():
            for source_part, target_part in matching_parts(source_binding, pair.target.bindings[key]):
                # One tensor held by a sum on the other side (Keras' single LSTM bias as torch's bias_ih + bias_hh)
                # trains when any of its terms does: the exact port of that bias keeps bias_hh at zero, frozen. How
                # many terms train changes how far the sum moves per step, which the training check compares.
                if len(source_part.variables) != len(target_part.variables) and (
                        any(name in source_set for name in source_part.variables)
                        == any(name in target_set for name in target_part.variables)):
                    continue
                for source_name in source_part.variables:
                    for target_name in target_part.variables:
                        source_trains, target_trains = source_name in source_set, target_name in target_set
                        if source_trains == target_trains or source_name in found:
                            continue
                        found[source_name] = (
                            f"{FROZEN_ON_ONE_SIDE} {source_name!r} (layer {pair.source.layer!r}, {pair.source.kind}) "
                            f"is {_flag(source_framework, source_trains)} in the source, but its counterpart "
                            f"{target_name!r} (layer {pair.target.layer!r}, {pair.target.kind}) is "
                            f"{_flag(target_framework, target_trains)} in the target: the outputs agree, but training "
                            f"would update one and not the other. Make them alike: "
                            + (f"{_unfreeze(target_framework, target_name, pair.target.layer)}, or "
                               f"{_freeze(source_framework, source_name, pair.source.layer)}" if source_trains else
                               f"{_unfreeze(source_framework, source_name, pair.source.layer)}, or "
                               f"{_freeze(target_framework, target_name, pair.target.layer)}"))
    return found


def _flag(framework: str, trains: bool) -> str:
    return f"requires_grad={trains}" if framework == "torch" else f"trainable={trains}"


def _unfreeze(framework: str, name: str, layer: str) -> str:
    if framework == "torch":
        return f"set requires_grad=True on {name!r} (it is frozen)"
    return f"set trainable=True on layer {layer!r} (it is frozen)"


def _freeze(framework: str, name: str, layer: str) -> str:
    if framework == "torch":
        return f"freeze {name!r} too (requires_grad_(False))"
    return f"freeze layer {layer!r} too (trainable=False)"
