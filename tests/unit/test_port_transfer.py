"""Port mode's pieces that need no framework: layouts, bindings and their adjoints, the flatten permutation, pairing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from pytest_parity.errors import ParityUsageError, WeightTransferError
from pytest_parity.layouts import check_inputs_fit, parse_layouts
from pytest_parity.modes.port import divergence, keras_layers, torch_layers
from pytest_parity.modes.port.ops import (
    LSTM_KERAS_TO_ONNX,
    LayerCall,
    ModelStructure,
    ParamOp,
    merge_into,
    moved,
    reorder_gates,
    restore_gates,
    same,
    same_padding,
    stacked,
)
from pytest_parity.modes.port.transfer import FlattenPermutation, plan_transfer, settle_flatten_orders

rng = np.random.default_rng(0)


# -- layouts ---------------------------------------------------------------------------------------------------------

def test_layouts_permute_inputs_and_back():
    pair = parse_layouts(("nhwc", "NCHW"))
    x = rng.standard_normal((2, 5, 4, 3))
    assert pair.source_to_target(x).shape == (2, 3, 5, 4)
    assert np.array_equal(pair.target_to_source(pair.source_to_target(x)), x)
    assert pair.target_shape_of((2, 5, 4, 3)) == (2, 3, 5, 4)


def test_layouts_move_channels_for_other_ranks_and_leave_rank_two_alone():
    pair = parse_layouts(("NHWC", "NCHW"))
    sequence = rng.standard_normal((2, 7, 3))
    assert pair.source_to_target(sequence).shape == (2, 3, 7)
    assert np.array_equal(pair.target_to_source(pair.source_to_target(sequence)), sequence)
    logits = rng.standard_normal((2, 10))
    assert pair.target_to_source(logits) is logits


def test_general_permutation_layouts_touch_only_their_own_rank():
    pair = parse_layouts(("NTC", "TNC"))
    x = rng.standard_normal((2, 7, 3))
    assert pair.source_to_target(x).shape == (7, 2, 3)
    assert not pair.moves_channels
    assert pair.source_to_target(rng.standard_normal((2, 7, 3, 1))).shape == (2, 7, 3, 1)


@pytest.mark.parametrize("value, message", [
    (("NHWC",), "must be a pair"),
    ("NHWC", "must be a pair"),
    (("NHWC", 3), "must be a pair"),
    (("NHWC", "NCHX"), "do not name the same axes"),
    (("NHWC", "NCH"), "do not name the same axes"),
    (("NH1C", "NCH1"), "is not a layout"),
    (("N", "N"), "is not a layout"),
])
def test_invalid_layouts_name_the_problem(value, message):
    with pytest.raises(ParityUsageError, match=message):
        parse_layouts(value)


def test_inputs_of_another_rank_are_refused():
    with pytest.raises(ParityUsageError, match=r"rank-4 inputs, but input\[1\] has shape \[2, 5\]"):
        check_inputs_fit(parse_layouts(("NHWC", "NCHW")), [("input[0]", (2, 4, 4, 3)), ("input[1]", (2, 5))])


# -- bindings --------------------------------------------------------------------------------------------------------

def _adjoint_holds(binding, variables):
    """<export(v), g> == <v, export_adjoint(g)> and <load(t), h> == <t, load_adjoint(h)> for random v, g, t, h."""
    exported = binding.export(variables)
    g = rng.standard_normal(exported.shape)
    back = binding.export_gradient(g)
    assert np.isclose(np.sum(exported * g), sum(np.sum(variables[k] * back[k]) for k in variables))
    t = rng.standard_normal(exported.shape)
    loaded = binding.load(t)
    h = {k: rng.standard_normal(v.shape) for k, v in loaded.items()}
    assert np.isclose(sum(np.sum(loaded[k] * h[k]) for k in h), np.sum(t * binding.load_gradient(h)))


def test_gate_reorder_round_trips():
    weight = rng.standard_normal((8, 3))
    reordered = reorder_gates(weight, LSTM_KERAS_TO_ONNX, 0)
    assert np.array_equal(reordered[2:4], weight[6:8])  # Keras o moves to ONNX position 1
    assert np.array_equal(restore_gates(reordered, LSTM_KERAS_TO_ONNX, 0), weight)


def test_element_moving_bindings_are_their_own_adjoints():
    binding = moved("k", lambda k: reorder_gates(k.T, LSTM_KERAS_TO_ONNX, 0),
                    lambda w: restore_gates(w, LSTM_KERAS_TO_ONNX, 0).T)
    _adjoint_holds(binding, {"k": rng.standard_normal((3, 8))})
    _adjoint_holds(stacked([same("a"), same("b")]), {"a": rng.standard_normal(5), "b": rng.standard_normal(5)})


def test_single_bias_binding_exports_zero_recurrent_bias_and_sums_on_load():
    layer_bias = keras_layers._single_bias("bias", LSTM_KERAS_TO_ONNX)
    bias = rng.standard_normal(8)
    onnx_bias = layer_bias.export({"bias": bias})
    assert onnx_bias.shape == (16,) and not onnx_bias[8:].any()
    assert np.allclose(layer_bias.load(onnx_bias)["bias"], bias)
    split = rng.standard_normal(16)
    assert np.allclose(layer_bias.load(split)["bias"],
                       restore_gates(split[:8] + split[8:], LSTM_KERAS_TO_ONNX, 0))
    _adjoint_holds(layer_bias, {"bias": bias})


def test_tf_same_padding_puts_the_odd_element_at_the_end():
    assert same_padding(8, 3, 2, 1) == (0, 1)
    assert same_padding(9, 3, 2, 1) == (1, 1)
    assert same_padding(8, 3, 1, 1) == (1, 1)
    assert same_padding(7, 1, 1, 1) == (0, 0)


# -- flatten permutation ---------------------------------------------------------------------------------------------

def test_flatten_permutation_matches_flattening_in_the_other_order():
    height, width, channels, out = 2, 3, 4, 5
    feature_map = rng.standard_normal((1, height, width, channels))
    weight = rng.standard_normal((out, height * width * channels))  # [out, in] for an HWC-flattened input
    flatten = FlattenPermutation((height, width, channels), (2, 0, 1))
    torch_weight = flatten.to_target(weight)
    torch_features = feature_map.transpose(0, 3, 1, 2).reshape(1, -1)
    assert np.allclose(torch_features @ torch_weight.T, feature_map.reshape(1, -1) @ weight.T)
    assert np.array_equal(flatten.to_source(torch_weight), weight)
    assert np.array_equal(flatten.features_to_source(torch_features), feature_map.reshape(1, -1))


# -- pairing ---------------------------------------------------------------------------------------------------------

def _gemm(layer, weight, bias=None, kind="Dense"):
    bindings = {"W": same(weight)}
    if bias:
        bindings["B"] = same(bias)
    return ParamOp("Gemm", layer, kind, bindings)


def test_pairing_carries_values_and_gradients_by_order():
    source = ModelStructure([_gemm("d1", "d1/W", "d1/b"), _gemm("d2", "d2/W")], [])
    target = ModelStructure([_gemm("fc1", "fc1.w", "fc1.b", "Linear"), _gemm("fc2", "fc2.w", kind="Linear")], [])
    source_values = {"d1/W": rng.standard_normal((3, 4)), "d1/b": rng.standard_normal(3),
                     "d2/W": rng.standard_normal((2, 3))}
    target_values = {name: np.zeros_like(source_values[s]) for name, s in
                     [("fc1.w", "d1/W"), ("fc1.b", "d1/b"), ("fc2.w", "d2/W")]}
    plan = plan_transfer(source, target, source_values, target_values, "src", "tgt")
    carried = plan.transfer(source_values)
    assert np.array_equal(carried["fc2.w"], source_values["d2/W"])
    assert plan.target_names() == {"d1/W": "fc1.w", "d1/b": "fc1.b", "d2/W": "fc2.w"}
    grads = plan.gradients_to_source({"fc1.w": np.ones((3, 4)), "fc1.b": None, "fc2.w": np.ones((2, 3))})
    assert grads["d1/b"] is None and grads["d2/W"].shape == (2, 3)


def test_pairing_failure_shows_both_sides_and_marks_the_row():
    source = ModelStructure([_gemm("d1", "d1/W", "d1/b"), _gemm("d2", "d2/W", "d2/b")], [])
    target = ModelStructure([_gemm("fc1", "fc1.w", "fc1.b", "Linear"), _gemm("fc2", "fc2.w", kind="Linear")], [])
    values = {"d1/W": np.ones((3, 4)), "d1/b": np.ones(3), "d2/W": np.ones((2, 3)), "d2/b": np.ones(2),
              "fc1.w": np.ones((3, 4)), "fc1.b": np.ones(3), "fc2.w": np.ones((2, 3))}
    with pytest.raises(WeightTransferError) as failure:
        plan_transfer(source, target, values, values, "Keras 'm'", "PyTorch M")
    lines = str(failure.value).splitlines()
    assert "do not correspond at row 2" in lines[0]
    assert "'d2' has a bias B[2] (d2/b) but 'fc2' has none" in lines[1]
    marked = next(line for line in lines if line.lstrip().startswith("->"))
    assert "d2 (Dense) Gemm W[2,3] B[2]" in marked and "!= fc2 (Linear) Gemm W[2,3]" in marked


def test_structural_attribute_mismatch_is_refused_with_its_hint():
    def gru(layer, reset):
        return ParamOp("GRU", layer, "GRU", {"W": same(layer + "W")}, {"linear_before_reset": reset},
                       ("linear_before_reset",))

    values = {"gW": np.ones((1, 6, 2)), "rW": np.ones((1, 6, 2))}
    with pytest.raises(WeightTransferError, match="reset_after=False"):
        plan_transfer(ModelStructure([gru("g", 0)], []), ModelStructure([gru("r", 1)], []), values, values, "a", "b")


def _flatten_case(target_features_from):
    """A Dense after a (2, 2, 3) feature map in the source; the target's Linear sees the same map flattened as
    ``target_features_from(map)`` says. Returns the plan after settling flatten orders."""
    feature_map = rng.standard_normal((4, 2, 2, 3))

    def structure(layer, features, pre_flatten):
        calls = [LayerCall("pool", "MaxPooling2D", None, pre_flatten),
                 LayerCall(layer, "Dense", features, np.zeros((4, 5)))]
        return ModelStructure([_gemm(layer, layer + "/W")], calls)

    source = structure("d", feature_map.reshape(4, -1), feature_map)
    target = structure("fc", target_features_from(feature_map), feature_map.transpose(0, 3, 1, 2))
    values = {"d/W": rng.standard_normal((5, 12)), "fc/W": np.zeros((5, 12))}
    plan = plan_transfer(source, target, values, values, "a", "b")
    assigned = []
    settle_flatten_orders(plan, source, target, values, lambda: target, assigned.append)
    return plan, assigned


def test_the_flatten_order_is_read_from_the_activations():
    plan, assigned = _flatten_case(lambda m: m.transpose(0, 3, 1, 2).reshape(4, -1))  # PyTorch's (C, H, W)
    assert plan.pairs[0].flatten == FlattenPermutation((2, 2, 3), (2, 0, 1))
    assert "flattened feature map" in plan.notes[0] and len(assigned) == 1


def test_a_port_that_flattens_in_the_source_order_on_purpose_gets_no_permutation():
    # x.permute(0, 2, 3, 1).flatten(1): a channels-first map flattened in Keras order, shapes say otherwise.
    plan, assigned = _flatten_case(lambda m: m.reshape(4, -1))
    assert plan.pairs[0].flatten is None and plan.notes == [] and assigned == []


def test_a_flatten_in_no_axis_order_is_named_not_guessed():
    shuffle = rng.permutation(12)
    plan, assigned = _flatten_case(lambda m: m.reshape(4, -1)[:, shuffle])
    assert plan.pairs[0].flatten is None and assigned == []
    assert "no reordering of the feature map ([2,2,3] or [3,2,2]" in plan.notes[0]
    assert "check the flatten" in plan.notes[0]


def test_the_order_is_found_from_the_target_side_when_the_source_recorded_no_feature_map():
    # A PyTorch source pooling with F.max_pool2d records no pooled map; the Keras target's MaxPooling2D does.
    feature_map = rng.standard_normal((4, 3, 2, 2))  # NCHW, flattened (C, H, W) by the source
    source = ModelStructure([_gemm("fc", "fc/W")], [LayerCall("fc", "Linear", feature_map.reshape(4, -1), None)])
    target = ModelStructure([_gemm("d", "d/W")], [
        LayerCall("pool", "MaxPooling2D", None, feature_map.transpose(0, 2, 3, 1)),
        LayerCall("d", "Dense", feature_map.transpose(0, 2, 3, 1).reshape(4, -1), None)])
    values = {"fc/W": rng.standard_normal((5, 12)), "d/W": np.zeros((5, 12))}
    plan = plan_transfer(source, target, values, values, "a", "b")
    settle_flatten_orders(plan, source, target, values, lambda: target, lambda _: None)
    flatten = plan.pairs[0].flatten
    assert flatten is not None and flatten.source_shape == (3, 2, 2) and flatten.target_shape == (2, 2, 3)
    weight = values["fc/W"]
    assert np.allclose(feature_map.transpose(0, 2, 3, 1).reshape(4, -1) @ flatten.to_target(weight).T,
                       feature_map.reshape(4, -1) @ weight.T)


# -- transformer layers ------------------------------------------------------------------------------------------------

def _einsum_layer(equation, kernel_shape, bias_axes=None, bias_shape=None):
    """A stand-in with the attributes the EinsumDense rule reads (the rule sees shapes and names, never values)."""
    kernel = SimpleNamespace(shape=kernel_shape)
    bias = SimpleNamespace(shape=bias_shape) if bias_axes else None
    layer = SimpleNamespace(equation=equation, kernel=kernel, bias=bias, bias_axes=bias_axes, path="mha/query",
                            activation=None)
    names = {id(kernel): "kernel"} | ({id(bias): "bias"} if bias is not None else {})
    return layer, names


@pytest.mark.parametrize("equation, kernel_shape, bias_axes, bias_shape, input_shape", [
    ("abc,cde->abde", (8, 2, 4), "de", (2, 4), (3, 5, 8)),      # MultiHeadAttention query/key/value
    ("abcd,cde->abe", (2, 4, 8), "e", (8,), (3, 5, 2, 4)),       # MultiHeadAttention output
    ("ab,bc->ac", (6, 3), "c", (3,), (4, 6)),                     # a plain Dense
    ("...b,bc->...c", (6, 3), None, None, (2, 4, 6)),             # leading axes elided
    ("abc,dce->abde", (8, 2, 4), "de", (8, 4), (3, 5, 2)),        # kernel axes in another order than the Gemm's
])
def test_einsum_dense_is_the_gemm_its_binding_exports(equation, kernel_shape, bias_axes, bias_shape, input_shape):
    layer, names = _einsum_layer(equation, kernel_shape, bias_axes, bias_shape)
    (op,) = keras_layers._einsum_dense(layer, names, None)
    values = {"kernel": rng.standard_normal(kernel_shape)} | (
        {"bias": rng.standard_normal(bias_shape)} if bias_axes else {})
    tensors = op.export(values)
    x = rng.standard_normal(input_shape)
    expected = np.einsum(equation, x, values["kernel"]) + (values["bias"] if bias_axes else 0)
    contracted = tensors["W"].shape[1]
    flat_in = x.reshape(-1, contracted)
    gemm = flat_in @ tensors["W"].T + (tensors["B"] if bias_axes else 0)
    assert np.allclose(gemm.reshape(expected.shape), expected)
    # Loading what was exported gives the variables back; each binding's maps are adjoint.
    loaded = op.load(tensors)
    assert all(np.array_equal(loaded[name], values[name]) for name in values)
    for binding in op.bindings.values():
        _adjoint_holds(binding, {name: values[name] for name in binding.variables})


@pytest.mark.parametrize("equation, bias_axes, message", [
    ("abc,bd->acd", None, "trailing axes"),
    ("abc,acd->abd", None, "batched product"),
    ("abc,cde->abde", "e", "Use bias_axes='de'"),
])
def test_einsum_dense_that_is_no_gemm_is_refused_naming_the_layer(equation, bias_axes, message):
    layer, names = _einsum_layer(equation, (5, 2, 4) if equation.startswith("abc,cde") else (5, 4),
                                 bias_axes, (4,) if bias_axes else None)
    if "acd" in equation:
        layer.kernel.shape = (3, 5, 4)
    with pytest.raises(ParityUsageError, match="mha/query") as failure:
        keras_layers._einsum_dense(layer, names, None)
    assert message in str(failure.value)


def _torch_attention(qkv_same=True, bias=True):
    """A stand-in with the attributes the nn.MultiheadAttention rule reads."""
    tensors = {}

    def tensor(name, shape):
        tensors[name] = SimpleNamespace(shape=shape)
        return tensors[name]

    module = SimpleNamespace(
        bias_k=None, add_zero_attn=False, num_heads=2, head_dim=4, _qkv_same_embed_dim=qkv_same,
        in_proj_weight=tensor("attn.in_proj_weight", (24, 8)) if qkv_same else None,
        q_proj_weight=None if qkv_same else tensor("attn.q_proj_weight", (8, 8)),
        k_proj_weight=None if qkv_same else tensor("attn.k_proj_weight", (8, 6)),
        v_proj_weight=None if qkv_same else tensor("attn.v_proj_weight", (8, 6)),
        in_proj_bias=tensor("attn.in_proj_bias", (24,)) if bias else None,
        out_proj=SimpleNamespace(weight=tensor("attn.out_proj.weight", (8, 8)),
                                 bias=tensor("attn.out_proj.bias", (8,)) if bias else None))
    names = {id(value): name for name, value in tensors.items()}
    return torch_layers._attention("attn", module, names), {name: t.shape for name, t in tensors.items()}


def test_fused_in_proj_exports_three_gemm_blocks_and_loads_them_back_whole():
    ops, shapes = _torch_attention()
    assert [op.layer for op in ops] == ["attn[query]", "attn[key]", "attn[value]", "attn[output]"]
    values = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    exported = [op.export(values) for op in ops]
    assert np.array_equal(exported[1]["W"], values["attn.in_proj_weight"][8:16])
    assert np.array_equal(exported[2]["B"], values["attn.in_proj_bias"][16:])
    loaded: dict = {}
    for op, tensors in zip(ops, exported):
        for key, binding in op.bindings.items():
            merge_into(loaded, binding, binding.load(tensors[key]))
    assert all(np.array_equal(loaded[name], values[name]) for name in values)
    for op in ops:
        for binding in op.bindings.values():
            _block_adjoint_holds(binding, values)


def _block_adjoint_holds(binding, values):
    """As _adjoint_holds, for a binding that reads a block of a variable: its export_adjoint fills that block only."""
    exported = binding.export(values)
    g = rng.standard_normal(exported.shape)
    whole: dict = {name: np.zeros_like(values[name]) for name in binding.variables}
    merge_into(whole, binding, binding.export_gradient(g))
    assert np.isclose(np.sum(exported * g), sum(np.sum(values[name] * whole[name]) for name in whole))
    h = {name: rng.standard_normal(values[name].shape) for name in binding.variables}
    t = rng.standard_normal(exported.shape)
    loaded: dict = {name: np.zeros_like(values[name]) for name in binding.variables}
    merge_into(loaded, binding, binding.load(t))
    assert np.isclose(sum(np.sum(loaded[name] * h[name]) for name in h), np.sum(t * binding.load_gradient(h)))


def test_attention_with_other_key_and_value_sizes_binds_its_own_projection_weights():
    ops, _ = _torch_attention(qkv_same=False, bias=False)
    assert [op.bindings["W"].variables for op in ops[:3]] == [
        ("attn.q_proj_weight",), ("attn.k_proj_weight",), ("attn.v_proj_weight",)]
    assert all("B" not in op.bindings for op in ops)


def _separate_qkv(prefix):
    return [ParamOp("Gemm", f"{prefix}/{role}", "EinsumDense",
                    {"W": same(f"{prefix}/{role}/W"), "B": same(f"{prefix}/{role}/b")}, {"attention": role})
            for role in ("query", "key", "value")]


@pytest.mark.parametrize("fused_side", ["target", "source"])
def test_fused_and_separate_projections_carry_values_and_gradients_both_ways(fused_side):
    fused, shapes = _torch_attention()
    fused = fused[:3]
    separate = _separate_qkv("mha")
    values = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    values |= {f"mha/{role}/W": rng.standard_normal((8, 8)) for role in ("query", "key", "value")}
    values |= {f"mha/{role}/b": rng.standard_normal(8) for role in ("query", "key", "value")}
    source, target = (separate, fused) if fused_side == "target" else (fused, separate)
    plan = plan_transfer(ModelStructure(source, []), ModelStructure(target, []), values, values, "a", "b")
    carried = plan.transfer(values)
    if fused_side == "target":
        assert np.array_equal(carried["attn.in_proj_weight"], np.concatenate(
            [values[f"mha/{role}/W"] for role in ("query", "key", "value")]))
    else:
        assert np.array_equal(carried["mha/value/b"], values["attn.in_proj_bias"][16:])
    target_grads = {name: rng.standard_normal(value.shape) for name, value in carried.items()}
    source_grads = plan.gradients_to_source(target_grads)
    if fused_side == "target":
        assert np.array_equal(source_grads["mha/key/W"], target_grads["attn.in_proj_weight"][8:16])
        assert plan.target_names()["mha/key/W"] == "attn.in_proj_weight[block 2 of 3]"
    else:
        assert np.array_equal(source_grads["attn.in_proj_weight"], np.concatenate(
            [target_grads[f"mha/{role}/W"] for role in ("query", "key", "value")]))
        assert plan.target_names()["attn.in_proj_weight"] == "mha/query/W + mha/key/W + mha/value/W"
        # A block whose gradient is missing makes the whole fused weight's gradient missing, not partly zero.
        target_grads["mha/key/W"] = None
        assert plan.gradients_to_source(target_grads)["attn.in_proj_weight"] is None


def _table(name, shape):
    return ParamOp("Gather", name, "Embedding", {"data": same(name)}), {name: np.zeros(shape)}


def test_embeddings_in_one_run_pair_by_shape_and_the_rest_by_order():
    source_ops, target_ops, values = [], [], {}
    for name, shape in [("token", (23, 8)), ("position", (7, 8)), ("segment", (2, 8))]:
        op, value = _table(name, shape)
        source_ops.append(op)
        values |= value
    for name, shape in [("word", (23, 8)), ("token_type", (2, 8)), ("position_ids", (7, 8))]:
        op, value = _table(name, shape)
        target_ops.append(op)
        values |= value
    norm = ParamOp("LayerNormalization", "ln", "LayerNormalization", {"scale": same("ln")})
    values["ln"] = np.ones(8)
    plan = plan_transfer(ModelStructure([*source_ops, norm], []), ModelStructure([*target_ops, norm], []),
                         values, values, "a", "b")
    assert [pair.target.layer for pair in plan.pairs] == ["word", "position_ids", "token_type", "ln"]
    assert "paired by table shape" in plan.notes[0]


def test_embeddings_whose_shapes_do_not_pair_up_get_the_table():
    source_ops, target_ops, values = [], [], {}
    for ops, tables in ((source_ops, [("token", (23, 8)), ("position", (7, 8))]),
                        (target_ops, [("word", (23, 8)), ("position_ids", (9, 8))])):
        for name, shape in tables:
            op, value = _table(name, shape)
            ops.append(op)
            values |= value
    with pytest.raises(WeightTransferError, match="do not correspond at row 2"):
        plan_transfer(ModelStructure(source_ops, []), ModelStructure(target_ops, []), values, values, "a", "b")


@pytest.mark.parametrize("target_variant, cause", [
    ((2, False, 0.5), "[head_dim, heads] (heads swapped in the reshape)"),
    ((2, True, 1.0), "the 1/sqrt(head_dim) scaling missing"),
    ((4, True, 1 / math.sqrt(2)), "the target's 4 head(s)"),
])
def test_the_attention_each_side_computes_is_found_from_the_projections(target_variant, cause):
    query, key, value = (rng.standard_normal((2, 5, 8)) for _ in range(3))
    source = divergence._attention(query, key, value, 2, True, 0.5)
    target = divergence._attention(query, key, value, *target_variant)
    projections = {"query": query.reshape(2, 5, 2, 4), "key": key, "value": value}
    (text,) = divergence._attention_causes(projections, (source, target))
    assert "the source's is 2 head(s), features split as [heads, head_dim], scores scaled by 1/sqrt(head_dim)" in text
    assert cause in text


def test_an_attention_no_variant_reproduces_gives_no_cause():
    query, key, value = (rng.standard_normal((2, 5, 8)) for _ in range(3))
    source = divergence._attention(query, key, value, 2, True, 0.5)
    masked = source + 0.3  # e.g. a mask: none of the variants computes it
    assert divergence._attention_causes({"query": query, "key": key, "value": value}, (source, masked)) == []


def test_gelu_variants_are_told_apart():
    before = np.linspace(-3, 3, 61)
    exact = divergence.ACTIVATIONS["exact gelu (erf; nn.GELU(), keras gelu(approximate=False))"](before)
    assert divergence._activation_between(before, exact).startswith("exact gelu")
    assert divergence._activation_between(before, divergence._gelu_tanh(before)).startswith("tanh-approximate gelu")


def test_recorded_activations_compare_across_head_split_and_broadcast_shapes():
    heads_split = rng.standard_normal((2, 5, 2, 4))
    source, target = divergence._comparable(heads_split, heads_split.reshape(2, 5, 8))
    assert source.shape == target.shape == (2, 5, 8) and np.array_equal(source, target)
    positions = rng.standard_normal((1, 5, 8))
    source, target = divergence._comparable(np.broadcast_to(positions, (3, 5, 8)), positions)
    assert np.array_equal(source, target)
    assert divergence._comparable(rng.standard_normal((2, 40)), rng.standard_normal((2, 5, 8))) is None


def _padding_plan(padding_idx):
    source = ModelStructure([ParamOp("Gather", "tokens", "Embedding", {"data": same("tokens")})], [])
    target = ModelStructure([ParamOp("Gather", "words", "Embedding", {"data": same("words")},
                                     {"padding_idx": padding_idx})], [])
    values = {"tokens": np.zeros((6, 3)), "words": np.zeros((6, 3))}
    return plan_transfer(source, target, values, values, "a", "b")


def test_an_embedding_gradient_differing_only_in_the_padding_row_is_explained():
    from pytest_parity.verdict.compare import compare_arrays

    source_grad = rng.standard_normal((6, 3))
    carried = source_grad.copy()
    carried[2] = 0  # nn.Embedding(padding_idx=2) gives that row no gradient
    grads = {"tokens": compare_arrays("tokens", carried, source_grad, atol=1e-4, rtol=1e-3)}
    text, explained = divergence.padding_rows(_padding_plan(2), grads, {"tokens": source_grad}, {"tokens": carried},
                                              1e-4, 1e-3)
    assert explained == ("tokens",) and "differs only in row 2" in text and "padding_idx=2" in text
    carried[4] += 1  # another row differs too: not (only) the padding row, so nothing is claimed
    grads = {"tokens": compare_arrays("tokens", carried, source_grad, atol=1e-4, rtol=1e-3)}
    assert divergence.padding_rows(_padding_plan(2), grads, {"tokens": source_grad}, {"tokens": carried},
                                   1e-4, 1e-3) == (None, ())


def test_a_gemm_fed_by_no_feature_map_is_left_to_the_divergence_report():
    # Two Dense layers whose inputs differ because of another layer (an activation): no flatten to blame.
    features = rng.standard_normal((4, 12))
    source = ModelStructure([_gemm("d", "d/W")], [LayerCall("d", "Dense", features, None)])
    target = ModelStructure([_gemm("fc", "fc/W")], [LayerCall("fc", "Linear", np.tanh(features), None)])
    values = {"d/W": rng.standard_normal((5, 12)), "fc/W": np.zeros((5, 12))}
    plan = plan_transfer(source, target, values, values, "a", "b")
    settle_flatten_orders(plan, source, target, values, lambda: target, lambda _: None)
    assert plan.pairs[0].flatten is None and plan.notes == []


@pytest.mark.parametrize("layout", ["linear [out, in]", "conv1d [in, out]"])
def test_a_fused_projection_splits_into_row_blocks_that_load_and_merge_back_whole(layout):
    from pytest_parity.modes.port.ops import Binding, merge_into, moved, row_block, same

    rng = np.random.default_rng(0)
    onnx_w = rng.standard_normal((6, 4))  # three projections of 2 rows each, over 4 input features
    if layout == "linear [out, in]":
        binding, value = same("qkv"), onnx_w
    else:
        binding, value = moved("qkv", lambda a: a.T, lambda a: a.T), onnx_w.T
    parts = [row_block(binding, index, 3, (6, 4)) for index in range(3)]
    assert all(part is not None for part in parts)
    rebuilt: dict[str, np.ndarray] = {}
    for index, part in enumerate(parts):
        block = part.export({"qkv": value})
        np.testing.assert_array_equal(block, onnx_w[2 * index:2 * index + 2])
        merge_into(rebuilt, part, part.load(block))
    np.testing.assert_array_equal(rebuilt["qkv"], value)
    # Gradients travel the same way: each block's ONNX gradient lands in its block of the variable.
    gradients: dict[str, np.ndarray] = {}
    for index, part in enumerate(parts):
        merge_into(gradients, part, part.export_gradient(np.full((2, 4), float(index))))
    rows = gradients["qkv"] if layout == "linear [out, in]" else gradients["qkv"].T
    np.testing.assert_array_equal(rows[:, 0], [0, 0, 1, 1, 2, 2])
    # A binding that is not one variable moved elementwise is not split (a recurrent bias with its own adjoint).
    summed = Binding(("b",), lambda v: v["b"], lambda t: {"b": t}, export_adjoint=lambda g: {"b": g})
    assert row_block(summed, 0, 3, (6,)) is None
