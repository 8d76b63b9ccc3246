"""The CUDA paths, tested as far as a machine without a GPU allows: skip reasons and TF32 switching."""

from __future__ import annotations

import pytest
import torch

from pytest_parity.frameworks import devices


def test_skip_reason_when_pytorch_sees_no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if torch.version.cuda is None:
        pytest.skip("this torch is a CPU build; the next test covers it")
    assert devices.cuda_skip_reason_torch() == "cuda: no GPU visible to PyTorch (torch.cuda.is_available() is False)"


def test_skip_reason_when_pytorch_is_built_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    reason = devices.cuda_skip_reason_torch()
    assert reason is not None and "is built without CUDA; install a CUDA build of torch" in reason


def test_no_skip_reason_when_a_gpu_is_visible(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", torch.version.cuda or "12.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.cuda_skip_reason_torch() is None


def test_tensorflow_skip_reasons_tell_no_gpu_from_no_cuda_build():
    class FakeTest:
        built_with_cuda = True

        def is_built_with_cuda(self):
            return self.built_with_cuda

    class FakeConfig:
        def list_physical_devices(self, kind):
            return []

    class FakeTensorFlow:
        __version__ = "2.21.0"
        test = FakeTest()
        config = FakeConfig()

    tf = FakeTensorFlow()
    assert devices.cuda_skip_reason_tensorflow(tf) == (
        "cuda: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)")
    tf.test.built_with_cuda = False
    assert "TensorFlow 2.21.0 is built without CUDA" in devices.cuda_skip_reason_tensorflow(tf)


def test_tf32_is_switched_off_in_pytorch_for_the_check_and_restored_after():
    matmul = torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the allow_tf32 flags")
    cudnn = torch.backends.cudnn
    before = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
    matmul.fp32_precision = "tf32"
    try:
        with devices.exact_float32({"torch"}, "cuda"):
            assert matmul.fp32_precision == "ieee"
            assert cudnn.conv.fp32_precision == cudnn.rnn.fp32_precision == "ieee"
            # torch.export reads the legacy flag; it raises when conv and RNN disagree (found on a GPU run).
            assert cudnn.allow_tf32 is False
        assert matmul.fp32_precision == "tf32"
        assert cudnn.conv.fp32_precision == "tf32" and cudnn.allow_tf32 is True
        with devices.exact_float32({"torch"}, "cpu"):  # nothing to do on cpu
            assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = before


def test_tf32_is_switched_off_in_tensorflow_for_the_check_and_restored_after():
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        with devices.exact_float32({"tensorflow"}, "cuda"):
            assert not tf.config.experimental.tensor_float_32_execution_enabled()
        assert tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
