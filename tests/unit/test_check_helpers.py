"""Unit tests for the framework-free helpers of pytest_parity.check: seeded streams and failure messages."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from pytest_parity.result import Comparison, ParityResult, SpeedResult
from pytest_parity.seeding import seeded_generator
from pytest_parity.verdict.compare import compare_arrays, compare_trees
from pytest_parity.verdict.messages import MAX_LISTED_FAILURES, failure_message

ROUTE = "tensorflow -> onnx -> torch"

# --------------------------------------------------------------------------------------------------------------------
# seeded_generator
# --------------------------------------------------------------------------------------------------------------------


def test_same_key_seed_and_purpose_give_identical_streams():
    first = seeded_generator("tests/test_m.py::test_x", 0, "weights").standard_normal(16)
    second = seeded_generator("tests/test_m.py::test_x", 0, "weights").standard_normal(16)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(("key", "seed", "purpose"), [
    ("tests/test_m.py::test_x", 0, "cotangents"),  # different purpose
    ("tests/test_m.py::test_x", 1, "weights"),  # different seed
    ("tests/test_m.py::test_y", 0, "weights"),  # different test
])
def test_any_difference_gives_a_different_stream(key, seed, purpose):
    reference = seeded_generator("tests/test_m.py::test_x", 0, "weights").standard_normal(16)
    other = seeded_generator(key, seed, purpose).standard_normal(16)
    assert not np.array_equal(reference, other)


def test_returns_a_numpy_generator():
    assert isinstance(seeded_generator("k", 0, "p"), np.random.Generator)


def test_stream_does_not_depend_on_the_process_hash_seed():
    code = ("from pytest_parity.seeding import seeded_generator; "
            "print(repr(seeded_generator('key', 3, 'weights').integers(0, 2**62, 4).tolist()))")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                                   timeout=120)
        outputs.add(completed.stdout.strip())
    here = repr(seeded_generator("key", 3, "weights").integers(0, 2**62, 4).tolist())
    assert outputs == {here}


# --------------------------------------------------------------------------------------------------------------------
# failure_message
# --------------------------------------------------------------------------------------------------------------------


def _failing_outputs():
    expected = {"logits": np.array([[1.0, 2.0], [3.0, 4.0]]), "probs": np.array([0.25, 0.75])}
    actual = {"logits": np.array([[1.0, 2.0], [3.0, 4.5]]), "probs": np.array([0.25, 0.75])}
    return compare_trees(actual, expected, atol=1e-5, rtol=1e-4)


def _failing_grads():
    source = np.array([0.1, 0.2, 0.3])
    return {
        "dense/kernel:0": compare_arrays("dense/kernel:0", source + np.array([0.0, 0.05, 0.0]), source,
                                         atol=1e-4, rtol=1e-3),
        "dense/bias:0": compare_arrays("dense/bias:0", source.copy(), source, atol=1e-4, rtol=1e-3),
        "input[0]": compare_arrays("input[0]", source * 2, source, atol=1e-4, rtol=1e-3),
    }


def _failing_result(**kwargs):
    kwargs.setdefault("outputs", _failing_outputs())
    kwargs.setdefault("grads", _failing_grads())
    kwargs.setdefault("weight_names", {"dense/kernel:0": "fc.weight", "dense/bias:0": "fc.bias"})
    return ParityResult(route=ROUTE, device="cpu", **kwargs)


def test_failure_message_header():
    message = failure_message(_failing_result(), "Keras Sequential", "PyTorch GraphModule")
    assert message.splitlines()[0] == (f"parity check failed: {ROUTE} on cpu (Keras Sequential vs PyTorch GraphModule)")


def test_failure_message_names_failing_outputs_only():
    message = failure_message(_failing_result(), "src", "tgt")
    assert "outputs: 1 of 2 tensor(s) differ" in message
    assert "agree within tolerance" not in message
    assert "output " + repr("output['logits']") + ":" in message
    assert "output['probs']" not in message
    assert "Mismatched elements: 1 / 4 (25.0%)" in message
    assert "Greatest absolute difference: 0.5 at index (1, 1)" in message


def test_failure_message_gradients_show_the_target_alias():
    message = failure_message(_failing_result(), "src", "tgt")
    assert "gradients: 2 of 3 tensor(s) differ" in message
    assert "gradient 'dense/kernel:0' (target: 'fc.weight'):" in message
    # Passing gradients are not listed, even when they have an alias.
    assert "dense/bias:0" not in message
    assert "fc.bias" not in message
    # An input gradient has no target alias.
    assert "gradient 'input[0]':" in message
    assert "'input[0]' (target:" not in message
    assert message.count("Mismatched elements") == 3  # one output + two gradients


def test_failure_message_lines_are_indented_under_their_section():
    lines = failure_message(_failing_result(), "src", "tgt").splitlines()
    section = lines.index("gradients: 2 of 3 tensor(s) differ")
    assert lines[section + 1].startswith("  gradient 'dense/kernel:0'")
    assert lines[section + 2].startswith("      Mismatched elements")


def test_failure_message_alias_equal_to_the_name_is_not_shown():
    grads = {"w": compare_arrays("w", np.array([2.0]), np.array([1.0]), atol=0.0, rtol=0.0)}
    message = failure_message(_failing_result(grads=grads, weight_names={"w": "w"}), "src", "tgt")
    assert "gradient 'w':" in message
    assert "(target:" not in message


def test_failure_message_missing_gradient_problem():
    grads = {"dense/kernel:0": Comparison(
        name="dense/kernel:0", passed=False, max_abs=float("inf"), max_rel=float("inf"), mismatched=3, total=3,
        atol=1e-4, rtol=1e-3, problem="no gradient reaches the target tensor 'fc.weight': it does not take part")}
    message = failure_message(_failing_result(grads=grads), "src", "tgt")
    assert "gradient 'dense/kernel:0' (target: 'fc.weight'):" in message
    assert "    no gradient reaches the target tensor 'fc.weight'" in message
    assert message.count("Mismatched elements") == 1  # only the output's paragraph has figures


def test_failure_message_transferred_weights_section():
    weights = {"dense/kernel:0": compare_arrays("dense/kernel:0", np.array([1.0, 2.1]), np.array([1.0, 2.0]),
                                                atol=0.0, rtol=1e-6)}
    message = failure_message(_failing_result(grads=None, weights=weights), "src", "tgt")
    assert "transferred weights: 1 of 1 tensor(s) differ" in message
    assert "weight 'dense/kernel:0' (target: 'fc.weight'):" in message
    assert "gradients:" not in message


def test_failure_message_lists_at_most_the_limit_and_summarises_the_rest():
    extra = 3
    grads = {f"w{i}": compare_arrays(f"w{i}", np.array([2.0]), np.array([1.0]), atol=0.0, rtol=0.0)
             for i in range(MAX_LISTED_FAILURES + extra)}
    message = failure_message(_failing_result(grads=grads, weight_names={}), "src", "tgt")
    assert f"gradients: {MAX_LISTED_FAILURES + extra} of {MAX_LISTED_FAILURES + extra} tensor(s) differ" in message
    assert f"  ... and {extra} more" in message
    assert f"gradient 'w{MAX_LISTED_FAILURES - 1}':" in message
    assert f"gradient 'w{MAX_LISTED_FAILURES}':" not in message


def test_failure_message_speed_and_diagnosis():
    speed = SpeedResult(ratio=3.0, source_s=0.01, target_s=0.03, rounds=9, ratio_min=2.5, ratio_max=3.5,
                        allowed=1.5, passed=False)
    result = _failing_result(speed=speed)
    result.diagnosis = "the ONNX -> torch import step diverged"
    message = failure_message(result, "src", "tgt")
    assert ("speed: target is 3.00x slower than source (median of 9 rounds in 1 look(s), too few rounds for an "
            "interval, spread 2.50-3.50x, allowed 1.50x; clock: wall; timed: forward)" in message)
    assert message.splitlines()[-1] == "diagnosis: the ONNX -> torch import step diverged"


def test_failure_message_omits_passing_sections():
    passing_outputs = compare_trees({"a": np.ones(2)}, {"a": np.ones(2)}, atol=1e-5, rtol=1e-4)
    speed = SpeedResult(ratio=1.0, source_s=0.01, target_s=0.01, rounds=5, ratio_min=0.9, ratio_max=1.1,
                        allowed=2.0, passed=True)
    result = _failing_result(outputs=passing_outputs, speed=speed)
    message = failure_message(result, "src", "tgt")
    assert "outputs: agree within tolerance (max abs 0, atol 1e-05, rtol 0.0001)" in message
    assert "tensor(s) differ" not in "".join(line for line in message.splitlines() if line.startswith("outputs"))
    assert "output['a']" not in message
    assert "speed:" not in message
    assert "diagnosis:" not in message
    assert "gradients: 2 of 3 tensor(s) differ" in message


# --------------------------------------------------------------------------------------------------------------------
# randomize_constant_weights
# --------------------------------------------------------------------------------------------------------------------


class _Weights:
    def __init__(self, values):
        self.values = {name: np.asarray(value, dtype=np.float32) for name, value in values.items()}

    def weights(self):
        return {name: value.copy() for name, value in self.values.items()}

    def assign_weights(self, values):
        self.values.update(values)


def test_initializer_patterns_are_randomized_and_others_kept():
    from pytest_parity.modes.steps import randomize_constant_weights

    forget_bias = np.concatenate([np.zeros(4), np.ones(4), np.zeros(8)])  # Keras LSTM unit_forget_bias
    adapter = _Weights({"bias": np.zeros(5), "variance": np.ones(5), "lstm_bias": forget_bias,
                        "kernel": np.arange(6.0), "scalar": [0.5], "zero_scalar": [0.0]})
    originals = randomize_constant_weights(adapter, seeded_generator("k", 0, "weights"))
    assert set(originals) == {"bias", "variance", "lstm_bias", "zero_scalar"}
    assert np.all(adapter.values["variance"] > 0) and len(np.unique(adapter.values["variance"])) == 5
    assert len(np.unique(adapter.values["lstm_bias"])) == 16  # no two layers' biases stay equal
    assert np.array_equal(adapter.values["kernel"], np.arange(6.0)) and adapter.values["scalar"][0] == 0.5
    np.testing.assert_array_equal(originals["lstm_bias"], forget_bias)


def test_weights_holding_equal_values_get_distinct_ones_the_first_kept():
    from pytest_parity.modes.steps import randomize_constant_weights

    kernel = np.random.default_rng(0).standard_normal(6)
    adapter = _Weights({"key/kernel": kernel, "value/kernel": kernel, "query/kernel": kernel + 1.0})
    originals = randomize_constant_weights(adapter, seeded_generator("k", 0, "weights"))
    assert set(originals) == {"value/kernel"}  # the first of the equal pair is kept, the second moved
    np.testing.assert_array_equal(adapter.values["key/kernel"], kernel.astype(np.float32))
    moved = adapter.values["value/kernel"] / kernel.astype(np.float32)
    assert np.all(np.abs(moved - 1.0) <= 0.1) and not np.array_equal(adapter.values["value/kernel"], kernel)


def test_weights_holding_equal_values_in_different_shapes_get_distinct_ones():
    # keras-hub Gemma: the query kernel [4, 32, 8] equals the output kernel [4, 8, 32] element for element.
    from pytest_parity.modes.steps import randomize_constant_weights

    kernel = np.random.default_rng(1).standard_normal((4, 3, 2))
    adapter = _Weights({"query/kernel": kernel, "output/kernel": kernel.reshape(4, 2, 3)})
    assert set(randomize_constant_weights(adapter, seeded_generator("k", 0, "weights"))) == {"output/kernel"}


def test_sparse_input_gradient_difference_with_agreeing_outputs_gets_the_subgradient_hint():
    from pytest_parity.verdict.messages import subgradient_hint

    agreeing = compare_trees([np.ones(4)], [np.ones(4)], atol=1e-5, rtol=1e-4)
    near_tie = compare_arrays("input", np.r_[np.zeros(99), 1.0], np.zeros(100), atol=1e-4, rtol=1e-3)
    defect = compare_arrays("input", np.ones(100), np.zeros(100), atol=1e-4, rtol=1e-3)
    result = ParityResult(route=ROUTE, device="cpu", outputs=agreeing, grads={"input": near_tie})
    assert "only 1 of 100 elements of 'input' differ" in subgradient_hint(result)
    assert "hint: the outputs agree" in failure_message(result, "src", "tgt")
    assert subgradient_hint(ParityResult(route=ROUTE, device="cpu", outputs=agreeing, grads={"input": defect})) is None
    # Deep in a model a ReLU near-tie may show only in weight gradients, diluted on its way back to the input.
    weight_only = {"input": compare_arrays("input", np.zeros(100), np.zeros(100), atol=1e-4, rtol=1e-3),
                   "conv/kernel": compare_arrays("conv/kernel", np.r_[np.zeros(99), 1.0], np.zeros(100), atol=1e-4,
                                                 rtol=1e-3)}
    assert "of 'conv/kernel' differ" in subgradient_hint(ParityResult(route=ROUTE, device="cpu", outputs=agreeing,
                                                                      grads=weight_only))
    differing = compare_trees([np.zeros(4)], [np.ones(4)], atol=1e-5, rtol=1e-4)
    assert subgradient_hint(ParityResult(route=ROUTE, device="cpu", outputs=differing, grads={"input": near_tie})) \
        is None


def test_a_source_whose_every_gradient_is_zero_is_refused_unless_none_exists():
    from pytest_parity.errors import ParityUsageError
    from pytest_parity.modes.steps import refuse_if_every_gradient_is_zero

    one_hot = [np.eye(3, dtype=np.float32)]
    with pytest.raises(ParityUsageError, match=r"(?s)exactly zero.*9 of its 9 output elements are exactly 0 or 1"):
        refuse_if_every_gradient_is_zero([np.zeros(3)], {"w": np.zeros(2)}, one_hot, "m")
    refuse_if_every_gradient_is_zero([np.zeros(3)], {"w": np.r_[0.0, 1e-30]}, one_hot, "m")  # one non-zero suffices
    refuse_if_every_gradient_is_zero([None], {"w": None}, one_hot, "m")  # argmax ids: no gradient exists at all


def test_the_float32_rounding_hint_allows_one_float32_step_where_the_measured_own_error_is_below_it():
    """Two float32 runs differ by whole float32 steps; the source's error against float64 can be a fraction of one.
    A one-step difference at values near 8 (9.5e-7) with an own error of 3.8e-7 is rounding; ten steps are not."""
    from pytest_parity.verdict.float64_referee import Float32Error
    from pytest_parity.verdict.messages import float32_rounding_hint

    source = np.float32(8.5) + np.linspace(0, 1, 16, dtype=np.float32)
    step = float(np.spacing(np.float32(9.5)))
    agreeing = compare_trees([np.ones(4)], [np.ones(4)], atol=1e-5, rtol=1e-4)
    own = Float32Error({"norm/bias": 3.8e-7}, outside_tolerance=16, total=16)

    def result_differing_by(steps: int) -> ParityResult:
        target = source.copy()
        target[3] += np.float32(steps * step)
        grads = {"norm/bias": compare_arrays("norm/bias", target, source, atol=1e-12, rtol=0.0)}
        return ParityResult(route=ROUTE, device="cpu", outputs=agreeing, grads=grads)

    one_step = float32_rounding_hint(result_differing_by(1), own)
    assert one_step is not None and "differs from its float32 run by up to 3.8e-07 in 'norm/bias'" in one_step
    assert float32_rounding_hint(result_differing_by(10), own) is None
