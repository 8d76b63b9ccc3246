"""parity.randint as token ids: an embedding model checked through parity.check, in both frameworks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

VOCABULARY, LENGTH = 40, 9


class TokenClassifier(nn.Module):
    """Token ids -> Embedding -> mean over the sequence -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))


@pytest.mark.parity(devices=("cpu",))
def test_token_ids_from_randint_drive_a_torch_embedding(parity):
    ids = parity.randint(0, VOCABULARY, (4, LENGTH))
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < VOCABULARY
    result = parity.check(TokenClassifier(), inputs=ids)
    assert result.passed
    assert "input" not in result.grads  # integer ids have no gradient; every weight's has been compared
    assert {"embedding.weight", "head.weight", "head.bias"} <= set(result.grads)


@pytest.mark.parity(devices=("cpu",))
def test_token_ids_from_randint_drive_a_keras_embedding(parity):
    import keras

    model = keras.Sequential([keras.Input((LENGTH,), dtype="int64"), keras.layers.Embedding(VOCABULARY, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    result = parity.check(model, inputs=parity.randint(0, VOCABULARY, (4, LENGTH)))
    assert result.passed
    assert "input" not in result.grads
    assert result.weight_account is not None and result.weight_account.compared == result.weight_account.total == 3
