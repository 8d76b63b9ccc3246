"""The PyTorch-side CUDA paths for real: convert mode on cuda, TF32 off during a check, speed with synchronisation, the
cross-device check, the onnxruntime referee on cuda. Skipped, with the reason, where PyTorch sees no GPU.

Run on a lent GPU machine with benchmarks/gpu_torch_paths.py beside it (README, "GPU").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fixtures.torch_convert_models import CASES, SmallCNN
from pytest_parity.bridge.pipeline import export_torch, run_onnxruntime
from pytest_parity.check import run_check
from pytest_parity.frameworks import devices, flatten_inputs
from pytest_parity.frameworks.torch import TorchModel
from pytest_parity.modes.cross_device import check_across_devices
from pytest_parity.settings import ParitySettings

NO_CUDA = devices.cuda_skip_reason_torch()
pytestmark = pytest.mark.skipif(NO_CUDA is not None, reason=f"GPU only: {NO_CUDA}")


def _inputs(name: str):
    return CASES[name][1](np.random.default_rng(0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_convert_mode_passes_on_cuda_and_the_model_stays_where_it_was(name):
    build, _ = CASES[name]
    model = build()
    result = run_check(model, None, _inputs(name), ParitySettings(devices=("cuda",)), "cuda", f"gpu-{name}")
    assert result.passed, result
    assert result.device == "cuda" and result.route == "torch -> onnx -> torch"
    assert result.grads, "gradients were compared"
    assert all(parameter.device.type == "cpu" for parameter in model.parameters())


class RecordsPrecision(nn.Module):
    """Writes down the matmul precision setting each time it runs: what the check's runs saw."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 64)
        self.seen: list[object] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        matmul = torch.backends.cuda.matmul
        self.seen.append(getattr(matmul, "fp32_precision", None) or matmul.allow_tf32)
        return self.linear(x)


def _tf32_on() -> tuple[str, object]:
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = "tf32"
        return "fp32_precision", "tf32"
    matmul.allow_tf32 = True
    return "allow_tf32", True


def test_tf32_is_off_while_a_check_runs_and_the_users_setting_comes_back():
    matmul = torch.backends.cuda.matmul
    attribute = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, attribute)
    try:
        _, user_setting = _tf32_on()
        model = RecordsPrecision()
        inputs = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
        result = run_check(model, None, inputs, ParitySettings(devices=("cuda",)), "cuda", "tf32")
        assert result.passed
        assert model.seen and set(model.seen) <= {"ieee", False}, model.seen
        assert getattr(matmul, attribute) == user_setting
    finally:
        setattr(matmul, attribute, before)


def test_with_tf32_off_a_large_matmul_is_float32_exact_and_with_it_on_it_is_not():
    # Why TF32 must be off: on this GPU a TF32 matmul is ~1e-3 off, far outside float32 tolerances.
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2048, 2048, generator=generator) for _ in range(2))
    exact = (a.double() @ b.double()).numpy()
    scale = np.abs(exact).max()
    matmul = torch.backends.cuda.matmul
    attribute = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, attribute)
    try:
        _tf32_on()
        tf32_error = np.abs((a.cuda() @ b.cuda()).cpu().numpy() - exact).max() / scale
        with devices.exact_float32({"torch"}, "cuda"):
            ieee_error = np.abs((a.cuda() @ b.cuda()).cpu().numpy() - exact).max() / scale
    finally:
        setattr(matmul, attribute, before)
    assert ieee_error < 1e-5 < tf32_error, (ieee_error, tf32_error)


def test_speed_on_cuda_synchronises_after_every_timed_call(monkeypatch):
    calls = []
    synchronize = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: (calls.append(1), synchronize(*a)))
    result = run_check(SmallCNN(), None, _inputs("cnn_batchnorm"), ParitySettings(devices=("cuda",), speed=1e3),
                       "cuda", "speed")
    speed = result.speed
    assert result.passed and speed is not None
    assert speed.ratio_min <= speed.ratio <= speed.ratio_max
    # Each timed call of each side ends with a synchronisation (forward on both sides).
    assert len(calls) >= 2 * speed.rounds * speed.iterations


def test_cross_device_check_runs_on_the_gpu_for_real():
    model = SmallCNN()
    result = check_across_devices(model, _inputs("cnn_batchnorm"), ParitySettings(), "cross")
    assert result.passed and result.route == "torch: cpu -> cuda" and result.device == "cuda"
    assert result.grads and all(comparison.passed for comparison in result.grads.values())


def test_the_onnxruntime_referee_on_cuda_agrees_with_torch_and_names_its_provider():
    model = SmallCNN().eval()
    inputs = flatten_inputs(_inputs("cnn_batchnorm"))
    proto = export_torch(TorchModel(model), inputs)
    referee = run_onnxruntime(proto, inputs, "cuda")
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs.arrays[0])).numpy()
    np.testing.assert_allclose(referee[0], expected, atol=1e-5, rtol=1e-4)
    if referee.provider == devices.CUDA_EXECUTION_PROVIDER:
        assert referee.fallback is None
    else:
        assert "ran on CPUExecutionProvider" in (referee.fallback or "")
        assert "onnxruntime-gpu" in referee.describe()


SESSION = """
import pytest
from torch import nn

@pytest.mark.parity
def test_mlp(parity):
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    result = parity.check(model, inputs=parity.randn(4, 8))
    assert result.device == parity.device
"""


def test_a_session_with_both_devices_runs_the_test_on_each(pytester):
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--parity-devices=cpu,cuda", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_mlp?cpu? PASSED*", "*test_mlp?cuda? PASSED*"])
