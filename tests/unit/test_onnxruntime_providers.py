"""Which execution provider the onnxruntime referee runs on, and what it says when it cannot run where asked."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.bridge import pipeline as bridge
from pytest_parity.frameworks import devices, flatten_inputs

CPU_ONLY_WHEEL = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU_WHEEL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_runs_on_the_cpu_provider_whatever_else_is_installed():
    assert devices.onnxruntime_providers("cpu", GPU_WHEEL) == ["CPUExecutionProvider"]
    assert devices.onnxruntime_providers("cpu", CPU_ONLY_WHEEL) == ["CPUExecutionProvider"]


def test_cuda_asks_for_the_cuda_provider_with_tf32_off_and_the_cpu_behind_it():
    providers = devices.onnxruntime_providers("cuda", GPU_WHEEL)
    assert providers == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    # TensorRT is not asked for even when offered: it chooses its kernels (TF32 by default) when it builds an engine.
    assert all("Tensorrt" not in str(provider) for provider in providers)


def test_cuda_falls_back_to_the_cpu_provider_without_a_cuda_provider():
    assert devices.onnxruntime_providers("cuda", CPU_ONLY_WHEEL) == ["CPUExecutionProvider"]


def test_the_provider_options_are_a_copy_so_a_session_cannot_change_the_defaults():
    options = devices.onnxruntime_providers("cuda", GPU_WHEEL)[0][1]
    assert isinstance(options, dict)
    options["use_tf32"] = "1"
    assert devices.ONNXRUNTIME_CUDA_OPTIONS == {"use_tf32": "0"}


def test_fallback_reasons_tell_a_cpu_only_wheel_from_a_cuda_provider_that_could_not_start():
    assert devices.onnxruntime_fallback_reason("cpu", CPU_ONLY_WHEEL, ["CPUExecutionProvider"]) is None
    assert devices.onnxruntime_fallback_reason(
        "cuda", GPU_WHEEL, ["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    no_provider = devices.onnxruntime_fallback_reason("cuda", CPU_ONLY_WHEEL, ["CPUExecutionProvider"], "1.32.0")
    assert no_provider == ("onnxruntime 1.32.0 has no CUDAExecutionProvider (the PyPI 'onnxruntime' wheel is CPU-only; "
                           "install 'onnxruntime-gpu' instead of it), so the referee ran on CPUExecutionProvider")
    not_created = devices.onnxruntime_fallback_reason("cuda", GPU_WHEEL, ["CPUExecutionProvider"], "1.32.0")
    assert not_created is not None
    assert not_created.startswith("onnxruntime 1.32.0 offers CUDAExecutionProvider but could not create it")
    assert not_created.endswith("so the referee ran on CPUExecutionProvider")


def test_the_referee_outputs_stay_a_list_and_describe_where_they_ran():
    arrays = [np.zeros(2, np.float32)]
    on_gpu = bridge.OnnxRuntimeOutputs(arrays, device="cuda", provider="CUDAExecutionProvider", fallback=None)
    assert on_gpu == arrays and len(on_gpu) == 1  # callers that take a list of outputs keep working
    assert on_gpu.describe() == "onnxruntime on CUDAExecutionProvider (TF32 off)"
    fell_back = bridge.OnnxRuntimeOutputs(arrays, device="cuda", provider="CPUExecutionProvider", fallback="no CUDA")
    assert fell_back.describe() == "onnxruntime on CPUExecutionProvider (no CUDA)"
    on_cpu = bridge.OnnxRuntimeOutputs(arrays, device="cpu", provider="CPUExecutionProvider", fallback=None)
    assert on_cpu.describe() == "onnxruntime on CPUExecutionProvider"


def _matmul_model(size: int):
    onnx = pytest.importorskip("onnx", reason="needs onnx: pip install -c constraints.txt '.[all]'")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["product"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8  # what every onnxruntime still supported reads
    onnx.checker.check_model(model)
    return model


def test_run_onnxruntime_on_cuda_falls_back_to_the_cpu_here_and_says_so():
    onnxruntime = pytest.importorskip("onnxruntime",
                                      reason="needs onnxruntime: pip install -c constraints.txt '.[all]'")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the GPU test below covers it")
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    b = np.eye(4, dtype=np.float32) * 2
    outputs = bridge.run_onnxruntime(_matmul_model(4), flatten_inputs((a, b)), device="cuda")
    np.testing.assert_array_equal(outputs[0], a @ b)
    assert outputs.device == "cuda" and outputs.provider == "CPUExecutionProvider"
    assert outputs.fallback is not None and "has no CUDAExecutionProvider" in outputs.fallback
    assert "install 'onnxruntime-gpu'" in outputs.describe()


def test_run_onnxruntime_keeps_the_cpu_as_its_default_device():
    pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install -c constraints.txt '.[all]'")
    a = np.ones((4, 4), np.float32)
    outputs = bridge.run_onnxruntime(_matmul_model(4), flatten_inputs((a, a)))
    np.testing.assert_array_equal(outputs[0], a @ a)
    assert (outputs.device, outputs.provider, outputs.fallback) == ("cpu", "CPUExecutionProvider", None)


def test_run_onnxruntime_on_a_gpu_uses_the_cuda_provider_without_tf32():
    onnxruntime = pytest.importorskip("onnxruntime",
                                      reason="needs onnxruntime: pip install -c constraints.txt '.[all]'")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip(f"GPU only: onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider "
                    f"(the PyPI 'onnxruntime' wheel is CPU-only; 'onnxruntime-gpu' has it)")
    size = 512
    # TF32 keeps 10 mantissa bits: 1.0001 becomes 1.0, so each product is off by ~1e-4 relative (TF's own example).
    a = np.full((size, size), 1.0001, np.float32)
    b = np.ones((size, size), np.float32)
    outputs = bridge.run_onnxruntime(_matmul_model(size), flatten_inputs((a, b)), device="cuda")
    if outputs.provider != "CUDAExecutionProvider":
        pytest.skip(f"GPU only: {outputs.fallback}")
    exact = a.astype(np.float64) @ b.astype(np.float64)
    assert np.max(np.abs(outputs[0] - exact) / exact) < 1e-5
    assert outputs.describe() == "onnxruntime on CUDAExecutionProvider (TF32 off)"
