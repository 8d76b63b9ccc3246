"""Unit tests for following source weights into the converted model (pytest_parity.bridge.weight_matching)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.bridge.weight_matching import (
    DENSE_NEAR_FRACTION,
    NEAR_MATCH_FRACTION,
    WeightMatch,
    WeightMatching,
    match_weights,
)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _weights(rng, *shapes):
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def _pairs(matching: WeightMatching) -> dict[str, str]:
    return {m.source_name: m.target_name for m in matching.matches}


# --------------------------------------------------------------------------------------------------------------------
# exact matches under transposes and renames
# --------------------------------------------------------------------------------------------------------------------


def test_hwio_conv_kernel_matches_its_oihw_copy(rng):
    (kernel,) = _weights(rng, (3, 3, 2, 4))
    oihw = kernel.transpose(3, 2, 0, 1).copy()
    assert oihw.shape == (4, 2, 3, 3)
    matching = match_weights({"conv/kernel:0": kernel}, {"onnx_initializer_0": oihw})
    assert len(matching.matches) == 1
    match = matching.matches[0]
    assert (match.source_name, match.target_name, match.permutation) == ("conv/kernel:0", "onnx_initializer_0",
                                                                         (3, 2, 0, 1))
    assert match.source_shape == (3, 3, 2, 4)
    np.testing.assert_array_equal(match.to_source_layout(oihw), kernel)
    assert matching.unmatched == {}


def test_dense_kernel_in_out_matches_out_in(rng):
    (kernel,) = _weights(rng, (5, 3))
    matching = match_weights({"dense/kernel:0": kernel}, {"fc.weight": kernel.T.copy()})
    assert _pairs(matching) == {"dense/kernel:0": "fc.weight"}
    match = matching.matches[0]
    assert match.permutation == (1, 0)
    np.testing.assert_array_equal(match.to_source_layout(kernel.T), kernel)


def test_identity_layout_and_renamed_targets(rng):
    kernel, bias = _weights(rng, (5, 3), (3,))
    source = {"dense/kernel:0": kernel, "dense/bias:0": bias}
    target = {"initializers.onnx_initializer_1": bias.copy(), "Gemm_0.weight": kernel.T.copy()}
    matching = match_weights(source, target)
    assert _pairs(matching) == {"dense/kernel:0": "Gemm_0.weight", "dense/bias:0": "initializers.onnx_initializer_1"}
    assert matching.by_source()["dense/bias:0"].permutation == (0,)
    assert matching.unmatched == {}


def test_matches_keep_source_order(rng):
    a, b, c = _weights(rng, (4,), (2, 3), (7,))
    source = {"a": a, "b": b, "c": c}
    target = {"tc": c.copy(), "tb": b.T.copy(), "ta": a.copy()}
    matching = match_weights(source, target)
    assert [m.source_name for m in matching.matches] == ["a", "b", "c"]
    assert set(matching.by_source()) == {"a", "b", "c"}
    assert matching.by_source()["b"].target_name == "tb"


def test_one_to_one_when_two_tensors_share_a_shape(rng):
    first, second = _weights(rng, (4, 4), (4, 4))
    source = {"first": first, "second": second}
    # Target order is reversed so a naive "first same-shape tensor" choice would go wrong.
    target = {"t_second": second.copy(), "t_first": first.copy()}
    matching = match_weights(source, target)
    assert _pairs(matching) == {"first": "t_first", "second": "t_second"}
    assert all(m.permutation == (0, 1) for m in matching.matches)


def test_each_target_tensor_is_used_at_most_once(rng):
    (value,) = _weights(rng, (6,))
    # Two source weights holding the same values compete for one target tensor: only one can have it.
    matching = match_weights({"w1": value, "w2": value.copy()}, {"t": value.copy()})
    assert len(matching.matches) == 1
    assert matching.matches[0].source_name == "w1"
    assert list(matching.unmatched) == ["w2"]
    assert len({m.target_name for m in matching.matches}) == len(matching.matches)


def test_square_transpose_is_found(rng):
    (value,) = _weights(rng, (4, 4))
    matching = match_weights({"w": value}, {"t": value.T.copy()})
    assert matching.matches[0].permutation == (1, 0)
    np.testing.assert_array_equal(matching.matches[0].to_source_layout(value.T), value)


# --------------------------------------------------------------------------------------------------------------------
# near matches
# --------------------------------------------------------------------------------------------------------------------


def test_near_match_goes_to_the_right_tensor_not_another_same_shape_one(rng):
    a, b = _weights(rng, (3, 4), (3, 4))
    altered = a.copy()
    altered[1, 2] += 1e-3
    matching = match_weights({"a": a, "b": b}, {"t_b": b.copy(), "t_a_altered": altered})
    assert _pairs(matching) == {"a": "t_a_altered", "b": "t_b"}


def test_near_match_prefers_the_closest_candidate_over_a_looser_decoy(rng):
    (a,) = _weights(rng, (3, 4))
    scale = float(np.max(np.abs(a)))
    altered = a.copy()
    altered[0, 0] += 1e-3
    # The decoy is within the near-match fraction too, but everywhere off by 5% of the scale.
    decoy = a + np.float32(0.5 * NEAR_MATCH_FRACTION * scale)
    matching = match_weights({"a": a}, {"decoy": decoy, "altered": altered})
    assert _pairs(matching) == {"a": "altered"}


def test_a_tensor_folded_from_a_randomized_batchnorm_scale_is_not_taken_for_an_altered_copy(rng):
    # tf2onnx folds gamma * rsqrt(variance + eps) into one tensor; with gamma and variance randomized around 1 by
    # steps.SCALE_SPREAD, it lies within NEAR_MATCH_FRACTION of gamma in every element.
    gamma = rng.uniform(0.9, 1.1, 16).astype(np.float32)
    variance = rng.uniform(0.9, 1.1, 16).astype(np.float32)
    folded = (gamma / np.sqrt(variance + 1e-3)).astype(np.float32)
    assert np.max(np.abs(folded - gamma)) < NEAR_MATCH_FRACTION * np.max(gamma)
    matching = match_weights({"gamma": gamma, "variance": variance}, {"folded_scale": folded})
    assert matching.matches == []
    assert set(matching.unmatched) == {"gamma", "variance"}


def test_a_copy_rounded_everywhere_within_the_dense_fraction_is_still_matched(rng):
    (a,) = _weights(rng, (6, 5))
    scale = float(np.max(np.abs(a)))
    rounded = a + np.float32(0.5 * DENSE_NEAR_FRACTION * scale) * np.sign(a)
    matching = match_weights({"a": a}, {"t": rounded})
    assert _pairs(matching) == {"a": "t"}


def test_exact_copies_win_over_near_ones(rng):
    (a,) = _weights(rng, (8,))
    b = a.copy()
    b[3] += 1e-3  # b is itself a near copy of a
    matching = match_weights({"a": a, "b": b}, {"tb": b.copy(), "ta": a.copy()})
    assert _pairs(matching) == {"a": "ta", "b": "tb"}


def test_tensor_too_different_is_not_matched(rng):
    (a,) = _weights(rng, (3, 4))
    scale = float(np.max(np.abs(a)))
    off = a.copy()
    off[0, 0] += 2 * NEAR_MATCH_FRACTION * scale
    matching = match_weights({"a": a}, {"t": off})
    assert matching.matches == []
    assert "a" in matching.unmatched


# --------------------------------------------------------------------------------------------------------------------
# unmatched weights, ignored targets
# --------------------------------------------------------------------------------------------------------------------


def test_unmatched_source_weight_is_reported_with_a_reason(rng):
    kernel, gamma = _weights(rng, (3, 3, 2, 4), (4,))
    matching = match_weights({"conv/kernel:0": kernel, "bn/gamma:0": gamma},
                             {"conv.weight": kernel.transpose(3, 2, 0, 1).copy()})
    assert _pairs(matching) == {"conv/kernel:0": "conv.weight"}
    assert list(matching.unmatched) == ["bn/gamma:0"]
    reason = matching.unmatched["bn/gamma:0"]
    assert "no tensor in the target holds these values" in reason
    assert "folded" in reason


def test_unrelated_integer_and_other_size_targets_are_ignored(rng):
    kernel, bias = _weights(rng, (2, 3), (3,))
    target = {
        "num_batches_tracked": np.array(0, dtype=np.int64),
        "other_size": rng.standard_normal((4, 3)).astype(np.float32),
        "int_same_shape": np.arange(6, dtype=np.int64).reshape(3, 2),
        "fc.weight": kernel.T.copy(),
        "fc.bias": bias.copy(),
        "same_size_unrelated": rng.standard_normal(3).astype(np.float32) + 100.0,
    }
    matching = match_weights({"kernel": kernel, "bias": bias}, target)
    assert _pairs(matching) == {"kernel": "fc.weight", "bias": "fc.bias"}
    assert matching.unmatched == {}


def test_same_size_but_different_shape_is_a_reshape_only_when_the_elements_keep_their_order(rng):
    (value,) = _weights(rng, (2, 3))
    # (2, 3) -> (3, 2) by transpose would need the elements reordered: this (3, 2) holds them in their own order, so it
    # is no permutation; it is an exact reshape, as is (6,), and is read back as one.
    matching = match_weights({"w": value}, {"other": value.reshape(3, 2).copy()})
    assert [m.target_name for m in matching.matches] == ["other"]
    np.testing.assert_array_equal(matching.matches[0].to_source_layout(value.reshape(3, 2)), value)
    shuffled = value.reshape(-1)[[1, 0, 2, 3, 4, 5]].copy()
    assert list(match_weights({"w": value}, {"flat": shuffled}).unmatched) == ["w"]


def test_empty_inputs():
    assert match_weights({}, {}).matches == []
    matching = match_weights({"w": np.ones(2, dtype=np.float32)}, {})
    assert matching.matches == []
    assert list(matching.unmatched) == ["w"]


def test_all_zero_weight_matches_only_an_exact_copy():
    zeros = np.zeros(3, dtype=np.float32)
    matching = match_weights({"bias": zeros}, {"almost": np.array([0.0, 1e-9, 0.0], np.float32)})
    assert matching.matches == []
    matching = match_weights({"bias": zeros}, {"copy": zeros.copy()})
    assert _pairs(matching) == {"bias": "copy"}


# --------------------------------------------------------------------------------------------------------------------
# to_source_layout
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("permutation", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0), (0, 2, 1)])
def test_to_source_layout_inverts_the_permutation(rng, permutation):
    (value,) = _weights(rng, (2, 3, 4))
    match = WeightMatch("s", "t", permutation, source_shape=value.shape)
    moved = np.transpose(value, permutation)
    back = match.to_source_layout(moved)
    assert back.shape == value.shape
    np.testing.assert_array_equal(back, value)


def test_to_source_layout_of_a_four_dim_kernel_gradient(rng):
    (grad_hwio,) = _weights(rng, (3, 3, 2, 4))
    match = WeightMatch("k", "t", (3, 2, 0, 1), source_shape=(3, 3, 2, 4))
    grad_oihw = grad_hwio.transpose(3, 2, 0, 1)
    np.testing.assert_array_equal(match.to_source_layout(grad_oihw), grad_hwio)


def test_to_source_layout_restores_unit_axes(rng):
    (value,) = _weights(rng, (3, 1, 4))
    match = WeightMatch("s", "t", (1, 0), source_shape=(3, 1, 4))
    target = value.reshape(3, 4).T.copy()
    np.testing.assert_array_equal(match.to_source_layout(target), value)


# --------------------------------------------------------------------------------------------------------------------
# unit axes added or removed by a converter
# --------------------------------------------------------------------------------------------------------------------


def test_unit_axis_added_by_the_converter_is_ignored(rng):
    (gamma,) = _weights(rng, (16,))
    reshaped = gamma.reshape(1, 16).copy()  # tf2onnx stores a LayerNormalization gamma [16] as [1, 16]
    matching = match_weights({"ln/gamma:0": gamma}, {"onnx_initializer_3": reshaped})
    assert _pairs(matching) == {"ln/gamma:0": "onnx_initializer_3"}
    match = matching.matches[0]
    assert match.source_shape == (16,)
    back = match.to_source_layout(reshaped)
    assert back.shape == (16,)
    np.testing.assert_array_equal(back, gamma)


def test_unit_axis_removed_and_axes_permuted(rng):
    (kernel,) = _weights(rng, (1, 1, 3, 5))  # a 1x1 conv kernel HWIO
    target = kernel.reshape(3, 5).T.copy()  # stored as a [out, in] matrix
    matching = match_weights({"conv1x1/kernel:0": kernel}, {"fc.weight": target})
    assert _pairs(matching) == {"conv1x1/kernel:0": "fc.weight"}
    back = matching.matches[0].to_source_layout(target)
    assert back.shape == (1, 1, 3, 5)
    np.testing.assert_array_equal(back, kernel)


# --------------------------------------------------------------------------------------------------------------------
# recurrent layers: gate blocks reordered, parts of ONNX W / R / B
# --------------------------------------------------------------------------------------------------------------------

HIDDEN = 6
KERAS_LSTM_TO_ONNX = (0, 3, 1, 2)  # Keras i, f, c, o -> ONNX i, o, f, c


def _gate_blocks(value, order, axis=0):
    blocks = np.split(value, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def _onnx_lstm_tensors(kernels, recurrent_kernels, biases):
    """What tf2onnx makes of Keras LSTM weights, one entry per direction."""
    w = np.stack([_gate_blocks(k.T, KERAS_LSTM_TO_ONNX) for k in kernels])
    r = np.stack([_gate_blocks(k.T, KERAS_LSTM_TO_ONNX) for k in recurrent_kernels])
    b = np.stack([np.concatenate([_gate_blocks(bias, KERAS_LSTM_TO_ONNX), np.zeros_like(bias)]) for bias in biases])
    return w, r, b


def test_lstm_kernel_follows_into_onnx_w_with_gates_reordered(rng):
    kernel, recurrent, bias = _weights(rng, (5, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN,))
    w, r, b = _onnx_lstm_tensors([kernel], [recurrent], [bias])
    assert w.shape == (1, 4 * HIDDEN, 5) and b.shape == (1, 8 * HIDDEN)
    source = {"lstm/kernel": kernel, "lstm/recurrent_kernel": recurrent, "lstm/bias": bias}
    matching = match_weights(source, {"LSTM.W": w, "LSTM.R": r, "LSTM.B": b})
    assert _pairs(matching) == {"lstm/kernel": "LSTM.W", "lstm/recurrent_kernel": "LSTM.R", "lstm/bias": "LSTM.B"}
    assert matching.unmatched == {}
    by_source = matching.by_source()
    kernel_match = by_source["lstm/kernel"]
    assert kernel_match.gate_order == KERAS_LSTM_TO_ONNX and kernel_match.permutation == (1, 0)
    assert kernel_match.target_region is None
    bias_match = by_source["lstm/bias"]
    assert bias_match.target_region == ((0, 1), (0, 4 * HIDDEN))  # the input half of B; the recurrent half is zero
    for name, target in (("lstm/kernel", w), ("lstm/recurrent_kernel", r), ("lstm/bias", b)):
        np.testing.assert_array_equal(by_source[name].to_source_layout(target), source[name])


def test_lstm_gradient_maps_back_to_the_keras_layout(rng):
    kernel, bias = _weights(rng, (5, 4 * HIDDEN), (4 * HIDDEN,))
    w, _, b = _onnx_lstm_tensors([kernel], [kernel[:HIDDEN]], [bias])
    matching = match_weights({"kernel": kernel, "bias": bias}, {"W": w, "B": b})
    # A gradient w.r.t. W / B is laid out like W / B: mapping it back must undo exactly what was done to the weight.
    kernel_grad, bias_grad = _weights(rng, (5, 4 * HIDDEN), (4 * HIDDEN,))
    w_grad, _, _ = _onnx_lstm_tensors([kernel_grad], [kernel_grad[:HIDDEN]], [bias_grad])
    b_grad = np.concatenate([_gate_blocks(bias_grad, KERAS_LSTM_TO_ONNX), _weights(rng, (4 * HIDDEN,))[0]])[None]
    by_source = matching.by_source()
    np.testing.assert_array_equal(by_source["kernel"].to_source_layout(w_grad), kernel_grad)
    np.testing.assert_array_equal(by_source["bias"].to_source_layout(b_grad), bias_grad)


def test_bidirectional_lstm_directions_share_w_r_b_one_row_each(rng):
    shapes = [(5, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN), (4 * HIDDEN,)] * 2
    forward_kernel, forward_recurrent, forward_bias, backward_kernel, backward_recurrent, backward_bias = _weights(
        rng, *shapes)
    w, r, b = _onnx_lstm_tensors([forward_kernel, backward_kernel], [forward_recurrent, backward_recurrent],
                                 [forward_bias, backward_bias])
    source = {"fw/kernel": forward_kernel, "fw/recurrent_kernel": forward_recurrent, "fw/bias": forward_bias,
              "bw/kernel": backward_kernel, "bw/recurrent_kernel": backward_recurrent, "bw/bias": backward_bias}
    matching = match_weights(source, {"W": w, "R": r, "B": b})
    assert matching.unmatched == {}
    by_source = matching.by_source()
    assert by_source["fw/kernel"].target_region == ((0, 1), (0, 4 * HIDDEN), (0, 5))
    assert by_source["bw/kernel"].target_region == ((1, 2), (0, 4 * HIDDEN), (0, 5))
    assert by_source["bw/bias"].target_region == ((1, 2), (0, 4 * HIDDEN))
    targets = {"fw": {"kernel": w, "recurrent_kernel": r, "bias": b}, "bw": {"kernel": w, "recurrent_kernel": r,
                                                                          "bias": b}}
    for name, value in source.items():
        direction, kind = name.split("/")
        np.testing.assert_array_equal(by_source[name].to_source_layout(targets[direction][kind]), value)


def test_gru_reset_after_bias_is_a_row_of_onnx_b_read_as_two_halves(rng):
    kernel, bias = _weights(rng, (5, 3 * HIDDEN), (2, 3 * HIDDEN))
    w = kernel.T[None].copy()  # ONNX GRU keeps Keras's z, r, h order
    b = bias.reshape(1, 6 * HIDDEN).copy()
    matching = match_weights({"gru/kernel": kernel, "gru/bias": bias}, {"GRU.W": w, "GRU.B": b})
    assert _pairs(matching) == {"gru/kernel": "GRU.W", "gru/bias": "GRU.B"}
    by_source = matching.by_source()
    assert by_source["gru/kernel"].gate_order is None  # a plain transpose
    assert by_source["gru/bias"].target_view_shape == (2, 3 * HIDDEN)
    np.testing.assert_array_equal(by_source["gru/bias"].to_source_layout(b), bias)


def test_gru_kernel_into_torch_gate_order(rng):
    (kernel,) = _weights(rng, (5, 3 * HIDDEN))
    weight_ih = _gate_blocks(kernel.T, (1, 0, 2))  # torch nn.GRU: r, z, n
    matching = match_weights({"gru/kernel": kernel}, {"gru.weight_ih_l0": weight_ih})
    match = matching.matches[0]
    assert (match.target_name, match.gate_order, match.gate_axis) == ("gru.weight_ih_l0", (1, 0, 2), 0)
    np.testing.assert_array_equal(match.to_source_layout(weight_ih), kernel)


def test_a_plain_copy_wins_over_a_gate_reordered_one(rng):
    (kernel,) = _weights(rng, (5, 4 * HIDDEN))
    reordered = _gate_blocks(kernel.T, KERAS_LSTM_TO_ONNX)
    matching = match_weights({"kernel": kernel}, {"reordered": reordered, "plain": kernel.T.copy()})
    assert _pairs(matching) == {"kernel": "plain"}
    assert matching.matches[0].gate_order is None


def test_an_unknown_gate_order_is_not_followed(rng):
    (kernel,) = _weights(rng, (5, 4 * HIDDEN))
    matching = match_weights({"kernel": kernel}, {"W": _gate_blocks(kernel.T, (3, 2, 1, 0))[None]})
    assert matching.matches == []
    assert list(matching.unmatched) == ["kernel"]


def test_a_region_already_claimed_by_a_whole_match_is_not_reused(rng):
    (bias,) = _weights(rng, (4 * HIDDEN,))
    b = np.concatenate([bias, bias])[None]  # both halves equal the bias
    full = b.reshape(8 * HIDDEN).copy()
    matching = match_weights({"whole": full, "half": bias}, {"B": b})
    assert _pairs(matching) == {"whole": "B"}
    assert list(matching.unmatched) == ["half"]


def test_near_match_in_a_reordered_gate_is_still_found_and_reported(rng):
    (kernel,) = _weights(rng, (5, 4 * HIDDEN))
    w = _gate_blocks(kernel.T, KERAS_LSTM_TO_ONNX)[None].copy()
    w[0, 2 * HIDDEN + 1, 3] += 1e-3  # inside the third ONNX block (f), which the reorder moves
    matching = match_weights({"kernel": kernel}, {"W": w})
    match = matching.matches[0]
    assert match.gate_order == KERAS_LSTM_TO_ONNX
    back = match.to_source_layout(w)
    difference = np.argwhere(back != kernel)
    assert difference.tolist() == [[3, HIDDEN + 1]]  # Keras block f is the second one


def test_recurrent_matching_is_deterministic(rng):
    kernels = _weights(rng, (5, 4 * HIDDEN), (5, 4 * HIDDEN))
    recurrent = _weights(rng, (HIDDEN, 4 * HIDDEN), (HIDDEN, 4 * HIDDEN))
    biases = _weights(rng, (4 * HIDDEN,), (4 * HIDDEN,))
    w, r, b = _onnx_lstm_tensors(kernels, recurrent, biases)
    source = {"k0": kernels[0], "k1": kernels[1], "r0": recurrent[0], "r1": recurrent[1], "b0": biases[0],
              "b1": biases[1]}
    first = match_weights(source, {"W": w, "R": r, "B": b})
    second = match_weights(source, {"W": w, "R": r, "B": b})
    assert first.matches == second.matches


@pytest.mark.parametrize(("region", "view_shape", "gate_axis", "gate_order"), [
    (((1, 2), (0, 24), (0, 5)), None, 0, (0, 3, 1, 2)),
    (((0, 1), (0, 24), (0, 5)), None, 1, None),
    (None, None, 0, (1, 0, 2)),
])
def test_to_source_layout_undoes_region_and_gate_order(rng, region, view_shape, gate_axis, gate_order):
    (value,) = _weights(rng, (5, 24))
    match = WeightMatch("s", "t", (1, 0), (5, 24), region, view_shape, gate_axis if gate_order else None, gate_order)
    moved = value.T
    if gate_order:
        moved = _gate_blocks(moved, gate_order, axis=gate_axis)
    if region is None:
        target = moved
    else:
        target = rng.standard_normal((2, 24, 5)).astype(np.float32)
        target[region[0][0]] = moved
    np.testing.assert_array_equal(match.to_source_layout(target), value)


def test_a_weight_merged_with_an_equal_one_is_unmatched_with_that_reason(rng):
    # Two Keras LSTM layers start with the same bias (unit_forget_bias); tf2onnx keeps one ONNX tensor for both.
    bias = np.concatenate([np.zeros(HIDDEN), np.ones(HIDDEN), np.zeros(2 * HIDDEN)]).astype(np.float32)
    _, _, b = _onnx_lstm_tensors([np.zeros((1, 4 * HIDDEN))], [np.zeros((1, 4 * HIDDEN))], [bias])
    matching = match_weights({"lstm/bias": bias, "lstm_1/bias": bias.copy()}, {"B_shared": b})
    assert _pairs(matching) == {"lstm/bias": "B_shared"}
    reason = matching.unmatched["lstm_1/bias"]
    assert "holds exactly the values of 'lstm/bias'" in reason
    assert "'B_shared'" in reason and "different values" in reason


@pytest.mark.parametrize("batch", [2, 3, 4])
def test_a_weight_tiled_over_the_batch_is_matched_as_copies_weights_mean_and_gradients_sum(rng, batch):
    token = rng.standard_normal((1, 1, 8)).astype(np.float32)  # a ViT class token
    folded = np.tile(token, (batch, 1, 1))  # tile(class_token, batch), folded into a constant by the exporter
    matching = match_weights({"cls": token}, {"const_0": folded})
    assert matching.unmatched == {} and matching.matches[0].copies == batch
    match = matching.matches[0]
    np.testing.assert_array_equal(match.to_source_layout(folded), token)
    per_copy = rng.standard_normal(folded.shape).astype(np.float32)
    np.testing.assert_allclose(match.gradient_to_source_layout(per_copy), per_copy.sum(axis=0, keepdims=True),
                               rtol=1e-6)


def test_copies_that_differ_are_not_a_tile(rng):
    token = rng.standard_normal((1, 8)).astype(np.float32)
    almost = np.concatenate([token, token, token * 1.5])
    assert list(match_weights({"cls": token}, {"const_0": almost}).unmatched) == ["cls"]


def test_two_equal_directions_are_not_read_as_a_bidirectional_weight(rng):
    # (2, 1, 8) looks like ONNX's [num_directions, ...] layout; equal rows are a tile over a batch of 2.
    token = rng.standard_normal((1, 1, 8)).astype(np.float32)
    match = match_weights({"cls": token}, {"const_0": np.tile(token, (2, 1, 1))}).matches[0]
    assert match.copies == 2 and match.target_region is None


def test_a_kernel_stored_with_its_axes_merged_is_matched_and_reads_back(rng):
    kernel = rng.standard_normal((16, 2, 8)).astype(np.float32)  # Keras EinsumDense [hidden, heads, head_dim]
    merged = kernel.reshape(16, 16)  # the MatMul weight tf2onnx stores
    match = match_weights({"query/kernel": kernel}, {"w": merged}).matches[0]
    np.testing.assert_array_equal(match.to_source_layout(merged), kernel)
    gradient = rng.standard_normal((16, 16)).astype(np.float32)
    np.testing.assert_array_equal(match.gradient_to_source_layout(gradient), gradient.reshape(16, 2, 8))
    # Only exact copies: elements in an order no axis reordering gives are not a reshape.
    shuffled = merged.reshape(-1)[rng.permutation(merged.size)].reshape(16, 16)
    assert match_weights({"query/kernel": kernel}, {"w": shuffled}).unmatched


def test_a_kernel_transposed_then_merged_is_matched_and_reads_back(rng):
    # keras-hub Gemma's EinsumDense kernel [heads, hidden, head_dim]: the einsum lowering transposes it to
    # [hidden, heads, head_dim] before merging the last two axes into the MatMul weight.
    kernel = rng.standard_normal((4, 16, 8)).astype(np.float32)
    stored = kernel.transpose(1, 0, 2).reshape(16, 32)
    match = match_weights({"query/kernel": kernel}, {"w": stored}).matches[0]
    np.testing.assert_array_equal(match.to_source_layout(stored), kernel)
    gradient = rng.standard_normal((16, 32)).astype(np.float32)
    np.testing.assert_array_equal(match.gradient_to_source_layout(gradient),
                                  gradient.reshape(16, 4, 8).transpose(1, 0, 2))
