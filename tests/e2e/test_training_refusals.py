"""parity.check_training with input it cannot check: each refusal names the cause and the fix, runs no step, and
leaves the user's models and optimizers as they were; randomness the check cannot give both sides alike is refused,
never compared in another mode; a bias ahead of a BatchNorm (exact gradient zero) fails with that cause."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from torch import nn

from pytest_parity import ParityError
from pytest_parity.check import run_training_check
from pytest_parity.errors import ParityUsageError
from pytest_parity.settings import ParitySettings


def _keras_mlp(dropout: keras.layers.Layer | None = None) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="hidden")]
    if dropout is not None:
        layers.append(dropout)
    return keras.Sequential([*layers, keras.layers.Dense(3, name="out")], name="mlp")


class TorchMLP(nn.Module):
    def __init__(self, dropout: nn.Module | None = None) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
        self.dropout = dropout or nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x))))


def _batches(count: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 3, 4)) for _ in range(count)]


LOSSES = (keras.losses.SparseCategoricalCrossentropy(from_logits=True), nn.CrossEntropyLoss())


def _train(source, target, **arguments):
    arguments = {"batches": _batches(), "loss": LOSSES, "steps": None, "train_step": None,
                 "optimizer": (keras.optimizers.SGD(0.1), lambda params: torch.optim.SGD(params, lr=0.1)),
                 **arguments}
    return run_training_check(source, target, settings=ParitySettings(), device="cpu", seed_key="refusals",
                              **arguments)


@pytest.mark.parametrize("arguments, expected", [
    ({"loss": nn.CrossEntropyLoss()}, "loss=...) takes a pair (source's, target's)"),
    ({"optimizer": keras.optimizers.SGD(0.1)}, "optimizer=...) takes a pair"),
    ({"batches": []}, "takes a non-empty list of (inputs, labels) pairs"),
    ({"batches": [np.zeros((4, 6), np.float32)]}, "batches[0] must be an (inputs, labels) pair"),
    ({"batches": [(np.zeros((4, 6), np.float32), np.array("a"))]}, "labels must be a numpy array of class ids"),
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"optimizer": (torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), None)},
     "must be a Keras optimizer instance"),
    ({"optimizer": (keras.optimizers.SGD(0.1), "sgd")}, "must be a torch optimizer over its parameters or a factory"),
    ({"optimizer": (keras.optimizers.SGD(0.1), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))},
     "optimizes 2 tensor(s) that are not this model's parameters"),
])
def test_bad_arguments_are_refused_with_the_fix(arguments, expected):
    source, target = _keras_mlp(), TorchMLP()
    before = [w.copy() for w in source.get_weights()], {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ParityUsageError) as refusal:
        _train(source, target, **arguments)
    assert expected in str(refusal.value)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], source.get_weights()))
    assert all(torch.equal(before[1][k], v) for k, v in target.state_dict().items())


def test_convert_mode_and_same_framework_pairs_are_refused_pointing_to_port_mode():
    with pytest.raises(ParityUsageError, match=r"needs the target model.*inference graph.*Write the port"):
        _train(_keras_mlp(), None)
    with pytest.raises(ParityUsageError, match=r"here Dropout 'dropout' dropped\), and training the converted"):
        _train(TorchMLP(nn.Dropout(0.5)), None)
    with pytest.raises(ParityUsageError, match="both models are PyTorch models"):
        _train(TorchMLP(), TorchMLP(), loss=LOSSES[::-1])


def test_the_users_loaded_target_weights_are_refused_pointing_to_the_forward_check():
    with pytest.raises(ParityUsageError, match=r"target_weights='loaded': a training check starts both models"):
        run_training_check(_keras_mlp(), TorchMLP(), batches=_batches(), loss=LOSSES, steps=None, train_step=None,
                           optimizer=(keras.optimizers.SGD(0.1), lambda params: torch.optim.SGD(params, lr=0.1)),
                           settings=ParitySettings(target_weights="loaded"), device="cpu", seed_key="refusals")


def test_randomness_the_check_cannot_reach_is_refused_not_compared_in_another_mode():
    with pytest.raises(ParityUsageError, match=r"different outputs on two training-mode runs.*GaussianNoise"):
        _train(_keras_mlp(keras.layers.GaussianNoise(0.5)), TorchMLP())


def test_channel_dropout_is_refused_by_name():
    with pytest.raises(ParityUsageError, match=r"torch.nn.functional.dropout1d \(channel or alpha dropout\)"):
        _train(_keras_mlp(keras.layers.Dropout(0.5)), TorchMLP(nn.Dropout1d(0.5)))


def test_a_dropout_missing_on_one_side_is_refused():
    with pytest.raises(ParityUsageError, match="a Dropout layer is missing on one side"):
        _train(_keras_mlp(), TorchMLP(nn.Dropout(0.5)))


def test_the_users_optimizer_instances_keep_their_state():
    keras_optimizer = keras.optimizers.Adam(1e-3)
    target = TorchMLP()
    torch_optimizer = torch.optim.SGD(target.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ParityError):  # Adam against SGD: different algorithms
        _train(_keras_mlp(), target, optimizer=(keras_optimizer, torch_optimizer))
    assert int(keras_optimizer.iterations.numpy()) == 0 and not keras_optimizer.built
    assert not torch_optimizer.state


def test_a_bias_ahead_of_a_batch_norm_fails_with_its_cause_and_the_fix():
    keras.utils.set_random_seed(0)
    source = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="hidden"),
                               keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(3, name="out")])

    class Target(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.bn, self.out = nn.Linear(6, 8), nn.BatchNorm1d(8, momentum=0.01, eps=1e-3), \
                nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.bn(self.hidden(x)))

    with pytest.raises(ParityError) as failure:
        _train(source, Target(), optimizer=(keras.optimizers.Adam(1e-3), lambda params: torch.optim.Adam(
            params, lr=1e-3, eps=1e-7 / np.sqrt(1 - 0.999))), steps=1)
    first = failure.value.result.training.first_divergence
    assert "hidden/bias (update)' diverges first" in first
    assert "a bias right before a BatchNormalization" in first and "use_bias=False / bias=False" in first
