"""The object behind the ``parity`` fixture.

This is the boundary between pytest and the checking code: usage errors become failures with just their message
(no internal traceback), missing frameworks and devices become skips, and every finished check is recorded for the
summary and the report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pytest_parity import settings
from pytest_parity.errors import DeviceUnavailable, FrameworkNotInstalled, ParityError, ParityUsageError
from pytest_parity.reports import records as report
from pytest_parity.result import ParityResult
from pytest_parity.seeding import seed_frameworks
from pytest_parity.session import ParitySession


def seed_key(item: pytest.Item) -> str:
    """The test's identity for seeding, without its device: cpu and cuda runs get the same inputs.

    Built from the parametrize ids (what the test id shows), not from repr() of the values: a value without a
    stable repr (a builder function, an object) has a memory address in it, which would draw different weights and
    inputs for the same test id on every run."""
    base = item.nodeid.split("[", 1)[0]
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return base
    ids = list(getattr(callspec, "_idlist", ()))
    device = callspec.params.get("parity")
    if device in ids:  # the plugin's own parametrization contributes the device as one id: leave it out
        del ids[len(ids) - 1 - ids[::-1].index(device)]
    return base + "|" + "-".join(ids) if ids else base


class ParityFixture:
    """Checks that a model and its counterpart in the other framework agree.

    check(source, target=None, *, inputs, **overrides) -> ParityResult
        Convert ``source`` (a Keras model, tf.Module or torch.nn.Module) through ONNX to the other framework, run
        both on ``inputs`` on ``device``, and compare outputs and gradients (vector-Jacobian products with a seeded
        random cotangent, with respect to every input and weight). Raises ParityError naming every tensor that
        differs. ``overrides`` take the marker's argument names (atol, rtol, grad, grad_atol, grad_rtol, speed, ...).
    check_training(source, target, *, batches, loss, optimizer, steps=None, train_step=None, **overrides)
        -> ParityResult
        Train ``source`` and its port ``target`` (the other framework) from the same weights, step by step, with
        the user's own optimizers and losses (pairs: source's, target's) on ``batches`` (a list of (inputs, labels)
        numpy pairs), the same Dropout masks on both sides; compare the configurations (optimizer, BatchNorm,
        Dropout, loss, trainability) and, after every step, the loss, every weight and statistic and each update.
        Raises ParityError naming the first step and tensor that diverge and the likely cause.
    check_across_devices(model, *, inputs, **overrides) -> ParityResult
        Run one model (Keras, tf.Module or torch.nn.Module) on the CPU, the reference, and on cuda in the same
        framework, with the same inputs, weights and cotangent, and compare outputs and gradients: is the model
        device-stable? Skipped when the framework sees no GPU; ``parity.device`` plays no part. ``overrides``: atol,
        rtol, grad, grad_atol, grad_rtol, seed, randomize_constant_weights.
    randn(*shape) -> numpy.ndarray
        Seeded float32 standard-normal array: the same values for the same test and seed on every machine.
    randint(low, high, shape) -> numpy.ndarray
        Seeded int64 array uniform over [low, high) (token ids, class labels), seeded like randn from a stream of its
        own: the same values for the same test and seed on every machine, and mixing it with randn changes neither.
    device
        "cpu" or "cuda": the device this run of the test checks on (the test is parametrized over devices).
    settings
        The validated ParitySettings in force for this test.
    """

    def __init__(self, request: pytest.FixtureRequest, session: ParitySession, device: str) -> None:
        from pytest_parity.seeding import seeded_generator

        self.device = device
        self._request = request
        self._session = session
        marker = request.node.get_closest_marker("parity")
        invalid: str | None = None
        try:
            base = settings.ParitySettings(seed=session.seed, speed_inconclusive=session.speed_inconclusive)
            self.settings = settings.resolve(base, marker.args if marker else (), marker.kwargs if marker else {})
        except ParityUsageError as error:
            invalid = str(error)
        if invalid is not None:
            self._record_refused("-", invalid)  # every check of this test is refused: the marker is invalid
            pytest.fail(invalid, pytrace=False)
        self._seed_key: str = seed_key(request.node)
        self._input_generator: np.random.Generator = seeded_generator(self._seed_key, self.settings.seed, "inputs")
        seed_frameworks(int(seeded_generator(self._seed_key, self.settings.seed, "frameworks").integers(2**31)))

    def randn(self, *shape: Any) -> np.ndarray:
        __tracebackhide__ = True
        sizes: tuple[Any, ...] = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        if not all(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 0 for size in sizes):
            # Raised (not pytest.fail) so a test can expect it; __tracebackhide__ keeps this frame out of the report.
            raise ParityUsageError(f"parity.randn{sizes!r}: the shape must be non-negative integers, for example "
                                   f"parity.randn(8, 32, 32, 3)")
        return self._input_generator.standard_normal(tuple(int(size) for size in sizes)).astype(np.float32)

    def randint(self, low: Any, high: Any, shape: Any) -> np.ndarray:
        __tracebackhide__ = True
        call = f"parity.randint({low!r}, {high!r}, {shape!r})"
        if not all(isinstance(bound, (int, np.integer)) and not isinstance(bound, bool) for bound in (low, high)):
            raise ParityUsageError(f"{call}: low and high must be integers (the values drawn are low <= v < high), for "
                                   f"example parity.randint(0, 1000, (2, 16)) for token ids of a 1000-word vocabulary")
        if low == high:
            raise ParityUsageError(f"{call}: low == high leaves no value to draw (high is excluded): for the constant "
                                   f"{low} write parity.randint({low}, {int(low) + 1}, {shape!r})")
        if low > high:
            raise ParityUsageError(f"{call}: low must be less than high (high is excluded); swap them: "
                                   f"parity.randint({high!r}, {low!r}, {shape!r})")
        if low < -2**63 or high > 2**63:
            raise ParityUsageError(f"{call}: the values are int64, so low and high must lie within -2**63 .. 2**63")
        sizes = ((shape,) if isinstance(shape, (int, np.integer))
                 else tuple(shape) if isinstance(shape, (tuple, list)) else None)
        if sizes is None or not all(isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 0
                                    for size in sizes):
            raise ParityUsageError(f"{call}: the shape must be a non-negative integer or a tuple of them, for example "
                                   f"parity.randint(0, 1000, (2, 16))")
        if "_integer_generator" not in self.__dict__:
            from pytest_parity.seeding import seeded_generator

            # A stream of its own: adding a randint call leaves every randn value of the test as it was.
            self._integer_generator = seeded_generator(self._seed_key, self.settings.seed, "integer-inputs")
        return self._integer_generator.integers(int(low), int(high), tuple(int(size) for size in sizes),
                                                dtype=np.int64, endpoint=False)

    def check(self, source: Any, target: Any = None, *, inputs: Any, **overrides: Any) -> ParityResult:
        __tracebackhide__ = True
        if isinstance(target, str):
            # parity.check(model, "tensorflow", ...) or target="tensorflow": the override the README lists, not a
            # second model; the marker's target= and this one are checked by the same code.
            overrides = {**overrides, "target": target}
            target = None
        from pytest_parity.check import run_check
        from pytest_parity.seeding import seeded_generator
        from pytest_parity.verdict.near_ties import check_confirming_near_ties

        in_force: list[settings.ParitySettings] = []

        def run() -> ParityResult:
            if isinstance(target, (np.ndarray, list, tuple, dict)):
                raise ParityUsageError(
                    f"parity.check(model, <{type(target).__module__}.{type(target).__qualname__}>, ...): the second "
                    f"positional argument is the "
                    f"target model of a port check, and inputs go by keyword: parity.check(model, inputs=x) checks a "
                    f"model against its conversion, parity.check(source, target, inputs=x) a port")
            effective = settings.with_overrides(self.settings, overrides)
            in_force.append(effective)
            if self._session.speed_mode == "off":
                effective = replace(effective, speed=None)

            def attempt(attempt_inputs: Any) -> ParityResult:
                return run_check(source, target, attempt_inputs, effective, self.device, self._seed_key,
                                 speed_gate=self._session.speed_mode in ("gate", "force"),
                                 cache=self._session.conversion_cache)

            return check_confirming_near_ties(attempt, inputs, effective.near_tie_retry,
                                              seeded_generator(self._seed_key, effective.seed, "near-ties"))

        result = self._against_baseline(self._run_and_record(run, _intended_route(source, target, overrides)))
        return self._speed_inconclusive(result, in_force[-1].speed_inconclusive)

    def _speed_inconclusive(self, result: ParityResult, action: str) -> ParityResult:
        """A passing check whose gated speed= measurement could not decide: warn or skip, as the user chose (a
        "fail" choice already failed the check: timing counts such a measurement as not passed)."""
        __tracebackhide__ = True
        speed = result.speed
        if speed is None or not speed.inconclusive or not result.passed:
            return result
        from pytest_parity.verdict import timing

        text = f"{self._request.node.nodeid}: {timing.describe(speed)}"
        if action == "skip":
            pytest.skip(text)
        import warnings

        from pytest_parity.errors import ParitySpeedWarning

        warnings.warn(ParitySpeedWarning(text), stacklevel=3)
        return result

    def check_training(self, source: Any, target: Any = None, *, batches: Any, loss: Any, optimizer: Any,
                       steps: int | None = None, train_step: Any = None, **overrides: Any) -> ParityResult:
        __tracebackhide__ = True
        from pytest_parity.check import run_training_check

        def run() -> ParityResult:
            effective = replace(settings.with_overrides(self.settings, overrides), speed=None)
            return run_training_check(source, target, batches=batches, loss=loss, optimizer=optimizer, steps=steps,
                                      train_step=train_step, settings=effective, device=self.device,
                                      seed_key=self._seed_key)

        return self._run_and_record(run, _intended_route(source, target, overrides).replace("port:", "training:"))

    def check_across_devices(self, model: Any, *, inputs: Any, **overrides: Any) -> ParityResult:
        __tracebackhide__ = True
        from pytest_parity.modes import cross_device

        def run() -> ParityResult:
            effective = cross_device.settings_for(self.settings, overrides)
            return cross_device.check_across_devices(model, inputs, effective, self._seed_key)

        return self._run_and_record(run, "cross-device")

    def _run_and_record(self, run: Callable[[], ParityResult], route: str) -> ParityResult:
        """Usage errors -> failures with just their message (recorded as refused checks under ``route``), missing
        frameworks/devices -> skips, results recorded."""
        __tracebackhide__ = True
        # pytest.skip/fail are called outside the except blocks, so the report does not chain the internal exception.
        skip_reason = usage_error = None
        try:
            result = run()
        except (FrameworkNotInstalled, DeviceUnavailable) as reason:
            skip_reason = str(reason)
        except ParityUsageError as error:
            usage_error = str(error)
        except ParityError as failure:
            if failure.result is not None:
                self._record(failure.result)
            # Re-raised from here so the traceback starts at the user's test, not inside the plugin.
            raise failure.with_traceback(None) from None
        if skip_reason is not None:
            pytest.skip(skip_reason)
        if usage_error is not None:
            self._record_refused(route, usage_error)
            pytest.fail(usage_error, pytrace=False)
        self._record(result)
        return result

    def _record_refused(self, route: str, reason: str) -> None:
        entry = report.refused_record(self._request.node.nodeid, self.device, route, reason)
        self._session.records.append(entry)
        self._request.node.user_properties.extend(
            ("parity_" + name, value) for name, value in report.key_figures(entry).items())

    def _against_baseline(self, result: ParityResult) -> ParityResult:
        """With --parity-baseline: a check that passed its tolerances but drifted from the baseline fails."""
        __tracebackhide__ = True
        baseline = self._session.baseline
        old = None if baseline is None else baseline.entries.get((self._request.node.nodeid, result.device))
        if old is None:
            return result
        from pytest_parity.reports import baseline as baselines

        result.drift = baselines.drift(report.record(self._request.node.nodeid, result), old,
                                       self._session.baseline_factor, self._session.baseline_speed_tolerance)
        if not result.drift:
            return result
        self._session.records[-1].update(passed=False, drift=list(result.drift))
        self._request.node.user_properties.append(("parity_drift", "; ".join(result.drift)))
        raise ParityError(f"parity check drifted from the baseline {baseline.path} ({result.route} on {result.device}):"
                          f"\n" + "\n".join(f"  {problem}" for problem in result.drift), result).with_traceback(None)

    def _record(self, result: ParityResult) -> None:
        """Into the session's records (summary, JSON report) and, as key figures, into the test's user_properties,
        which pytest writes as <property> elements in JUnit XML."""
        entry = report.record(self._request.node.nodeid, result)
        self._session.records.append(entry)
        self._session.import_s += result.import_s
        checks_in_test = sum(1 for name, _ in self._request.node.user_properties if name.endswith("parity_route"))
        prefix = "parity_" if checks_in_test == 0 else f"parity{checks_in_test + 1}_"
        self._request.node.user_properties.extend(
            (prefix + name, value) for name, value in report.key_figures(entry).items())


def _intended_route(source: Any, target: Any, overrides: dict[str, Any]) -> str:
    """The route a check was asked for, named before it runs (for a refused check's record); no framework import."""
    from pytest_parity.frameworks import detect_framework

    try:
        source_framework = detect_framework(source)
        if target is not None:
            return f"port: {source_framework} -> {detect_framework(target)}"
    except ParityUsageError:
        return "-"
    wanted = overrides.get("target")
    return f"{source_framework} -> onnx -> {wanted if isinstance(wanted, str) else 'torch'}"


def _body_imports_tensorflow(request: pytest.FixtureRequest) -> bool:
    """The test function names keras or TensorFlow (``import keras`` inside the body, a ``_keras_block`` helper) and
    TensorFlow is installed: the body is about to start TensorFlow, so the fixture starts it first, quietly. A test
    that only names them pays the import a little earlier than it would have anyway; any other test pays nothing."""
    code = getattr(getattr(request, "function", None), "__code__", None)
    names = " ".join(code.co_names).lower() if code is not None else ""
    if "keras" not in names and "tensorflow" not in names:
        return False
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def make_fixture(request: pytest.FixtureRequest, session: ParitySession) -> ParityFixture:
    device = getattr(request, "param", None) or session.devices[0]
    if sys.modules.get("tensorflow") is not None or _body_imports_tensorflow(request):
        # The test's module imported TensorFlow, or its body will: finish its start-up here, with its notices
        # filtered (startup_logs), before the test body builds a model and TensorFlow prints "failed call to cuInit"
        # into the test's output.
        from pytest_parity.frameworks.tensorflow import import_tensorflow

        import_tensorflow()
    if device == "cuda":
        from pytest_parity.frameworks import devices

        reason = devices.cuda_skip_reason_torch()
        if reason:
            pytest.skip(reason)
    return ParityFixture(request, session, device)
