"""The adapter for a model's framework; the framework's adapter module (and so the framework) is imported only here,
when a check asks for it."""

from __future__ import annotations

from typing import Any

from pytest_parity.frameworks import ModelAdapter


def load_adapter(framework: str, model: Any) -> ModelAdapter:
    if framework == "tensorflow":
        from pytest_parity.frameworks.tensorflow import TensorFlowModel

        return TensorFlowModel(model)
    from pytest_parity.frameworks.torch import TorchModel

    return TorchModel(model)
