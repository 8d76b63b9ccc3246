"""One parity check: picks the mode (convert when one model is given, port when two are) and the device checks that
both share; the modes themselves live in ``modes/``.
"""

from __future__ import annotations

from typing import Any

from pytest_parity.bridge.cache import ConversionCache
from pytest_parity.errors import DeviceUnavailable, ParityError, ParityUsageError
from pytest_parity.frameworks import detect_framework, devices, flatten_inputs
from pytest_parity.modes import convert
from pytest_parity.modes.port.run import run_port
from pytest_parity.modes.training.run import run_training
from pytest_parity.result import ParityResult
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict.layer_names import with_stable_names


def run_check(source_model: Any, target_model: Any, inputs: Any, settings: ParitySettings, device: str,
              seed_key: str, *, speed_gate: bool = True, cache: ConversionCache | None = None) -> ParityResult:
    """One parity check; ``speed_gate=False`` measures speed= without failing on it (--parity-speed=report);
    ``cache``: where convert mode finds and keeps exported ONNX graphs (None: export every time)."""
    source_framework = detect_framework(source_model)
    model_inputs = flatten_inputs(inputs)
    try:
        if target_model is not None:
            target_framework = detect_framework(target_model)
            for framework in (source_framework, target_framework):
                _require_device(framework, device)
            return run_port(source_model, target_model, source_framework, target_framework, model_inputs, settings,
                            device, seed_key, speed_gate)
        _require_device(source_framework, device)
        return convert.run_convert(source_model, source_framework, model_inputs, settings, device, seed_key,
                                   speed_gate, cache)
    except (ParityError, ParityUsageError) as error:
        # Keras layer names by their order in the model, whatever the session built before (verdict.layer_names).
        raise with_stable_names(error, (source_model, target_model)) from error.__cause__


def run_training_check(source_model: Any, target_model: Any, *, batches: Any, loss: Any, optimizer: Any,
                       steps: int | None, train_step: Any, settings: ParitySettings, device: str,
                       seed_key: str) -> ParityResult:
    """One training check (modes/training): both models trained step by step from the same weights."""
    _require_device(detect_framework(source_model), device)
    if target_model is not None:
        _require_device(detect_framework(target_model), device)
    try:
        return run_training(source_model, target_model, batches, loss, optimizer, steps, train_step, settings,
                            device, seed_key)
    except (ParityError, ParityUsageError) as error:
        raise with_stable_names(error, (source_model, target_model)) from error.__cause__


def _require_device(framework: str, device: str) -> None:
    if device != "cuda" or framework != "tensorflow":
        return  # PyTorch's cuda availability was decided at fixture setup
    from pytest_parity.frameworks.tensorflow import import_tensorflow

    reason = devices.cuda_skip_reason_tensorflow(import_tensorflow())
    if reason:
        raise DeviceUnavailable(reason)
