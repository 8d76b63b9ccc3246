"""What a user sees when a check fails or cannot run: real frameworks, real converters, one cause per test."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from fixtures.keras_models import build_mnist_mlp
from pytest_parity import ConversionError, ParityError, ParityUsageError
from pytest_parity.check import run_check
from pytest_parity.frameworks import torch as torch_adapter
from pytest_parity.settings import ParitySettings

RNG = np.random.default_rng(0)


def check(model, inputs, **settings):
    return run_check(model, None, inputs, ParitySettings(**settings), "cpu", "test")


def nudge_first_kernel_after_import(monkeypatch, kernel_shape, amount):
    """Make the ONNX -> torch import step alter element (3, 7) of the source kernel shaped ``kernel_shape``."""
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_with_one_weight_off(model_proto):
        converted = real_from_onnx(model_proto)
        import torch

        for tensor in [*converted.module.parameters(), *converted.module.buffers()]:
            # onnx2torch keeps a MatMul weight as [in, out] but turns a Gemm into Linear's [out, in].
            if tuple(tensor.shape) in (kernel_shape, kernel_shape[::-1]):
                with torch.no_grad():
                    tensor[(3, 7) if tuple(tensor.shape) == kernel_shape else (7, 3)] += amount
                return converted
        raise AssertionError("the converted model has no tensor shaped like the first kernel")

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_with_one_weight_off)


def test_a_weight_perturbed_by_1e_3_in_the_converted_model_fails_naming_that_weight(monkeypatch):
    model = build_mnist_mlp()
    first_kernel = model.layers[1].kernel
    nudge_first_kernel_after_import(monkeypatch, tuple(first_kernel.shape), 1e-3)
    with pytest.raises(ParityError) as failure:
        check(model, RNG.standard_normal((8, 28, 28)).astype(np.float32))
    message = str(failure.value)
    assert "transferred weights: 1 of 4 tensor(s) differ" in message
    # The message names the layer by its order in the model ('dense', whatever the session built before); the result
    # keeps the full name.
    stable = "/".join(part.rsplit("_", 1)[0] if part.rsplit("_", 1)[-1].isdigit() else part
                      for part in first_kernel.path.split("/"))
    assert f"weight {stable!r} (target: '" in message
    assert not failure.value.result.weights[first_kernel.path].passed
    assert "Mismatched elements: 1 / 100352 (0.0%)" in message
    greatest = re.search(r"Greatest absolute difference: (\S+) at index \(3, 7\) \(up to 0 allowed\)", message)
    assert greatest and float(greatest[1]) == pytest.approx(1e-3, rel=1e-3)
    assert failure.value.result is not None and not failure.value.result.passed
    assert isinstance(failure.value, AssertionError)


def test_onnxruntime_as_referee_singles_out_the_step_that_diverged(monkeypatch):
    model = build_mnist_mlp()
    nudge_first_kernel_after_import(monkeypatch, tuple(model.layers[1].kernel.shape), 50.0)
    inputs = np.ones((8, 28, 28), np.float32)  # every pixel feeds the nudged weight: the outputs must move
    with pytest.raises(ParityError) as failure:
        check(model, inputs)
    message = str(failure.value)
    assert "outputs: 1 of 1 tensor(s) differ" in message
    assert re.search(r"diagnosis: source vs onnxruntime: max abs \S+ \(agree\); onnxruntime vs target: max abs "
                     r"\S+ \(differ\) -> the ONNX -> torch import step diverged", message)


def test_gradients_that_differ_are_named_with_figures_and_tolerance():
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3, name="only")], name="tiny")
    with pytest.raises(ParityError) as failure:
        # Tolerances of zero make ordinary float32 round-off a failure: the message format is what is checked.
        check(model, RNG.standard_normal((64, 4)).astype(np.float32) * 1e3, atol=0.0, rtol=0.0, grad_atol=0.0,
              grad_rtol=0.0)
    message = str(failure.value)
    assert "parity check failed: tensorflow -> onnx -> torch on cpu" in message
    assert "(up to 0 allowed)" in message


def test_inputs_of_the_wrong_shape_name_the_shapes_and_what_the_model_expects():
    with pytest.raises(ParityUsageError) as failure:
        check(build_mnist_mlp(), RNG.standard_normal((8, 27, 28)).astype(np.float32))
    message = str(failure.value)
    assert "Running the source model (Keras Sequential 'mnist_mlp') on the given inputs (input: float32[8, 27, 28])" \
        in message
    assert "The model expects (None, 28, 28)" in message


def test_inputs_of_the_wrong_rank_for_a_low_level_module():
    from fixtures.keras_models import build_lowlevel_mlp

    with pytest.raises(ParityUsageError, match=r"Check the inputs' number, rank, shape and dtype"):
        check(build_lowlevel_mlp(), RNG.standard_normal((784,)).astype(np.float32))


def test_an_op_tf2onnx_cannot_convert_names_the_op_the_step_and_the_opset():
    class IncompleteBeta(tf.Module):
        @tf.function
        def __call__(self, x):
            return tf.math.betainc(x * x + 1.0, x * x + 2.0, tf.sigmoid(x))

    with pytest.raises(ConversionError) as failure:
        check(IncompleteBeta(), RNG.standard_normal((4,)).astype(np.float32))
    assert failure.value.op == "Betainc" and failure.value.opset == 17
    message = str(failure.value)
    assert message.startswith("TensorFlow -> ONNX (tf2onnx ")
    assert "the TensorFlow op 'Betainc'" in message and "opset 17" in message and "What you can do" in message


def build_sinh_model(name):
    # onnx2torch has no converter for ONNX Sinh (LSTM, the earlier example, now converts through our own).
    return keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Lambda(lambda x: keras.ops.sinh(x))],
                            name=name)


def test_an_op_onnx2torch_cannot_convert_names_the_op_the_step_and_the_fix():
    with pytest.raises(ConversionError) as failure:
        check(build_sinh_model("sinh"), RNG.standard_normal((2, 4)).astype(np.float32))
    assert failure.value.op == "Sinh"
    message = str(failure.value)
    assert message.startswith("ONNX -> PyTorch (onnx2torch ")
    assert "no converter for the ONNX op 'Sinh'" in message and "add_converter(operation_type='Sinh'" in message


def test_a_model_that_returns_nan_is_refused_with_the_reason():
    class Log(tf.Module):
        @tf.function
        def __call__(self, x):
            return tf.math.log(x)

    inputs = np.array([[1.0, -1.0, 2.0]], dtype=np.float32)
    with pytest.raises(ParityUsageError) as failure:
        check(Log(), inputs)
    message = str(failure.value)
    assert "returns NaN or Inf in output at 1 of 3 elements (first at index (0, 1))" in message
    assert "parity needs a finite reference" in message


def test_weights_are_restored_even_when_the_check_fails():
    model = build_sinh_model("restored")
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ConversionError):
        check(model, RNG.standard_normal((2, 4)).astype(np.float32))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


def test_a_converted_model_that_cannot_run_is_a_conversion_error_not_a_traceback(monkeypatch):
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_that_asks_for_an_extra_argument(model_proto):
        converted = real_from_onnx(model_proto)
        forward = converted.module.forward
        converted.module.forward = lambda *args: forward(*args, "an argument the source never had")
        return converted

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_that_asks_for_an_extra_argument)
    with pytest.raises(ConversionError, match=r"(?s)The converted model \(.*\) failed to run on the inputs the source "
                                              r"model ran on \(.*TypeError.*This is a gap in the conversion"):
        check(build_mnist_mlp(), RNG.standard_normal((2, 28, 28)).astype(np.float32))


def test_a_batchnorm_weight_off_in_the_converted_model_fails_naming_it(monkeypatch):
    # The BatchNormalization reaches the converted model weight by weight (exported with the weights as graph inputs):
    # nudging one of its (4,)-shaped tensors must fail the check and name a batch_normalization weight.
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, use_bias=False), layers.BatchNormalization(),
                              layers.ReLU(), layers.Flatten(), layers.Dense(2)])
    real_from_onnx = torch_adapter.from_onnx

    def from_onnx_with_a_batchnorm_tensor_off(model_proto):
        converted = real_from_onnx(model_proto)
        import torch

        tensor = next(t for t in [*converted.module.parameters(), *converted.module.buffers()]
                      if tuple(t.shape) == (4,))
        with torch.no_grad():
            tensor[1] += 1e-2
        return converted

    monkeypatch.setattr(torch_adapter, "from_onnx", from_onnx_with_a_batchnorm_tensor_off)
    with pytest.raises(ParityError) as failure:
        check(model, RNG.standard_normal((2, 8, 8, 3)).astype(np.float32))
    message = str(failure.value)
    assert "transferred weights: 1 of" in message and "batch_normalization" in message
