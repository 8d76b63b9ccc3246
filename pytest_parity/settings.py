"""Marker arguments + ini + command line -> one validated, frozen ``ParitySettings``.

Precedence: ``parity.check(..., **overrides)`` > ``@pytest.mark.parity(...)`` > command line > ini > defaults.
Every value is checked here, so the rest of the code can trust it; a bad value raises ``ParityUsageError`` naming the
argument, what was given and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pytest_parity.errors import ParityUsageError
from pytest_parity.layouts import parse_layouts
from pytest_parity.session import INCONCLUSIVE_ACTIONS, KNOWN_DEVICES, parse_devices_option

__all__ = ["KNOWN_DEVICES", "MARKER_ARGUMENTS", "ParitySettings", "parse_devices_option", "resolve", "with_overrides"]

TIMED_CHOICES = ("forward", "forward_backward")
KNOWN_TARGETS = ("torch", "tensorflow")
TARGET_WEIGHTS_CHOICES = ("carried", "loaded")


@dataclass(frozen=True)
class ParitySettings:
    # Convert mode: the framework to convert the source into; None picks torch (TensorFlow -> torch, or PyTorch's
    # torch -> onnx -> torch round trip). "tensorflow" is known only to say why it cannot be done (no ONNX import).
    target: str | None = None
    devices: tuple[str, ...] = KNOWN_DEVICES
    atol: float = 1e-5
    rtol: float = 1e-4
    grad: bool = True
    # Default gradient tolerances: see benchmarks/gradient_tolerances.py for the measurements behind them.
    grad_atol: float = 1e-4
    grad_rtol: float = 1e-3
    # Training checks: each weight's update is compared within this share of the source's largest update of that
    # tensor (its own scale; benchmarks/training_tolerances.py measures correct ports and the smallest mutants).
    update_rtol: float = 1e-3
    # Largest allowed target/source time ratio; None: speed is not measured.
    speed: float | None = None
    # What speed times: "forward" (inference) or "forward_backward" (forward plus the vector-Jacobian product).
    timed: str = "forward"
    # What a gated speed= measurement whose interval still contains the limit after every look does to the test:
    # "warn" (passes with a ParitySpeedWarning), "fail", or "skip" (see timing).
    speed_inconclusive: str = "warn"
    seed: int = 0
    # Give all-constant weights (zero biases, unit BN scales, identity BN statistics) seeded random values before the
    # check, and restore them afterwards: converters drop zero biases and fold identity statistics, which would hide
    # exactly the porting bugs (a missing bias, a wrong epsilon) a parity test exists to catch.
    randomize_constant_weights: bool = True
    # Port mode: (source layout, target layout), e.g. ("NHWC", "NCHW"); inputs are given in the source's layout.
    layouts: tuple[str, str] | None = None
    # A failure whose only sign is a few gradient elements (a near-tie at a max-pool or ReLU kink) is re-checked with
    # the float inputs moved by a relative 1e-3, element by element: see near_ties.
    near_tie_retry: bool = True
    # Trainable source weights whose gradient the check could not compare (folded, merged, no counterpart): "fail"
    # (the check fails naming them), "allow" (a partial pass that says so), or names / fnmatch patterns to allow.
    unmatched_weights: str | tuple[str, ...] = "fail"
    # Port mode: the target's input and output names for the source's ((source name, target name), ...), given as a
    # dict, where two implementations name them differently (input_ids vs token_ids); see port/io_names.
    input_names: tuple[tuple[str, str], ...] | None = None
    # A source output mapped to None is not compared (a pooler output the target does not compute).
    output_names: tuple[tuple[str, str | None], ...] | None = None
    # Port mode: "carried" (the check writes the source's weights into the target) or "loaded" (the target keeps the
    # weights the user loaded into it, e.g. with their checkpoint converter; each carried tensor is compared with the
    # check's own transfer and a difference fails, naming the layout that would make it equal: see port/loaded).
    target_weights: str = "carried"


MARKER_ARGUMENTS = tuple(f.name for f in fields(ParitySettings))
# Arguments that decide how the test is parametrized cannot change inside the test.
NOT_OVERRIDABLE = ("devices",)


def _check_tolerance(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ParityUsageError(f"parity argument {name}={value!r} must be a number >= 0 (for example {name}=1e-5)")
    if value < 0 or math.isinf(value):
        raise ParityUsageError(f"parity argument {name}={value!r} must be a finite number >= 0; tolerances are "
                               f"absolute or relative bounds on |target - source|")
    return float(value)


def _check_devices(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value or not all(isinstance(d, str) for d in value):
        raise ParityUsageError(f"parity argument devices={value!r} must be a non-empty tuple of device names "
                               f"from {KNOWN_DEVICES}, for example devices=('cpu',)")
    unknown = [d for d in value if d not in KNOWN_DEVICES]
    if unknown:
        raise ParityUsageError(f"parity argument devices={tuple(value)!r}: unknown device {unknown[0]!r}; "
                               f"known devices are {KNOWN_DEVICES}")
    return tuple(dict.fromkeys(value))


def _check_value(name: str, value: Any) -> Any:
    if name in ("atol", "rtol", "grad_atol", "grad_rtol", "update_rtol"):
        return _check_tolerance(name, value)
    if name == "devices":
        return _check_devices(value)
    if name in ("grad", "randomize_constant_weights", "near_tie_retry"):
        if not isinstance(value, bool):
            raise ParityUsageError(f"parity argument {name}={value!r} must be True or False")
        return value
    if name == "seed":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise ParityUsageError(f"parity argument seed={value!r} must be an integer >= 0")
        return int(value)
    if name == "speed":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
            raise ParityUsageError(f"parity argument speed={value!r} must be None (not measured) or a number > 0: "
                                   f"the largest allowed ratio target time / source time, for example speed=1.5")
        return float(value)
    if name == "timed":
        if value not in TIMED_CHOICES:
            raise ParityUsageError(f"parity argument timed={value!r} must be one of {TIMED_CHOICES}: what speed= "
                                   f"times, inference forward passes or forward plus backward")
        return value
    if name == "speed_inconclusive":
        if value not in INCONCLUSIVE_ACTIONS:
            raise ParityUsageError(f"parity argument speed_inconclusive={value!r} must be one of "
                                   f"{INCONCLUSIVE_ACTIONS}: what a speed measurement too noisy to decide does to "
                                   f"the test")
        return value
    if name == "unmatched_weights":
        if value in ("fail", "allow"):
            return value
        if isinstance(value, str):
            value = (value,)
        if (isinstance(value, (list, tuple)) and value and all(isinstance(item, str) and item for item in value)):
            return tuple(value)
        raise ParityUsageError(f"parity argument unmatched_weights={value!r} must be 'fail' (a weight whose gradient "
                               f"could not be compared fails the check), 'allow' (a partial pass, reported), or a "
                               f"non-empty list of weight names or fnmatch patterns to allow, e.g. ['bn/*']")
    if name in ("input_names", "output_names"):
        return _check_names(name, value)
    if name == "target_weights":
        if value not in TARGET_WEIGHTS_CHOICES:
            raise ParityUsageError(f"parity argument target_weights={value!r} must be one of {TARGET_WEIGHTS_CHOICES}: "
                                   f"'carried' (port mode writes the source's weights into the target) or 'loaded' "
                                   f"(the target keeps the weights you loaded into it, and the check compares them "
                                   f"with its own transfer)")
        return value
    if name == "layouts":
        pair = parse_layouts(value)
        return None if pair is None else (pair.source, pair.target)
    if name == "target":
        if value is not None and value not in KNOWN_TARGETS:
            raise ParityUsageError(f"parity argument target={value!r}: convert mode can target {KNOWN_TARGETS} "
                                   f"(or None: torch, the framework ONNX models are imported into)")
        return value
    raise AssertionError(f"unhandled parity argument {name}")  # pragma: no cover - MARKER_ARGUMENTS and this agree


def _check_names(name: str, value: Any) -> tuple[tuple[str, str | None], ...] | None:
    if value is None:
        return None
    kind = "inputs" if name == "input_names" else "outputs"
    example = "{'input_ids': 'token_ids'}" if kind == "inputs" else "{'last_hidden_state': 'sequence_output'}"
    # output_names only: None says a source output is not compared (the target does not compute it).
    if (not isinstance(value, Mapping) or not value
            or not all(isinstance(k, str) and k and ((isinstance(v, str) and v) or (v is None and kind == "outputs"))
                       for k, v in value.items())):
        raise ParityUsageError(f"parity argument {name}={value!r} must be a non-empty dict from the source's "
                               f"{kind} names to the target's, for example {name}={example}"
                               + (" (None for a source output that is not to be compared)" if kind == "outputs"
                                  else ""))
    named = [v for v in value.values() if v is not None]
    if len(set(named)) != len(named):
        raise ParityUsageError(f"parity argument {name}={dict(value)!r} gives two source {kind} the same target "
                               f"name; each source name must map to its own target name")
    return tuple((str(k), None if v is None else str(v)) for k, v in value.items())


def _unknown_arguments(given: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ParityUsageError(f"{where} got unknown argument(s) {', '.join(unknown)}; "
                               f"allowed: {', '.join(allowed)}")


def resolve(base: ParitySettings, marker_args: tuple[Any, ...], marker_kwargs: dict[str, Any]) -> ParitySettings:
    """Apply ``@pytest.mark.parity(...)`` arguments on top of the session-wide settings."""
    if marker_args:
        raise ParityUsageError(f"@pytest.mark.parity takes keyword arguments only, got positional {marker_args!r}; "
                               f"allowed: {', '.join(MARKER_ARGUMENTS)}")
    _unknown_arguments(marker_kwargs, MARKER_ARGUMENTS, "@pytest.mark.parity")
    return replace(base, **{name: _check_value(name, value) for name, value in marker_kwargs.items()})


def with_overrides(settings: ParitySettings, overrides: dict[str, Any]) -> ParitySettings:
    """Apply ``parity.check(..., **overrides)``; the names are the marker's."""
    allowed = tuple(name for name in MARKER_ARGUMENTS if name not in NOT_OVERRIDABLE)
    fixed = sorted(set(overrides) & set(NOT_OVERRIDABLE))
    if fixed:
        raise ParityUsageError(f"parity.check() cannot override {', '.join(fixed)}: it decides how the test is "
                               f"parametrized, so set it in @pytest.mark.parity(...) instead")
    _unknown_arguments(overrides, allowed, "parity.check()")
    return replace(settings, **{name: _check_value(name, value) for name, value in overrides.items()})
