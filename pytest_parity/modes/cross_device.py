"""The cross-device check: one model, one framework, on the CPU (the reference) and on cuda.

``parity.check_across_devices(model, inputs=x)`` answers "is my model device-stable?": a custom kernel, an op whose GPU
implementation differs (a different reduction order, TF32, a non-deterministic scatter), or code that handles devices
by hand shows up as outputs or gradients that differ between the two runs. Same contract as ``parity.check``: constant
weights are randomized for the check and restored after, outputs and vector-Jacobian products (seeded cotangent, with
respect to every input and trainable weight) are compared, with the CPU run as the reference, and a failure raises
``ParityError`` naming every tensor that differs. Nothing crosses frameworks, so no ONNX is involved.
"""

from __future__ import annotations

import time
from typing import Any

from pytest_parity.errors import DeviceUnavailable, ParityError, ParityUsageError, error_summary
from pytest_parity.frameworks import ModelAdapter, ModelInputs, detect_framework, devices, flatten_inputs
from pytest_parity.frameworks.adapters import load_adapter
from pytest_parity.modes.steps import (
    checked_model,
    make_cotangent_source,
    refuse_non_finite,
    run_source,
)
from pytest_parity.result import ParityResult
from pytest_parity.settings import ParitySettings, with_overrides
from pytest_parity.verdict import compare, float64_referee
from pytest_parity.verdict.gradients import compare_gradients, input_label
from pytest_parity.verdict.messages import failure_message
from pytest_parity.verdict.weight_accounting import account_weights

REFERENCE_DEVICE = "cpu"
TARGET_DEVICE = "cuda"
# What a cross-device check can be told per call; the rest (target, layouts, speed, timed) concerns two models.
CROSS_DEVICE_ARGUMENTS = ("atol", "rtol", "grad", "grad_atol", "grad_rtol", "seed", "randomize_constant_weights",
                          "unmatched_weights")


def settings_for(base: ParitySettings, overrides: dict[str, Any]) -> ParitySettings:
    """The marker's settings with ``check_across_devices(..., **overrides)`` applied; other names are refused."""
    refused = sorted(set(overrides) - set(CROSS_DEVICE_ARGUMENTS))
    if refused:
        raise ParityUsageError(f"parity.check_across_devices() got argument(s) {', '.join(refused)} it does not take "
                               f"(it checks one model against itself on another device); allowed: "
                               f"{', '.join(CROSS_DEVICE_ARGUMENTS)}")
    return with_overrides(base, overrides)


def require_cuda(framework: str) -> None:
    """DeviceUnavailable (a skip) with the framework's own reason when it cannot run on cuda here."""
    if framework == "torch":
        reason = devices.cuda_skip_reason_torch()
    else:
        from pytest_parity.frameworks.tensorflow import import_tensorflow

        reason = devices.cuda_skip_reason_tensorflow(import_tensorflow())
    if reason:
        raise DeviceUnavailable(reason)


def check_across_devices(model: Any, inputs: Any, settings: ParitySettings, seed_key: str, *,
                         target_device: str | None = None) -> ParityResult:
    """Run ``model`` on the CPU and on ``target_device`` (default ``TARGET_DEVICE``, cuda) with the same inputs and
    cotangent, and compare. Tests point it at "cpu" to run the whole comparison on a machine without a GPU.
    """
    target_device = target_device or TARGET_DEVICE
    framework = detect_framework(model)
    model_inputs = flatten_inputs(inputs)
    if target_device == "cuda":
        require_cuda(framework)
    adapter = load_adapter(framework, model)
    with checked_model(adapter, model_inputs, REFERENCE_DEVICE, settings, seed_key) as prepared:
        return _compare_runs(adapter, prepared, settings, seed_key, target_device)


def _compare_runs(adapter: ModelAdapter, inputs: ModelInputs, settings: ParitySettings, seed_key: str,
                  target_device: str) -> ParityResult:
    cotangents, make_cotangents = make_cotangent_source(seed_key, settings.seed)
    started = time.perf_counter()
    # TF32 off for the cuda run: it would make every float32 matmul differ from the CPU by ~3e-4 relative.
    with devices.exact_float32({adapter.framework}, target_device):
        reference_outputs, reference_input_grads, reference_weight_grads = run_source(
            adapter, inputs, REFERENCE_DEVICE, make_cotangents if settings.grad else None)
        refuse_non_finite(reference_outputs, "output", adapter.description)
        target_outputs, target_input_grads, target_weight_grads = _run_target(
            adapter, inputs, target_device, cotangents if settings.grad else None)
    run_s = time.perf_counter() - started

    outputs = compare.compare_trees(target_outputs, reference_outputs, atol=settings.atol, rtol=settings.rtol)
    grads = None
    zero_in_exact_arithmetic: tuple[str, ...] = ()
    names: list[str] = []
    if settings.grad:
        reference_weight_grads = reference_weight_grads or {}
        target_weight_grads = target_weight_grads or {}
        # A weight the outputs do not depend on has no gradient on either device (TensorFlow returns None, PyTorch
        # too with allow_unused): nothing to compare, and the account reports it unused. One missing on one device
        # only is reported as a failure.
        names = [name for name in adapter.trainable_names()
                 if reference_weight_grads.get(name) is not None or target_weight_grads.get(name) is not None]
        grads = compare_gradients(inputs, reference_input_grads or [], target_input_grads or [],
                                  reference_weight_grads, target_weight_grads, names, settings)
        # Gradients the rounding floor decides are judged at their own scale, as in the other modes: a float64 run
        # of the model on the CPU (PyTorch only; a TensorFlow model's stay unresolved and are named).
        near_zero = float64_referee.judge_near_zero(
            grads, [input_label(inputs, name) for name in inputs.names],
            (reference_input_grads or [], reference_weight_grads), (target_input_grads or [], target_weight_grads),
            True, lambda: _run_in_float64(adapter, inputs, cotangents, names), grad_atol=settings.grad_atol)
        grads, zero_in_exact_arithmetic = near_zero.grads, near_zero.zero_in_exact_arithmetic
    # The same model on both devices, so every weight is followed; the account still says which gradients could be
    # compared with a tolerance a wrong value would exceed.
    account = account_weights(adapter.trainable_names(), names, {}, reference_weight_grads, settings.unmatched_weights,
                              settings.grad, grads, zero_in_exact_arithmetic)
    result = ParityResult(route=f"{adapter.framework}: {REFERENCE_DEVICE} -> {target_device}", device=target_device,
                          outputs=outputs, grads=grads, weight_account=account, run_s=run_s)
    if not result.passed:
        raise ParityError(failure_message(result, f"{adapter.description} on {REFERENCE_DEVICE}",
                                          f"the same model on {target_device}"), result)
    return result


def _run_in_float64(adapter: ModelAdapter, inputs: ModelInputs, cotangents: list[Any],
                    names: list[str]) -> tuple[list[Any], dict[str, Any]] | None:
    run = float64_referee.run_in_float64(adapter, inputs, REFERENCE_DEVICE, cotangents, names)
    return None if run is None else (run[1] or [], run[2] or {})


def _run_target(adapter: ModelAdapter, inputs: ModelInputs, device: str, cotangents: list[Any] | None) -> Any:
    try:
        return adapter.run(inputs, device, cotangents)
    except Exception as error:
        raise ParityUsageError(
            f"{adapter.description} runs on {REFERENCE_DEVICE} but failed on {device} with the same inputs "
            f"({inputs.describe()}): {error_summary(error)}\n"
            f"Look for an op without a {device} kernel, or tensors the model creates on a fixed device (e.g. "
            f"torch.zeros(...) without device=, or a tensor kept as a plain attribute instead of a registered buffer)."
        ) from None
