"""Port mode's pieces that need no framework: layouts, bindings and their adjoints, the flatten permutation, pairing."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.errors import ParityUsageError, WeightTransferError
from pytest_parity.layouts import check_inputs_fit, parse_layouts
from pytest_parity.modes.port import keras_layers
from pytest_parity.modes.port.ops import (
    LSTM_KERAS_TO_ONNX,
    LayerCall,
    ModelStructure,
    ParamOp,
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
    settle_flatten_orders(plan, source, values, lambda: target, assigned.append)
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
    settle_flatten_orders(plan, source, values, lambda: target, lambda _: None)
    flatten = plan.pairs[0].flatten
    assert flatten is not None and flatten.source_shape == (3, 2, 2) and flatten.target_shape == (2, 2, 3)
    weight = values["fc/W"]
    assert np.allclose(feature_map.transpose(0, 2, 3, 1).reshape(4, -1) @ flatten.to_target(weight).T,
                       feature_map.reshape(4, -1) @ weight.T)
