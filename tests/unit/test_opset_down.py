"""Opset 18 -> 17 for the ops onnx.version_converter cannot bring down (Split with num_outputs, Pad with axes): the
rewritten graph is opset 17 and computes what the opset 18 graph computed, run by onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pytest_parity.bridge.opset_down import HELD_DOMAIN, OpsetConversionError, convert_version  # noqa: E402


def _model(nodes, outputs, initializers=()):
    graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 4])],
                              graph_outputs, initializer=list(initializers))
    # IR 8: the newest onnxruntime reads; onnx's default IR can be newer than it supports.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_split_with_num_outputs_and_pad_with_axes_come_down_to_opset_17_unchanged_in_meaning():
    model = _model(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),  # 5 -> 3 + 2: uneven
         helper.make_node("Split", ["x"], ["c", "d"], axis=2, num_outputs=2),  # 4 -> 2 + 2: even
         helper.make_node("Pad", ["a", "pads", "", "axes"], ["p"], mode="constant")],
        {"b": [2, 2, 4], "c": [2, 5, 2], "d": [2, 5, 2], "p": [2, 3, 7]},
        [numpy_helper.from_array(np.array([1, 2], np.int64), "pads"),
         numpy_helper.from_array(np.array([-1], np.int64), "axes")])
    with pytest.raises(Exception, match="No Adapter"):  # what this module exists for
        onnx.version_converter.convert_version(model, 17)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    expected = _run(model, x)
    converted = convert_version(model, 17)
    onnx.checker.check_model(converted)
    assert [(entry.domain, entry.version) for entry in converted.opset_import] == [("", 17)]
    assert all(node.domain == "" for node in converted.graph.node)
    got = _run(converted, x)
    assert [array.shape for array in got] == [(2, 2, 4), (2, 5, 2), (2, 5, 2), (2, 3, 7)]
    for have, want in zip(got, expected):
        np.testing.assert_array_equal(have, want)


def test_a_pad_whose_axes_are_computed_at_run_time_is_refused_with_the_reason():
    model = _model([helper.make_node("Shape", ["x"], ["shape"]),
                    helper.make_node("Slice", ["shape", "zero", "one"], ["axes"]),
                    helper.make_node("Pad", ["x", "pads", "", "axes"], ["p"])], {"p": [4, 5, 4]},
                   [numpy_helper.from_array(np.array([1, 1], np.int64), "pads"),
                    numpy_helper.from_array(np.array([0], np.int64), "zero"),
                    numpy_helper.from_array(np.array([1], np.int64), "one")])
    with pytest.raises(OpsetConversionError, match="has an axes input, which opset 17 does not have"):
        convert_version(model, 17)
    assert HELD_DOMAIN  # the refusal happens before anything is held
