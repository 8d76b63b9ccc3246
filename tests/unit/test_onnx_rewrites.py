"""Rewrites of ONNX constructs onnx2torch cannot import: onnxruntime computes the same before and after, onnx2torch
imports the rewritten graph and computes it too; what stays unimportable is refused naming the node and the op."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx2torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pytest_parity.bridge import onnx_rewrites  # noqa: E402
from pytest_parity.bridge import pipeline as bridge  # noqa: E402
from pytest_parity.errors import ConversionError  # noqa: E402

X = np.linspace(-3.0, 3.0, 12, dtype=np.float32).reshape(3, 4)


def _model(nodes, initializers=(), output_shape=(3, 4)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run_onnxruntime(model):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})[0]


@pytest.mark.parametrize("inputs, expected", [
    (["x", "", "bound"], np.minimum(X, 1.5)),             # torch.clamp(x, max=1.5), as torch.onnx.export writes it
    (["x", "bound", ""], np.maximum(X, 1.5)),             # torch.clamp(x, min=1.5) with a trailing empty name
    (["x", "", ""], X),                                   # no bound at all
])
def test_a_clip_with_an_omitted_bound_imports_and_computes_the_one_sided_clamp(inputs, expected):
    model = _model([helper.make_node("Clip", inputs, ["y"], name="clamp")],
                   [numpy_helper.from_array(np.asarray(1.5, np.float32), "bound")])
    before = _run_onnxruntime(model)
    assert onnx_rewrites.fill_omitted_clip_bounds(model.graph) == 1
    onnx.checker.check_model(model)
    assert "" not in list(model.graph.node[0].input)[1:]
    np.testing.assert_array_equal(_run_onnxruntime(model), before)
    np.testing.assert_array_equal(before, expected)

    converted = bridge.import_into_torch(model).module
    x = torch.tensor(X, requires_grad=True)
    y = converted(x)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    y.sum().backward()  # the gradient of a one-sided clamp: 1 inside the bound, 0 beyond it
    np.testing.assert_array_equal(x.grad.numpy(), (y.detach().numpy() == X).astype(np.float32))


def test_a_clip_whose_bounds_are_all_constants_is_left_alone():
    model = _model([helper.make_node("Clip", ["x", "low", "high"], ["y"])],
                   [numpy_helper.from_array(np.asarray(-1.0, np.float32), "low"),
                    numpy_helper.from_array(np.asarray(1.0, np.float32), "high")])
    assert onnx_rewrites.fill_omitted_clip_bounds(model.graph) == 0
    assert list(model.graph.node[0].input) == ["x", "low", "high"]


def test_a_clip_bound_computed_at_run_time_is_refused_naming_the_node_the_op_and_what_to_do():
    model = _model([helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0),
                    helper.make_node("Clip", ["x", "", "mean"], ["y"], name="clamp_to_the_mean")])
    with pytest.raises(ConversionError) as failure:
        bridge.import_into_torch(model)
    message = str(failure.value)
    assert failure.value.op == "Clip"
    assert ("onnx2torch's converter for the ONNX op Clip refused node 'clamp_to_the_mean': Dynamic value of min/max "
            "is not implemented") in message
    assert "What you can do: express that computation differently in the model" in message


def _conv_model(shared: bool, computed: bool):
    """x (1, 2, 5, 5) -> Conv(W) [-> Conv(W) again] -> y; W an initializer, or Mul(V, 2) computed at run time."""
    weight = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "W" if not computed else "V")
    nodes = []
    if computed:
        nodes.append(helper.make_node("Mul", ["V", "two"], ["W"], name="computed_weight"))
    nodes.append(helper.make_node("Conv", ["x", "W"], ["h"], name="first", pads=[1, 1, 1, 1], group=2))
    nodes.append(helper.make_node("Conv", ["h", "W"] if shared else ["h", "W2"], ["y"], name="second",
                                  pads=[1, 1, 1, 1], group=2))
    initializers = [weight, numpy_helper.from_array(np.array(2.0, np.float32), "two"),
                    numpy_helper.from_array(np.full((2, 1, 3, 3), 0.5, np.float32), "W2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])],
                              initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize(("shared", "computed", "rerouted"), [
    (False, False, set()), (True, False, {"first", "second"}), (False, True, {"first"}),
    (True, True, {"first", "second"}),
])
def test_convs_reading_a_shared_or_computed_weight_are_rerouted_on_a_copy(shared, computed, rerouted):
    model = _conv_model(shared, computed)
    original = model.SerializeToString()
    routed = onnx_rewrites.route_convs_reading_shared_or_computed_weights(model)
    assert model.SerializeToString() == original  # the referee's graph is left as it is
    assert {node.name for node in routed.graph.node if node.op_type == onnx_rewrites.CONV_OF_INPUT_WEIGHT} == rerouted
    assert (routed is model) is (not rerouted)
    if rerouted:
        assert any(entry.domain == onnx_rewrites.CONV_OF_INPUT_WEIGHT_DOMAIN for entry in routed.opset_import)


@pytest.mark.parametrize(("shared", "computed"), [(True, False), (False, True)])
def test_a_rerouted_conv_imports_and_computes_what_onnxruntime_computes(shared, computed):
    import torch

    model = _conv_model(shared, computed)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    converted = bridge.import_into_torch(model)
    actual = converted.module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(actual, expected[0], rtol=1e-6, atol=1e-6)
