"""parity.check_across_devices: one model on the CPU and on cuda.

Without a GPU the whole comparison is still exercised for real, with the "cuda" side pointed at the CPU
(``target_device="cpu"``): weights randomized and restored, the same cotangent on both runs, outputs and gradients
compared, a perturbed second run failing by name. Through the fixture, the check is skipped with the framework's own
reason; on a machine with a GPU the same session passes instead, and the GPU-only tests at the end run.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch
from torch import nn

from pytest_parity import ParityError, ParityUsageError
from pytest_parity.errors import DeviceUnavailable
from pytest_parity.frameworks import devices
from pytest_parity.frameworks.tensorflow import TensorFlowModel
from pytest_parity.frameworks.torch import TorchModel
from pytest_parity.modes.cross_device import check_across_devices, settings_for
from pytest_parity.settings import ParitySettings

RNG = np.random.default_rng(0)
INPUTS = RNG.standard_normal((6, 4)).astype(np.float32)
TORCH_NO_CUDA = devices.cuda_skip_reason_torch()
TENSORFLOW_NO_CUDA = devices.cuda_skip_reason_tensorflow(tf)


def torch_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias.zero_()  # constant: randomized for the check, as in parity.check
    return model


def keras_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh", name="hidden"),
                             keras.layers.Dense(3, name="out")], name="small")


def on_cpu(model, **settings):
    return check_across_devices(model, INPUTS, ParitySettings(**settings), "test", target_device="cpu")


def record_runs(monkeypatch, adapter_class, change_second_run=None):
    """Wrap the adapter's run: record (device, weights, cotangents) of each call; optionally alter the second."""
    calls: list[tuple[str, dict[str, np.ndarray], object]] = []
    real_run = adapter_class.run

    def run(self, inputs, device, cotangents, grad_weights=None):
        calls.append((device, self.weights(), cotangents))
        if len(calls) == 2 and change_second_run is not None:
            change_second_run(self)
        return real_run(self, inputs, device, cotangents, grad_weights)

    monkeypatch.setattr(adapter_class, "run", run)
    return calls


@pytest.mark.parametrize("build, adapter_class, bias, framework", [
    (torch_model, TorchModel, "0.bias", "torch"),
    (keras_model, TensorFlowModel, "small/hidden/bias", "tensorflow"),
], ids=["torch", "keras"])
def test_the_whole_comparison_runs_on_the_cpu_with_randomized_weights_restored_after(monkeypatch, build,
                                                                                     adapter_class, bias, framework):
    model = build()
    before = adapter_class(model).weights()
    calls = record_runs(monkeypatch, adapter_class)
    result = on_cpu(model)
    assert result.passed and result.route == f"{framework}: cpu -> cpu" and result.device == "cpu"
    assert [device for device, _, _ in calls] == ["cpu", "cpu"]
    (_, first_weights, first_cotangents), (_, second_weights, second_cotangents) = calls
    # Both runs saw the same randomized weights, and the second got the cotangent seeded from the first's outputs.
    assert not np.any(first_weights[bias] == 0) and np.array_equal(first_weights[bias], second_weights[bias])
    assert callable(first_cotangents) and isinstance(second_cotangents, list) and second_cotangents
    after = adapter_class(model).weights()
    assert all(np.array_equal(after[name], before[name]) for name in before)
    assert not np.any(after[bias])
    trainable = adapter_class(model).trainable_names()
    assert result.grads is not None and set(result.grads) == {"input", *trainable}
    assert result.outputs.total == INPUTS.shape[0] * 3 and result.outputs.max_abs == 0.0
    # Every check says which weights' gradients it compared (issue 13), this one too.
    assert result.weight_account.describe() == f"weights compared {len(trainable)} of {len(trainable)}"


class LayerScaled(torch.nn.Module):
    """A branch scaled by 1e-9: its weights' gradients lie below the check's rounding floor, where a zeroed gradient
    on the other device would pass; a float64 run judges them at their own scale."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.branch, self.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3)
        self.gamma = torch.nn.Parameter(torch.full((4,), 1e-9))

    def forward(self, x):
        return self.head(x + self.gamma * torch.tanh(self.branch(x)))


def test_gradients_below_the_rounding_floor_are_judged_at_their_own_scale_and_a_zeroed_one_fails(monkeypatch):
    assert on_cpu(LayerScaled()).weight_account.describe() == "weights compared 5 of 5"
    real_run = TorchModel.run
    calls = []

    def zero_the_branch_gradient_on_the_second_device(self, inputs, device, cotangents, grad_weights=None):
        outputs, input_grads, weight_grads = real_run(self, inputs, device, cotangents, grad_weights)
        calls.append(device)
        if len(calls) == 2:
            weight_grads = {**weight_grads, "branch.weight": np.zeros_like(weight_grads["branch.weight"])}
        return outputs, input_grads, weight_grads

    monkeypatch.setattr(TorchModel, "run", zero_the_branch_gradient_on_the_second_device)
    with pytest.raises(ParityError, match=r"gradient 'branch\.weight'"):
        on_cpu(LayerScaled())


def test_a_perturbed_second_run_fails_naming_the_output_and_the_gradients_that_differ(monkeypatch):
    model = keras_model()

    def nudge_kernel(adapter):
        kernel = adapter._variables["small/out/kernel"]
        kernel.assign(kernel.numpy() + 1e-3)

    record_runs(monkeypatch, TensorFlowModel, nudge_kernel)
    with pytest.raises(ParityError) as failure:
        on_cpu(model)
    message = str(failure.value)
    assert message.startswith("parity check failed: tensorflow: cpu -> cpu on cpu (Keras Sequential 'small' on cpu "
                              "vs the same model on cpu)")
    assert "outputs: 1 of 1 tensor(s) differ" in message and "output 'output':" in message
    # The nudged kernel changes the gradient reaching the input and the hidden layer, not its own (tanh outputs).
    assert "gradient 'input':" in message and "gradient 'small/hidden/kernel':" in message
    assert "gradient 'small/out/kernel':" not in message
    result = failure.value.result
    assert result is not None and not result.passed and result.route == "tensorflow: cpu -> cpu"


def test_a_second_run_whose_gradient_alone_differs_fails_naming_that_weight(monkeypatch):
    model = torch_model()

    def scale_the_gradient_through_the_batchnorm(adapter):
        def hook(module, args, output):
            handle.remove()
            # The same values exactly, but the gradient flowing back through them is 1.01 times larger.
            return output + (output - output.detach()) * 0.01

        handle = adapter.module[1].register_forward_hook(hook)

    record_runs(monkeypatch, TorchModel, scale_the_gradient_through_the_batchnorm)
    with pytest.raises(ParityError) as failure:
        on_cpu(model)
    message = str(failure.value)
    assert "outputs: agree within tolerance (max abs 0," in message
    assert "gradients: 5 of 7 tensor(s) differ" in message
    for name in ("input", "0.weight", "0.bias", "1.weight", "1.bias"):
        assert f"gradient {name!r}:" in message
    assert "gradient '3.weight':" not in message  # after the perturbed layer: untouched


def test_the_torch_module_gets_its_training_mode_and_device_back(monkeypatch):
    model = torch_model()
    model.train()
    model[1].eval()  # a mixed state, as after freezing a BatchNorm
    placements = []
    real_to = nn.Module.to

    def to(self, *args, **kwargs):
        placements.append(args)
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    on_cpu(model)
    assert [module.training for module in model.modules()] == [True, True, False, True, True]
    assert placements[-1] == (torch.device("cpu"),)  # the device the parameters were on


def test_a_model_that_runs_on_the_cpu_but_not_on_the_other_device_is_a_usage_error(monkeypatch):
    def break_second_run(adapter):
        raise RuntimeError("no kernel image is available for execution on the device")

    model = torch_model()
    record_runs(monkeypatch, TorchModel, break_second_run)
    with pytest.raises(ParityUsageError, match=r"PyTorch Sequential runs on cpu but failed on cpu with the same inputs "
                                               r"\(input: float32\[6, 4\]\): RuntimeError: no kernel image"):
        on_cpu(model)
    assert not np.any(model[0].bias.detach().numpy())  # restored after a failure too


def test_arguments_that_concern_two_models_are_refused():
    with pytest.raises(ParityUsageError, match=r"check_across_devices\(\) got argument\(s\) layouts, speed it does "
                                               r"not take"):
        settings_for(ParitySettings(), {"speed": 1.5, "layouts": ("NHWC", "NCHW"), "atol": 1e-3})
    assert settings_for(ParitySettings(), {"atol": 1e-3, "grad": False}).atol == 1e-3


@pytest.mark.skipif(TORCH_NO_CUDA is None, reason="PyTorch sees a GPU here")
def test_without_a_gpu_the_check_raises_device_unavailable_with_the_reason():
    with pytest.raises(DeviceUnavailable, match=r"^cuda: no GPU visible to PyTorch|^cuda: PyTorch .* without CUDA"):
        check_across_devices(torch_model(), INPUTS, ParitySettings(), "test")


SESSION = """
import keras
import numpy as np
import pytest
from torch import nn

@pytest.mark.parity(devices=("cpu",))
def test_torch(parity):
    result = parity.check_across_devices(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), inputs=parity.randn(5, 4))
    assert result.route == "torch: cpu -> cuda" and result.device == "cuda"

@pytest.mark.parity(devices=("cpu",))
def test_keras(parity):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="tiny")
    result = parity.check_across_devices(model, inputs=parity.randn(5, 4), atol=1e-5, grad_rtol=1e-3)
    assert result.route == "tensorflow: cpu -> cuda"

@pytest.mark.parity(devices=("cpu",))
def test_bad_argument(parity):
    parity.check_across_devices(nn.Linear(4, 3), inputs=parity.randn(5, 4), speed=2.0)
"""


def test_through_the_fixture_it_is_skipped_without_a_gpu_and_passes_with_one(pytester):
    pytester.makepyfile(test_session=SESSION)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1
    result.stdout.fnmatch_lines(["*check_across_devices() got argument(s) speed it does not take*"])
    expected_skips = [reason for reason in (TORCH_NO_CUDA, TENSORFLOW_NO_CUDA) if reason]
    assert outcomes.get("skipped", 0) == len(expected_skips)
    assert outcomes.get("passed", 0) == 2 - len(expected_skips)
    result.stdout.fnmatch_lines([f"SKIPPED * {reason}" for reason in expected_skips], consecutive=False)
    if not expected_skips:
        result.stdout.fnmatch_lines(["*test_torch*cuda*PASS*", "*cuda*torch: cpu -> cuda*"])


@pytest.mark.skipif(TORCH_NO_CUDA is not None, reason=f"GPU only: {TORCH_NO_CUDA}")
@pytest.mark.parametrize("start", ["cpu", "cuda"])
def test_on_a_gpu_a_torch_model_passes_and_stays_where_it_was(start):
    model = torch_model().to(start)
    result = check_across_devices(model, INPUTS, ParitySettings(), "test")
    assert result.passed and result.route == "torch: cpu -> cuda"
    assert next(model.parameters()).device.type == start


@pytest.mark.skipif(TENSORFLOW_NO_CUDA is not None, reason=f"GPU only: {TENSORFLOW_NO_CUDA}")
def test_on_a_gpu_a_keras_model_passes():
    result = check_across_devices(keras_model(), INPUTS, ParitySettings(), "test")
    assert result.passed and result.route == "tensorflow: cpu -> cuda"


def test_the_cuda_initialization_warning_of_a_machine_without_a_driver_does_not_turn_the_skip_into_an_error(
        monkeypatch):
    # What the CUDA build of torch does here once TensorFlow is loaded; under filterwarnings=error it used to make
    # the cuda run of every parity test an error instead of a skip.
    def is_available():
        import warnings

        warnings.warn("CUDA initialization: Unexpected error from cudaGetDeviceCount(). Error 302: Error loading CUDA "
                      "libraries. GPU will not be used.", UserWarning, stacklevel=1)
        return False

    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.0")
    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    assert devices.cuda_skip_reason_torch() == "cuda: no GPU visible to PyTorch (torch.cuda.is_available() is False)"


FIXTURE_PATHS = """
import numpy as np
import pytest
import torch
from torch import nn

import pytest_parity.modes.cross_device

# No GPU here: the "cuda" side of every cross-device check in this session runs on the CPU.
pytest_parity.modes.cross_device.TARGET_DEVICE = "cpu"

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh())

@pytest.mark.parity(devices=("cpu",))
def test_agrees(parity):
    result = parity.check_across_devices(model(), inputs=parity.randn(5, 4))
    assert result.passed and set(result.grads) == {"input", "0.weight", "0.bias"}

@pytest.mark.parity(devices=("cpu",))
def test_differs(parity):
    net = model()
    calls = []

    def hook(module, args, output):
        calls.append(1)
        return output + 1e-3 if len(calls) == 2 else output

    net[0].register_forward_hook(hook)
    parity.check_across_devices(net, inputs=parity.randn(5, 4))
"""


def test_through_the_fixture_results_are_recorded_and_a_difference_fails_the_test(pytester):
    pytester.makepyfile(test_session=FIXTURE_PATHS)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--parity-report={report}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        ">*parity.check_across_devices(net, inputs=parity.randn(5, 4))",  # the traceback starts in the test
        "E*ParityError: parity check failed: torch: cpu -> cpu on cpu (PyTorch Sequential on cpu vs the same model "
        "on cpu)",
        "E*outputs: 1 of 1 tensor(s) differ",
        "E*output 'output':",
        "E*gradients: 3 of 3 tensor(s) differ",
        "test_session.py::test_agrees[[]cpu[]]  PASS",  # the summary: test id and result, then the figures
        "  cpu*torch: cpu -> cpu*",
        "test_session.py::test_differs[[]cpu[]]  FAIL",
        "  cpu*torch: cpu -> cpu*",
    ])
    records = json.loads(report.read_text())["results"]
    assert [(r["nodeid"].split("::")[1], r["route"], r["passed"]) for r in records] == [
        ("test_agrees[cpu]", "torch: cpu -> cpu", True), ("test_differs[cpu]", "torch: cpu -> cpu", False)]
