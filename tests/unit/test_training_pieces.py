"""The training check's framework-free pieces: the configuration diff's conventions, BatchNorm's running variance in
the other framework's convention, the shared Dropout noise moved between layouts, and the update signatures the
causes read. The end-to-end behaviour (real Keras and torch training) is in tests/e2e/test_training_*."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_parity.errors import ParityUsageError
from pytest_parity.modes.training import causes, configuration, dropout, statistics
from pytest_parity.modes.training.sides import BatchNormSettings, LossSettings, OptimizerSettings


def _keras_adam(**values):
    return OptimizerSettings("Adam", {"learning_rate": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7,
                                      "amsgrad": False, "weight_decay": 0.0, **values})


def _torch_adam(kind="Adam", **values):
    return OptimizerSettings(kind, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                                    "amsgrad": False, "maximize": False, **values})


@pytest.mark.parametrize("step", [1, 2, 10, 1000])
def test_keras_epsilon_hat_matches_only_the_torch_eps_of_its_step(step):
    equivalent = 1e-7 / math.sqrt(1 - 0.999 ** step)
    assert configuration.step_value_differences(_keras_adam(), _torch_adam(eps=equivalent), "source", step) == []
    found = configuration.step_value_differences(_keras_adam(), _torch_adam(eps=1e-7), "source", step)
    assert len(found) == 1 and "epsilon-hat" in found[0] and f"{equivalent:.3g}" in found[0]


def test_learning_rate_betas_and_adamw_decay_values_are_named_with_the_value_to_use():
    found = configuration.step_value_differences(_keras_adam(learning_rate=1e-3, beta_2=0.99, weight_decay=0.004),
                                                 _torch_adam("AdamW", lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01,
                                                             eps=1e-7 / math.sqrt(1 - 0.99)),
                                                 "source", 1)
    text = "\n".join(found)
    assert "use lr=0.001" in text and "use betas[1]=0.99" in text and "use weight_decay=0.004" in text


def test_keras_decay_is_decoupled_so_torch_adam_with_weight_decay_is_l2_and_named():
    found = configuration.optimizer_differences(_keras_adam(weight_decay=0.01), _torch_adam(weight_decay=0.01),
                                                "source", torch_clips=False)
    assert len(found) == 1 and "decoupled" in found[0] and "torch.optim.AdamW(weight_decay=0.01)" in found[0]
    assert configuration.optimizer_differences(_keras_adam(weight_decay=0.01), _torch_adam("AdamW", weight_decay=0.01),
                                               "source", torch_clips=False) == []


def test_clipping_the_standard_torch_step_lacks_is_named_unless_the_torch_side_has_its_own_step():
    keras = _keras_adam(clipnorm=1.0)
    found = configuration.optimizer_differences(keras, _torch_adam(), "source", torch_clips=False)
    assert len(found) == 1 and "clipnorm=1" in found[0] and "each parameter separately" in found[0]
    assert configuration.optimizer_differences(keras, _torch_adam(), "source", torch_clips=True) == []


def test_rmsprop_epsilon_inside_and_outside_the_root_never_match_and_defaults_differ():
    keras = OptimizerSettings("RMSprop", {"learning_rate": 1e-3, "rho": 0.9, "epsilon": 1e-7, "momentum": 0.0,
                                          "centered": False, "weight_decay": 0.0})
    torch = OptimizerSettings("RMSprop", {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False,
                                          "weight_decay": 0.0})
    static = configuration.optimizer_differences(keras, torch, "source", torch_clips=False)
    assert any("inside the square root" in entry for entry in static)
    per_step = "\n".join(configuration.step_value_differences(keras, torch, "source", 1))
    assert "use lr=0.001" in per_step and "use alpha=0.9" in per_step


def test_batch_norm_momentum_is_compared_in_one_convention():
    keras = BatchNormSettings("bn", momentum=1 - 0.99, epsilon=1e-3, updates_statistics=True)
    same = BatchNormSettings("bn", momentum=0.01, epsilon=1e-3, updates_statistics=True)
    torch_default = BatchNormSettings("bn", momentum=0.1, epsilon=1e-5, updates_statistics=True)
    assert configuration.batch_norm_differences([(keras, same)], "source", keras_first=True) == []
    found = configuration.batch_norm_differences([(keras, torch_default)], "source", keras_first=True)
    assert len(found) == 2
    assert "Keras momentum=0.99" in found[0] and "use momentum=0.01 in torch" in found[0]
    assert "use eps=0.001" in found[1]
    frozen = BatchNormSettings("bn", momentum=0.01, epsilon=1e-3, updates_statistics=False)
    assert "does not update its moving statistics" in configuration.batch_norm_differences(
        [(frozen, same)], "source", keras_first=True)[0]


def test_losses_from_logits_and_reduction():
    logits = LossSettings("SparseCategoricalCrossentropy", {"from_logits": True, "reduction": "sum_over_batch_size"})
    probabilities = LossSettings("SparseCategoricalCrossentropy", {"from_logits": False,
                                                                   "reduction": "sum_over_batch_size"})
    torch_mean = LossSettings("CrossEntropyLoss", {"reduction": "mean", "label_smoothing": 0.0})
    assert configuration.loss_differences(logits, torch_mean, "source") == []
    assert "from_logits" in configuration.loss_differences(probabilities, torch_mean, "source")[0]
    summed = LossSettings("CrossEntropyLoss", {"reduction": "sum", "label_smoothing": 0.0})
    assert "reduction" in configuration.loss_differences(logits, summed, "source")[0]
    assert configuration.loss_differences(LossSettings("callable"), torch_mean, "source") == []


def test_weight_decay_per_weight_maps_a_keras_l2_regularizer_to_twice_its_coefficient():
    keras, torch = OptimizerSettings("SGD", {"momentum": 0.9}), OptimizerSettings("SGD", {"momentum": 0.9})
    pairs = [("dense/kernel", "fc.weight"), ("dense/bias", "fc.bias")]
    same = configuration.weight_decay_differences(keras, torch, "source", pairs, {}, {"dense/kernel": 1e-4},
                                                  {"fc.weight": 2e-4, "fc.bias": 0.0})
    assert same == []
    found = configuration.weight_decay_differences(keras, torch, "source", pairs, {}, {"dense/kernel": 1e-4},
                                                   {"fc.weight": 1e-4, "fc.bias": 1e-4})
    assert len(found) == 2 and "weight_decay=0.0002" in found[0] and "no weight decay on 'fc.bias'" in found[1]


def test_trainability_names_the_frozen_side_and_how_it_is_frozen():
    found = configuration.trainability_differences([(("dense/kernel",), ("fc.weight",), {"dense/kernel"}, set())],
                                                   "tensorflow")
    assert "'fc.weight' is frozen in the target: requires_grad=False" in found[0]
    found = configuration.trainability_differences([(("fc.weight",), ("dense/kernel",), set(), {"dense/kernel"})],
                                                   "torch")
    assert "'fc.weight' is frozen in the source: requires_grad=False" in found[0]


def test_one_keras_lstm_bias_trains_like_exactly_one_trainable_torch_bias():
    group = ("lstm/bias",), ("lstm.bias_ih_l0", "lstm.bias_hh_l0")
    assert configuration.trainability_differences([(*group, {"lstm/bias"}, {"lstm.bias_ih_l0"})], "tensorflow") == []
    found = configuration.trainability_differences(
        [(*group, {"lstm/bias"}, {"lstm.bias_ih_l0", "lstm.bias_hh_l0"})], "tensorflow")
    assert "sum moves 2 time(s) as far" in found[0] and "requires_grad_(False)" in found[0]


@pytest.mark.parametrize("source_framework", ["tensorflow", "torch"])
def test_running_variance_is_carried_into_the_other_frameworks_convention(source_framework):
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((8, 4))
    biased, unbiased = batch.var(axis=0), batch.var(axis=0, ddof=1)
    before, momentum = np.array([1.0, 2.0, 0.5, 1.5]), 0.1
    source_batch, target_batch = (biased, unbiased) if source_framework == "tensorflow" else (unbiased, biased)
    source_after = (1 - momentum) * before + momentum * source_batch
    expected = statistics.expected_running_variance(before, before, source_after, momentum, 8, source_framework)
    np.testing.assert_allclose(expected, (1 - momentum) * before + momentum * target_batch, rtol=1e-12)


def test_shared_dropout_noise_follows_the_channel_axis_and_refuses_other_shapes():
    masks = dropout.SharedMasks(lambda step, index, shape: np.random.default_rng(index).random(shape))
    source = masks.noise_for(1, "source", (2, 3, 3, 5), 0.5)
    np.testing.assert_array_equal(masks.noise_for(1, "target", (2, 5, 3, 3), 0.2), np.moveaxis(source, -1, 1))
    assert masks.rate_differences() == [
        "dropout call 1 of 1 (in call order): rate 0.5 in the source, 0.2 in the target; both frameworks' rate is "
        "the share of elements dropped (Keras Dropout(rate), torch nn.Dropout(p)): use 0.5 in the target"]
    masks.noise_for(2, "source", (2, 4), 0.5)
    with pytest.raises(ParityUsageError, match="at different places"):
        masks.noise_for(2, "target", (2, 5), 0.5)
    masks.noise_for(2, "target", (2, 4), 0.5)
    with pytest.raises(ParityUsageError, match="the target called dropout 2 time"):
        masks.noise_for(2, "target", (2, 4), 0.5)


def test_a_configuration_entry_that_names_the_layer_wins_then_plain_values_before_epsilon_then_hints():
    entries = ["optimizer epsilon: inside vs outside", "optimizer rho: use alpha=0.9"]
    assert causes._cause("dense/kernel", entries, None, []) == "optimizer rho: use alpha=0.9"
    layer_entry = "BatchNormalization 'model/bn' / 'bn' momentum: use momentum=0.01 in torch"
    assert causes._cause("model/bn/moving_mean", [*entries, layer_entry], None, []) == layer_entry
    hints = [("embedding", "sparse Embedding updates"), (None, "clipping")]
    assert causes._cause("emb/embeddings", [], None, hints) == "sparse Embedding updates"
    assert causes._cause("dense/kernel", [], None, hints) == "clipping"


def test_update_signatures():
    source = np.linspace(-1, 1, 50)
    assert "0.5 times" in causes._update_signature(source, 0.5 * source)
    assert "leaves this tensor unchanged" in causes._update_signature(source, np.zeros(50))
    assert "frozen in the source" in causes._update_signature(np.zeros(50), source)
    small_differs = source.copy()
    small_differs[np.abs(source) < 0.05] *= 0.3
    assert "epsilon" in causes._update_signature(source, small_differs)
    assert causes._update_signature(source, source + np.random.default_rng(0).normal(0, 0.2, 50)) is None
