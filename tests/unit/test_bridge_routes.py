"""Which convert-mode routes exist, and what a user is told about the ones that do not (no framework needed)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.bridge import pipeline as bridge
from pytest_parity.errors import ConversionError, ParityUsageError
from pytest_parity.frameworks import flatten_inputs

INPUTS = flatten_inputs([np.array([1.0, 2.0], np.float32)])


class FakeSource:
    """Enough of a ModelAdapter for bridge.convert to decide the route; converting it is not expected."""

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.description = f"fake {framework} model"

    def to_onnx(self, inputs, opset):
        raise AssertionError("no route that needs an export should be taken")


def test_torch_to_tensorflow_explains_that_onnx_import_is_missing_and_points_to_port_mode():
    with pytest.raises(ParityUsageError) as failure:
        bridge.convert(FakeSource("torch"), INPUTS, "tensorflow")
    message = str(failure.value)
    assert not isinstance(failure.value, ConversionError)
    assert message.startswith("convert mode cannot target TensorFlow: this version of pytest-parity has no ONNX -> "
                              "TensorFlow import")
    assert "port mode: parity.check(torch_model, keras_model, inputs=...)" in message
    assert "torch -> onnx -> torch round trip" in message


def test_tensorflow_to_tensorflow_is_a_usage_error_pointing_to_the_torch_route():
    with pytest.raises(ParityUsageError) as failure:
        bridge.convert(FakeSource("tensorflow"), INPUTS, "tensorflow")
    message = str(failure.value)
    assert "no ONNX -> TensorFlow import" in message
    assert "target='torch'" in message and "tensorflow -> onnx -> torch" in message


class Failing:
    framework = "torch"
    description = "PyTorch Failing"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def to_onnx(self, inputs, opset):
        raise self.error


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


class TorchExportError(RuntimeError):
    """Stands in for torch.onnx's own exception class, which the bridge recognises by name."""


def test_export_failure_without_a_known_cause_names_the_step_and_the_exception():
    with pytest.raises(ConversionError) as failure:
        bridge.export_torch(Failing(ValueError("something odd\nmore detail")), INPUTS)
    message = str(failure.value)
    assert message.startswith("PyTorch -> ONNX (torch.onnx.export(dynamo=True, optimize=False), torch ")
    assert "failed for PyTorch Failing: ValueError: something odd\nWhat you can do: " in message
    assert failure.value.op is None and failure.value.opset == bridge.OPSET


def test_missing_aten_translation_names_the_op():
    error = _chained(RuntimeError("\x1b[96mstep 3/3\x1b[0m"),
                     RuntimeError("No ONNX function found for <OpOverload(op='aten.frobnicate', overload='default')>"))
    with pytest.raises(ConversionError) as failure:
        bridge.export_torch(Failing(error), INPUTS)
    assert failure.value.op == "aten.frobnicate"
    assert "the PyTorch op aten.frobnicate has no ONNX translation in torch.onnx" in str(failure.value)


class FailingWithAttention(Failing):
    """A transformers model as the bridge sees it: a module whose config names its attention implementation."""

    def __init__(self, error: BaseException, attention: str) -> None:
        super().__init__(error)
        self.module = type("Module", (), {"config": type("Config", (), {"_attn_implementation": attention})()})()


DECOMPOSITION_FAILURE = ("Failed to decompose the FX graph for ONNX compatibility. \x1b[96mThis is step 2/3\x1b[0m of "
                         "exporting the model to ONNX.")
VIEW_ERROR = ("Cannot view a tensor with shape torch.Size([2, 8, 2, 16]) as a tensor with shape (2, 8, 32)!\n\n"
              "Original traceback:\n  File \"/site/modeling_t5.py\", line 1131, in forward\n"
              "  File \"/site/modeling_t5.py\", line 368, in forward\n")


@pytest.mark.parametrize("attention, advice", [
    ("sdpa", "build it with attn_implementation='eager'"),
    (None, "capture succeeded (torch.export.export works); an op in the graph has no decomposition"),
])
def test_a_decomposition_failure_names_its_step_and_for_fused_attention_the_eager_fix(attention, advice):
    error = _chained(RuntimeError(DECOMPOSITION_FAILURE), ValueError(VIEW_ERROR))
    source = FailingWithAttention(error, attention) if attention else Failing(error)
    with pytest.raises(ConversionError) as failure:
        bridge.export_torch(source, INPUTS)
    message = str(failure.value)
    assert ("torch.onnx's decomposition (into the ops ONNX can express) step (2 of 3) failed at "
            "/site/modeling_t5.py:368 in forward(): ValueError: Cannot view a tensor") in message
    assert advice in message and "could not capture" not in message


def test_a_translation_failure_without_a_named_op_names_its_step():
    error = _chained(RuntimeError("\x1b[96mThis is step 3/3\x1b[0m"), RuntimeError("translation broke"))
    with pytest.raises(ConversionError) as failure:
        bridge.export_torch(Failing(error), INPUTS)
    assert "ONNX translation step (3 of 3) failed: RuntimeError: translation broke" in str(failure.value)


def test_capture_failure_quotes_the_users_line():
    error = _chained(TorchExportError('Failed to export.\nThe following call raised this error:\n  File "/m.py", '
                                      'line 12, in forward\n    if x.max() > 1:\n'),
                     RuntimeError("Could not guard on data-dependent expression Eq(u0, 1)"))
    with pytest.raises(ConversionError) as failure:
        bridge.export_torch(Failing(error), INPUTS)
    message = str(failure.value)
    assert "it branches on a tensor's value at /m.py:12 (if x.max() > 1:)" in message
    assert "\x1b" not in message


def test_a_nested_function_call_left_in_the_graph_names_the_cause_and_what_to_do():
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("StatefulPartitionedCall", ["x"], ["y"], name="model/conv/call")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ConversionError) as failure:
        bridge.check_onnx_model(helper.make_model(graph), "TensorFlow -> ONNX (tf2onnx)")
    message = str(failure.value)
    assert failure.value.op == "StatefulPartitionedCall" and "'model/conv/call'" in message
    assert "nested tf.function that tf2onnx could not inline" in message and "port mode" in message
