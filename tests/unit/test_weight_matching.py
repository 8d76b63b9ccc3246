"""Unit tests for following source weights into the converted model (pytest_parity.weight_matching)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_parity.weight_matching import NEAR_MATCH_FRACTION, WeightMatch, WeightMatching, match_weights


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


def test_same_size_but_different_shape_is_not_a_permutation(rng):
    (value,) = _weights(rng, (2, 3))
    matching = match_weights({"w": value}, {"flat": value.reshape(6).copy(), "other": value.reshape(3, 2).copy()})
    # (2, 3) -> (3, 2) is a transpose, but the data reshaped (not transposed) differs; (6,) is not a permutation.
    assert matching.matches == []
    assert list(matching.unmatched) == ["w"]


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
