"""The TensorFlow export's guards that need no TensorFlow: the memory estimate that refuses an export the machine
cannot hold (instead of the out-of-memory killer ending the session)."""

from __future__ import annotations

import pytest

from pytest_parity.bridge import tf_export
from pytest_parity.errors import ConversionError

GIB = 2**30


def test_an_export_needing_more_memory_than_available_is_refused_with_the_figures_and_what_to_do(monkeypatch):
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: 22 * GIB)
    with pytest.raises(ConversionError) as failure:
        tf_export.refuse_if_memory_is_short(int(1.4 * GIB), "Keras Functional 'convnext_xlarge'")
    message = str(failure.value)
    assert message.startswith("TensorFlow -> ONNX (tf2onnx): not started for Keras Functional 'convnext_xlarge': its "
                              "1.40 GiB of weights need about 28 GiB of memory to export")
    assert "this machine has 22.0 GiB available" in message
    assert "What you can do: run this check on a machine with more memory" in message
    assert failure.value.step == "TensorFlow -> ONNX (tf2onnx)"


def test_an_export_that_fits_or_a_machine_without_meminfo_goes_ahead(monkeypatch):
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: 22 * GIB)
    tf_export.refuse_if_memory_is_short(int(0.79 * GIB), "ConvNeXtLarge")  # 16 GiB: fits
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: None)
    tf_export.refuse_if_memory_is_short(100 * GIB, "anything")


def test_available_memory_is_read_from_proc_meminfo_on_linux():
    available = tf_export._available_memory_bytes()
    if available is None:
        pytest.skip("no /proc/meminfo (not Linux)")
    assert 0 < available < 2**50


def test_layout_ops_on_weights_are_folded_and_arithmetic_is_not():
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    from onnx import TensorProto, helper, numpy_helper

    kernel = np.arange(24, dtype=np.float32).reshape(2, 3, 1, 4)  # HWIO, as a Keras Conv2D keeps it
    gamma = np.full(4, 2.0, np.float32)
    nodes = [helper.make_node("Transpose", ["kernel"], ["kernel_oihw"], perm=[3, 2, 0, 1]),
             helper.make_node("Conv", ["x", "kernel_oihw"], ["conv"]),
             helper.make_node("Reshape", ["gamma", "shape"], ["gamma_column"]),
             helper.make_node("Mul", ["gamma_column", "gamma_column"], ["gamma_squared"]),  # arithmetic: kept
             helper.make_node("Mul", ["conv", "gamma_squared"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 3])],
                              initializer=[numpy_helper.from_array(kernel, "kernel"),
                                           numpy_helper.from_array(gamma, "gamma"),
                                           numpy_helper.from_array(np.array([4, 1, 1], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert tf_export.fold_layout_ops_on_initializers(model) == 2
    assert [node.op_type for node in model.graph.node] == ["Conv", "Mul", "Mul"]
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    assert np.array_equal(values["kernel_oihw"], kernel.transpose(3, 2, 0, 1))
    assert values["gamma_column"].shape == (4, 1, 1) and set(values) == {"kernel_oihw", "gamma_column"}
    onnx.checker.check_model(model)
