"""The onnx2torch converters pytest-parity adds (LSTM, GRU, RNN, Loop, ReverseSequence), against onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
onnx2torch = pytest.importorskip("onnx2torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from pytest_parity.bridge.converters.onnx2torch_recurrent import model_opsets  # noqa: E402

# The CUDA build of torch on a machine without a driver warns "CUDA initialization: ..." at the first backward pass of
# the process (TorchModel.run filters it the same way); it says nothing about the converters.
pytestmark = pytest.mark.filterwarnings("ignore:CUDA initialization:UserWarning")

OPSET = 17
SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def make_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    # IR 8 is what opset 17 needs; onnx's default (IR 14 in onnx 1.23) is newer than onnxruntime 1.30 reads.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def convert(model):
    with model_opsets(model):
        return onnx2torch.convert(model)


def run_onnxruntime(model, feed):
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def recurrent_model(op, direction, layout, with_initial_states, linear_before_reset=0, rng=None, **attributes):
    rng = rng or np.random.default_rng(0)
    directions = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    weights = {
        "W": rng.standard_normal((directions, gates * HIDDEN, INPUT)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((directions, gates * HIDDEN, HIDDEN)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((directions, 2 * gates * HIDDEN)).astype(np.float32) * 0.5,
    }
    x_shape = [SEQ, BATCH, INPUT] if layout == 0 else [BATCH, SEQ, INPUT]
    state_shape = [directions, BATCH, HIDDEN] if layout == 0 else [BATCH, directions, HIDDEN]
    y_shape = [SEQ, directions, BATCH, HIDDEN] if layout == 0 else [BATCH, SEQ, directions, HIDDEN]
    state_names = ["initial_h", "initial_c"] if op == "LSTM" else ["initial_h"]
    node_inputs = ["X", "W", "R", "B", ""] + (state_names if with_initial_states else [])
    outputs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    if op == "GRU":
        attributes["linear_before_reset"] = linear_before_reset
    node = helper.make_node(op, node_inputs, outputs, name=f"the_{op.lower()}", hidden_size=HIDDEN,
                            direction=direction, layout=layout, **attributes)
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    feed = {"X": rng.standard_normal(x_shape).astype(np.float32)}
    if with_initial_states:
        for name in state_names:
            graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape))
            feed[name] = rng.standard_normal(state_shape).astype(np.float32)
    graph_outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)] + [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, state_shape) for name in outputs[1:]]
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    return make_model([node], graph_inputs, graph_outputs, initializers), feed


CASES = [
    *[("LSTM", d, layout, states, 0) for d, layout, states in
      itertools.product(("forward", "reverse", "bidirectional"), (0, 1), (False, True))],
    *[("GRU", d, layout, states, lbr) for d, layout, states, lbr in
      itertools.product(("forward", "reverse", "bidirectional"), (0, 1), (False, True), (0, 1))],
    *[("RNN", d, layout, states, 0) for d, layout, states in
      itertools.product(("forward", "reverse", "bidirectional"), (0, 1), (False, True))],
]


def batch_first_twin(model, feed):
    """The same node with layout=1, and its inputs: onnxruntime has no layout=1 kernels, so the reference is the
    layout-0 node with the spec's transpositions (X [batch, seq, in], Y [batch, seq, dirs, hidden], states [batch,
    dirs, hidden])."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    node = twin.graph.node[0]
    next(a for a in node.attribute if a.name == "layout").i = 1
    for value in [*twin.graph.input, *twin.graph.output]:
        dims = value.type.tensor_type.shape.dim
        order = [2, 0, 1, 3] if len(dims) == 4 else [1, 0, 2]
        values = [d.dim_value for d in dims]
        for dim, axis in zip(dims, order):
            dim.dim_value = values[axis]
    return twin, {name: value.swapaxes(0, 1).copy() for name, value in feed.items()}


def to_batch_first(outputs):
    return [output.transpose(2, 0, 1, 3) if output.ndim == 4 else output.swapaxes(0, 1) for output in outputs]


@pytest.mark.parametrize(("op", "direction", "layout", "with_initial_states", "linear_before_reset"), CASES,
                         ids=lambda value: str(value))
def test_recurrent_node_matches_onnxruntime(op, direction, layout, with_initial_states, linear_before_reset):
    model, feed = recurrent_model(op, direction, 0, with_initial_states, linear_before_reset)
    expected = run_onnxruntime(model, feed)
    if layout == 1:
        model, feed = batch_first_twin(model, feed)
        onnx.checker.check_model(model)
        expected = to_batch_first(expected)
    module = convert(model)
    with torch.no_grad():
        actual = as_list(module(*[torch.from_numpy(feed[name]) for name in feed]))
    assert len(actual) == len(expected) == (3 if op == "LSTM" else 2)
    for name, got, want in zip(("Y", "Y_h", "Y_c"), actual, expected):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.parametrize(("op", "linear_before_reset"), [("LSTM", 0), ("GRU", 0), ("GRU", 1), ("RNN", 0)])
def test_gradients_reach_w_r_b_as_parameters(op, linear_before_reset):
    model, feed = recurrent_model(op, "bidirectional", 0, True, linear_before_reset)
    module = convert(model)
    parameters = {name.rsplit(".", 1)[-1]: p for name, p in module.named_parameters()}
    assert set(parameters) == {"W", "R", "B"}
    assert parameters["W"].shape == (2, GATES[op] * HIDDEN, INPUT)
    inputs = [torch.from_numpy(feed[name]) for name in feed]
    outputs = as_list(module(*inputs))
    sum(output.sum() for output in outputs).backward()
    for name, parameter in parameters.items():
        assert parameter.grad is not None, name
        # Every element of W, R and B (both bias halves) influences the outputs.
        assert torch.count_nonzero(parameter.grad) == parameter.numel(), name


def test_only_the_outputs_the_node_names_are_returned():
    model, feed = recurrent_model("LSTM", "forward", 0, False)
    node = model.graph.node[0]
    del node.output[1:]
    del model.graph.output[1:]
    expected = run_onnxruntime(model, feed)
    actual = convert(model)(torch.from_numpy(feed["X"]))
    assert isinstance(actual, torch.Tensor)
    np.testing.assert_allclose(actual.detach().numpy(), expected[0], atol=1e-5, rtol=0)


def test_a_missing_bias_means_zeros():
    model, feed = recurrent_model("GRU", "forward", 0, False, linear_before_reset=1)
    node = model.graph.node[0]
    node.input[3] = ""
    model.graph.initializer.pop()  # B
    expected = run_onnxruntime(model, feed)
    actual = as_list(convert(model)(torch.from_numpy(feed["X"])))
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("change", "named"), [
    (lambda node: node.attribute.append(helper.make_attribute("clip", 2.5)), "attribute clip=2.5"),
    (lambda node: node.attribute.append(helper.make_attribute("activations", ["Relu", "Tanh", "Tanh"])),
     "attribute activations=['Relu', 'Tanh', 'Tanh']"),
    (lambda node: node.attribute.append(helper.make_attribute("activation_alpha", [0.5])),
     "attribute activation_alpha=[0.5]"),
    (lambda node: node.attribute.append(helper.make_attribute("input_forget", 1)), "attribute input_forget=1"),
    (lambda node: node.input.__setitem__(4, "X_lengths"), "input sequence_lens='X_lengths'"),
])
def test_unsupported_attributes_name_node_attribute_and_value(change, named):
    model, _ = recurrent_model("LSTM", "forward", 0, False)
    node = model.graph.node[0]
    for attribute in list(node.attribute):
        if attribute.name == "activations":
            node.attribute.remove(attribute)
    change(node)
    with pytest.raises(NotImplementedError) as failure:
        convert(model)
    message = str(failure.value)
    assert "ONNX LSTM node 'the_lstm'" in message
    assert named in message
    assert "not supported" in message
    assert "\n" not in message


def test_peepholes_are_refused():
    model, _ = recurrent_model("LSTM", "forward", 0, False)
    node = model.graph.node[0]
    node.input.extend(["", "", "P"])
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1, 3 * HIDDEN), np.float32), "P"))
    with pytest.raises(NotImplementedError, match=r"ONNX LSTM node 'the_lstm': input P='P' is not supported"):
        convert(model)


def test_explicit_default_activations_are_accepted():
    model, feed = recurrent_model("GRU", "bidirectional", 0, False, linear_before_reset=1,
                                  activations=["Sigmoid", "Tanh", "sigmoid", "tanh"])
    expected = run_onnxruntime(model, feed)
    actual = as_list(convert(model)(torch.from_numpy(feed["X"])))
    np.testing.assert_allclose(actual[0].detach().numpy(), expected[0], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# ReverseSequence
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence_matches_onnxruntime(batch_axis, time_axis):
    shape = [SEQ, BATCH, 2] if time_axis == 0 else [BATCH, SEQ, 2]
    node = helper.make_node("ReverseSequence", ["x", "lengths"], ["y"], batch_axis=batch_axis, time_axis=time_axis)
    model = make_model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                                helper.make_tensor_value_info("lengths", TensorProto.INT64, [BATCH])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    lengths = np.array([SEQ, 1, 3], np.int64)
    expected = run_onnxruntime(model, {"x": x, "lengths": lengths})[0]
    x_tensor = torch.from_numpy(x).requires_grad_(True)
    actual = convert(model)(x_tensor, torch.from_numpy(lengths))
    np.testing.assert_array_equal(actual.detach().numpy(), expected)
    actual.sum().backward()
    np.testing.assert_array_equal(x_tensor.grad.numpy(), np.ones(shape, np.float32))


# ----------------------------------------------------------------------------------------------------------------------
# Loop
# ----------------------------------------------------------------------------------------------------------------------


def loop_model(with_condition: bool):
    """h <- tanh(h @ w + x[i]) for i < M (and while i < 3 when with_condition), w and x read from the outer scope;
    the carried weight passes straight through the body, a scan output collects every h."""
    body = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "i"], ["x_i"], axis=0),
            helper.make_node("MatMul", ["h_in", "w"], ["hw"]),
            helper.make_node("Add", ["hw", "x_i"], ["pre"]),
            helper.make_node("Mul", ["pre", "scale_in"], ["scaled"]),
            helper.make_node("Tanh", ["scaled"], ["h_out"]),
            helper.make_node("Identity", ["h_out"], ["h_scan"]),
            helper.make_node("Add", ["i", "one"], ["next_i"]),
            helper.make_node("Less", ["next_i", "three"], ["cond_out"]),
        ],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [BATCH, HIDDEN]),
         helper.make_tensor_value_info("scale_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [BATCH, HIDDEN]),
         helper.make_tensor_value_info("scale_in", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("h_scan", TensorProto.FLOAT, [BATCH, HIDDEN])],
        initializer=[numpy_helper.from_array(np.array(1, np.int64), "one")],
    )
    rng = np.random.default_rng(3)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.5, "w"),
        numpy_helper.from_array(np.array(SEQ, np.int64), "trip_count"),
        numpy_helper.from_array(np.array(0.9, np.float32), "scale"),
    ]
    if with_condition:
        initializers += [numpy_helper.from_array(np.array(True), "keep_going"),
                         numpy_helper.from_array(np.array(3, np.int64), "three")]
    else:
        body.node[-1].CopyFrom(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    loop = helper.make_node("Loop", ["trip_count", "keep_going" if with_condition else "", "h0", "scale"],
                            ["h_last", "scale_last", "h_all"], name="the_loop", body=body)
    model = make_model(
        [loop],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [SEQ, BATCH, HIDDEN]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [BATCH, HIDDEN])],
        [helper.make_tensor_value_info("h_last", TensorProto.FLOAT, [BATCH, HIDDEN]),
         helper.make_tensor_value_info("scale_last", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("h_all", TensorProto.FLOAT, [None, BATCH, HIDDEN])],
        initializers)
    feed = {"x": rng.standard_normal((SEQ, BATCH, HIDDEN)).astype(np.float32),
            "h0": rng.standard_normal((BATCH, HIDDEN)).astype(np.float32)}
    return model, feed


@pytest.mark.parametrize("with_condition", [False, True])
def test_loop_matches_onnxruntime_and_passes_gradients_to_outer_weights(with_condition):
    model, feed = loop_model(with_condition)
    expected = run_onnxruntime(model, feed)
    assert expected[2].shape[0] == (3 if with_condition else SEQ)
    module = convert(model)
    weights = {name: b for name, b in module.named_buffers() if b.is_floating_point() and b.dim() == 2}
    assert len(weights) == 1  # w, an outer-scope initializer, stays one tensor of the enclosing model
    (weight,) = weights.values()
    weight.requires_grad_(True)
    x = torch.from_numpy(feed["x"]).requires_grad_(True)
    actual = as_list(module(x, torch.from_numpy(feed["h0"])))
    for got, want in zip(actual, expected):
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-5, rtol=0)
    (actual[0].sum() + actual[2].sum()).backward()
    assert weight.grad is not None and torch.count_nonzero(weight.grad) == weight.numel()
    assert x.grad is not None and torch.count_nonzero(x.grad[:expected[2].shape[0]]) > 0


def test_loop_needs_the_model_opsets():
    model, _ = loop_model(False)
    with pytest.raises(NotImplementedError, match=r"ONNX Loop node 'the_loop': converting its body needs"):
        onnx2torch.convert(model)


# -- GlobalMaxPool ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 5, 4), (2, 3, 2, 3, 4)])
def test_global_max_pool_agrees_with_onnxruntime_and_routes_the_gradient_to_the_maximum(shape):
    from pytest_parity.bridge.converters import onnx2torch_pooling  # noqa: F401 - registers GlobalMaxPool

    rank = len(shape)
    model = make_model([helper.make_node("GlobalMaxPool", ["x"], ["y"])],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:2], *([1] * (rank - 2))])])
    x = np.random.default_rng(rank).standard_normal(shape).astype(np.float32)
    module = convert(model)
    tensor = torch.from_numpy(x).requires_grad_(True)
    output = module(tensor)
    assert np.array_equal(output.detach().numpy(), run_onnxruntime(model, {"x": x})[0])
    output.sum().backward()
    flat = x.reshape(*shape[:2], -1)
    expected = np.zeros_like(flat)
    np.put_along_axis(expected, flat.argmax(-1)[..., None], 1.0, axis=-1)
    assert np.array_equal(tensor.grad.numpy(), expected.reshape(shape))


# -- BatchNormalization of computed statistics -----------------------------------------------------------------------

def test_batch_norm_of_computed_statistics_agrees_with_onnxruntime_and_differentiates_through_them():
    from pytest_parity.bridge import onnx_rewrites
    from pytest_parity.bridge.converters import onnx2torch_normalization  # noqa: F401 - registers BatchNormOfInputs

    # Weight standardisation as torch.onnx writes it: mean and variance of x computed, then an inference BN.
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean4"], axes=[0, 2, 3], keepdims=0),
             helper.make_node("Mul", ["x", "x"], ["squared"]),
             helper.make_node("ReduceMean", ["squared"], ["mean_of_squares"], axes=[0, 2, 3], keepdims=0),
             helper.make_node("Mul", ["mean4", "mean4"], ["square_of_mean"]),
             helper.make_node("Sub", ["mean_of_squares", "square_of_mean"], ["variance"]),
             helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean4", "variance"], ["y"],
                              epsilon=1e-3)]
    scale = np.linspace(0.5, 1.5, 3).astype(np.float32)
    bias = np.linspace(-1, 1, 3).astype(np.float32)
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
                       [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")])
    routed = onnx_rewrites.route_normalizations_of_computed_or_shared_weights(model)
    assert [n.op_type for n in routed.graph.node][-1] == onnx_rewrites.BATCH_NORM_OF_INPUTS
    assert model.graph.node[-1].op_type == "BatchNormalization"  # the referee's copy is left as it is
    x = np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    module = convert(routed)
    tensor = torch.from_numpy(x).requires_grad_(True)
    output = module(tensor)
    np.testing.assert_allclose(output.detach().numpy(), run_onnxruntime(model, {"x": x})[0], atol=1e-5)
    output.sum().backward()  # through the computed statistics, which F.batch_norm would refuse
    assert tensor.grad is not None and np.isfinite(tensor.grad.numpy()).all()


@pytest.mark.parametrize("op", ["BatchNormalization", "InstanceNormalization"])
def test_a_normalization_applied_twice_keeps_one_weight_and_agrees_with_onnxruntime(op):
    from pytest_parity.bridge import onnx_rewrites
    from pytest_parity.bridge.converters import onnx2torch_normalization  # noqa: F401 - registers the ops of inputs
    from pytest_parity.bridge.pipeline import share_weights_read_twice

    weights = ["scale", "bias", "mean", "var"] if op == "BatchNormalization" else ["scale", "bias"]
    nodes = [helper.make_node(op, ["x", *weights], ["once"], epsilon=1e-3),
             helper.make_node("Tanh", ["once"], ["squashed"]),
             helper.make_node(op, ["squashed", *weights], ["y"], epsilon=1e-3)]
    rng = np.random.default_rng(6)
    values = {"scale": rng.uniform(0.5, 1.5, 3), "bias": rng.uniform(-1, 1, 3), "mean": rng.uniform(-1, 1, 3),
              "var": rng.uniform(0.5, 1.5, 3)}
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 4])],
                       [numpy_helper.from_array(values[name].astype(np.float32), name) for name in weights])
    routed = onnx_rewrites.route_normalizations_of_computed_or_shared_weights(model)
    assert {n.op_type for n in routed.graph.node} - {"Tanh"} == {
        onnx_rewrites.BATCH_NORM_OF_INPUTS if op == "BatchNormalization" else onnx_rewrites.INSTANCE_NORM_OF_INPUTS}
    share_weights_read_twice(routed.graph)
    module = convert(routed)
    scales = [t for _, t in [*module.named_parameters(), *module.named_buffers()] if t.shape == (3,)]
    assert len(scales) == len(weights)  # one tensor per weight, not one per node
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    output = module(torch.from_numpy(x))
    np.testing.assert_allclose(output.detach().numpy(), run_onnxruntime(model, {"x": x})[0], atol=1e-5)


# -- GatherND with batch_dims != 0 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_dims, data_shape, indices_shape", [
    (1, (2, 5, 3), (2, 4, 1)),        # keras-hub DeBERTa-v3: one index per position, rows of a per-example table
    (1, (2, 5, 3), (2, 4, 2)),        # indices address a scalar
    (2, (2, 3, 4, 6), (2, 3, 5, 1)),  # two batch axes
])
def test_gather_nd_with_batch_dims_agrees_with_onnxruntime_and_scatters_its_gradient(batch_dims, data_shape,
                                                                                      indices_shape):
    from pytest_parity.bridge import onnx_rewrites
    from pytest_parity.bridge.converters import onnx2torch_gather_nd  # noqa: F401 - registers GatherNDBatched

    rng = np.random.default_rng(batch_dims)
    depth = indices_shape[-1]
    bounds = np.array(data_shape[batch_dims:batch_dims + depth])
    indices = (rng.integers(0, 1 << 30, indices_shape) % bounds).astype(np.int64)
    indices[(0,) * (len(indices_shape) - 1)] -= bounds  # negative indices count from the end
    output_shape = [*indices_shape[:-1], *data_shape[batch_dims + depth:]]
    model = make_model([helper.make_node("GatherND", ["data", "indices"], ["y"], batch_dims=batch_dims)],
                       [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(data_shape)),
                        helper.make_tensor_value_info("indices", TensorProto.INT64, list(indices_shape))],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)])
    routed = onnx_rewrites.route_gather_nd_with_batch_dims(model)
    assert routed.graph.node[0].op_type == onnx_rewrites.GATHER_ND_BATCHED
    assert model.graph.node[0].op_type == "GatherND"  # the referee's copy is left as it is
    data = rng.standard_normal(data_shape).astype(np.float32)
    module = convert(routed)
    tensor = torch.from_numpy(data).requires_grad_(True)
    output = module(tensor, torch.from_numpy(indices))
    expected = run_onnxruntime(model, {"data": data, "indices": indices})[0]
    assert np.array_equal(output.detach().numpy(), expected)
    weights = rng.standard_normal(output.shape).astype(np.float32)
    (output * torch.from_numpy(weights)).sum().backward()
    # The gradient of a gather is the cotangent scattered back (added where an element was gathered twice).
    scattered = np.zeros_like(data).reshape(-1)
    positions = np.arange(data.size).reshape(data_shape)
    gathered_positions = run_onnxruntime(
        make_model([helper.make_node("GatherND", ["data", "indices"], ["y"], batch_dims=batch_dims)],
                   [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(data_shape)),
                    helper.make_tensor_value_info("indices", TensorProto.INT64, list(indices_shape))],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)]),
        {"data": positions.astype(np.float32), "indices": indices})[0].astype(np.int64)
    np.add.at(scattered, gathered_positions.reshape(-1), weights.reshape(-1))
    np.testing.assert_allclose(tensor.grad.numpy(), scattered.reshape(data_shape), rtol=1e-6, atol=1e-6)


# -- Clip of integers ------------------------------------------------------------------------------------------------

def test_a_clip_of_integers_keeps_its_integer_type_and_agrees_with_onnxruntime():
    from pytest_parity.bridge import onnx_rewrites
    from pytest_parity.bridge.converters import onnx2torch_clip  # noqa: F401 - registers ClipOfIntegers

    # DeBERTa-v2's relative positions: an int64 index clamped, then used by a GatherElements.
    nodes = [helper.make_node("Clip", ["position", "low", "high"], ["clamped"]),
             helper.make_node("GatherElements", ["table", "clamped"], ["y"], axis=1)]
    model = make_model(nodes, [helper.make_tensor_value_info("table", TensorProto.FLOAT, [2, 6]),
                               helper.make_tensor_value_info("position", TensorProto.INT64, [2, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
                       [numpy_helper.from_array(np.array(0, np.int64), "low"),
                        numpy_helper.from_array(np.array(5, np.int64), "high")])
    routed = onnx_rewrites.route_integer_clips(model)
    assert routed.graph.node[0].op_type == onnx_rewrites.CLIP_OF_INTEGERS and model.graph.node[0].op_type == "Clip"
    table = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    position = np.array([[-3, 0, 4, 9], [7, 2, -1, 5]], np.int64)
    output = convert(routed)(torch.from_numpy(table), torch.from_numpy(position))
    assert np.array_equal(output.numpy(), run_onnxruntime(model, {"table": table, "position": position})[0])
    # A floating Clip stays onnx2torch's.
    float_clip = make_model([helper.make_node("Clip", ["x", "low", "high"], ["y"])],
                            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
                            [numpy_helper.from_array(np.array(0, np.float32), "low"),
                             numpy_helper.from_array(np.array(1, np.float32), "high")])
    assert onnx_rewrites.route_integer_clips(float_clip) is float_clip
