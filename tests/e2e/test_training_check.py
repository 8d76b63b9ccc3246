"""parity.check_training end to end on the seed ports (fixtures/training_ports.py): what a passing result holds,
optimizers given as instances or factories in either order, steps cycling through the batches, and both models left
as they were.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.training_mutants import MLP_K, MLP_T, sgd
from pytest_parity import ParityError


@pytest.mark.parity
def test_result_holds_every_step_weight_and_update(parity):
    source, target, arguments = MLP_K.arguments(MLP_K.make_batches(parity.randn, parity.randint, 2))
    result = parity.check_training(source, target, steps=4, **arguments)
    figures = result.training
    assert result.passed and [s.step for s in figures.steps] == [1, 2, 3, 4]  # 4 steps cycle through 2 batches
    assert figures.configuration == [] and figures.first_divergence is None
    for step in figures.steps:
        assert step.loss.passed and len(step.weights) == 4 and len(step.updates) == 4
        assert all(name.endswith(" (update)") for name in step.updates)


@pytest.mark.parity
def test_torch_optimizer_instance_and_models_left_as_they_were(parity):
    import torch

    batches = MLP_T.make_batches(parity.randn, parity.randint, 3)
    source, target, arguments = MLP_T.arguments(batches)
    keras_optimizer = arguments["optimizer"][1]
    instance = torch.optim.SGD(source.parameters(), lr=0.1)
    before_source = {k: v.clone() for k, v in source.state_dict().items()}
    before_target = [np.array(w) for w in target.get_weights()]
    result = parity.check_training(source, target, **(arguments | {"optimizer": (instance, keras_optimizer)}))
    assert result.passed and result.route == "training: torch -> tensorflow"
    assert all(torch.equal(before_source[k], v) for k, v in source.state_dict().items())
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before_target, target.get_weights()))
    assert not instance.state and int(keras_optimizer.iterations.numpy()) == 0


@pytest.mark.parity
def test_failure_message_lists_configuration_then_first_divergence(parity):
    case = MLP_K.replace(optimizers=sgd(0.1, torch_lr=0.2))
    source, target, arguments = case.arguments(case.make_batches(parity.randn, parity.randint, 2))
    with pytest.raises(ParityError) as failure:
        parity.check_training(source, target, **arguments)
    message = str(failure.value)
    assert message.index("configuration:") < message.index("first divergence: step 1 of 2")
    assert "learning rate at step 1: 0.1 in the source" in message and "likely cause:" in message
    assert failure.value.result.training.first_divergence.startswith("step 1 of 2")


@pytest.mark.parity
def test_weights_fused_into_one_target_tensor_count_as_carried(parity):
    """Keras MultiHeadAttention's query, key and value kernels are one torch in_proj_weight: all three train and are
    compared through it (they once counted as 'not carried to the target', a false failure)."""
    import keras
    import torch
    from torch import nn

    keras.utils.set_random_seed(0)
    tokens = keras.Input((5, 8))
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
    source = keras.Model(tokens, keras.layers.Dense(3, name="out")(keras.layers.GlobalAveragePooling1D()(attended)))

    class Target(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha, self.out = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.mha(x, x, x, need_weights=False)[0].mean(1))

    batches = [(parity.randn(4, 5, 8), parity.randint(0, 3, (4,))) for _ in range(2)]
    result = parity.check_training(
        source, Target(), batches=batches,
        loss=(keras.losses.SparseCategoricalCrossentropy(from_logits=True), nn.CrossEntropyLoss()),
        optimizer=(keras.optimizers.SGD(0.1), lambda params: torch.optim.SGD(params, lr=0.1)))
    assert result.passed and result.weight_account.describe() == "weights compared 10 of 10"
