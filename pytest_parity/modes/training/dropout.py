"""The same Dropout masks on both sides of a training check.

The two frameworks draw masks from different generators, so no seed gives equal masks. Instead, for each step, every
dropout call on the source gets uniform noise U drawn here (seeded by test, seed, step and call index), keeps the
elements where U >= its own rate and scales them by 1 / (1 - rate); the target's i-th dropout call gets the same U
(moved between channels-last and channels-first where the two tensors' shapes say so) and applies its own rate. With
equal rates both sides drop the same elements; with different rates they do not, and the steps differ.

Reached: Keras' Dropout (and anything calling ``keras.src.backend.random.dropout``), and torch's ``F.dropout`` (which
``nn.Dropout`` calls). Channel dropout (``nn.Dropout2d``, alpha dropout) is refused; randomness the check cannot
reach at all (``tf.nn.dropout``, GaussianNoise) is found by running each side twice (run.py) and refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_parity.errors import ParityUsageError


@dataclass
class DropoutCall:
    shape: tuple[int, ...]
    rate: float
    noise: np.ndarray  # uniform [0, 1), in this side's shape


@dataclass
class StepMasks:
    """The dropout calls of one step: the source's (recorded first) and the target's."""

    source: list[DropoutCall] = field(default_factory=list)
    target: list[DropoutCall] = field(default_factory=list)


class SharedMasks:
    def __init__(self, draw: Callable[[int, int, tuple[int, ...]], np.ndarray],
                 channel_move: str | None = None) -> None:
        # draw(step, call index, shape) -> uniform noise; seeded by the caller.
        self._draw = draw
        # "last_to_first" / "first_to_last" when layouts= says the target's tensors are channels-first (or last).
        self._channel_move = channel_move
        self.steps: dict[int, StepMasks] = {}

    def noise_for(self, step: int, role: str, shape: tuple[int, ...], rate: float) -> np.ndarray:
        masks = self.steps.setdefault(step, StepMasks())
        calls = masks.source if role == "source" else masks.target
        index = len(calls)
        if role == "source":
            noise = self._draw(step, index, shape)
        else:
            if index >= len(masks.source):
                raise ParityUsageError(
                    f"the target called dropout {index + 1} time(s) in one training step, the source "
                    f"{len(masks.source)}: a Dropout layer is missing on one side, or one side applies dropout where "
                    f"the other does not")
            noise = _as_target(masks.source[index].noise, masks.source[index].shape, shape, index,
                               self._channel_move)
        calls.append(DropoutCall(shape, rate, noise))
        return noise

    def rate_differences(self) -> list[str]:
        """Dropout calls whose rates differ, once each, from the first step that has them."""
        for step in sorted(self.steps):
            masks = self.steps[step]
            differing = [(i, s.rate, t.rate) for i, (s, t) in enumerate(zip(masks.source, masks.target))
                         if not np.isclose(s.rate, t.rate, rtol=0, atol=1e-12)]
            if len(masks.target) < len(masks.source):
                return [f"dropout: the source calls dropout {len(masks.source)} time(s) per step, the target "
                        f"{len(masks.target)}: a Dropout layer is missing on the target"]
            if differing:
                return [f"dropout call {i + 1} of {len(masks.source)} (in call order): rate {s:g} in the source, "
                        f"{t:g} in the target; both frameworks' rate is the share of elements dropped (Keras "
                        f"Dropout(rate), torch nn.Dropout(p)): use {s:g} in the target"
                        for i, s, t in differing]
        return []


def _as_target(noise: np.ndarray, source_shape: tuple[int, ...], target_shape: tuple[int, ...], index: int,
               channel_move: str | None) -> np.ndarray:
    candidates: list[tuple[str, np.ndarray]] = [("same", noise)]
    if noise.ndim >= 3:
        candidates += [("last_to_first", np.moveaxis(noise, -1, 1)), ("first_to_last", np.moveaxis(noise, 1, -1))]
    fitting = [(name, moved) for name, moved in candidates if moved.shape == tuple(target_shape)]
    if not fitting:
        raise ParityUsageError(
            f"dropout call {index + 1}: the source drops elements of a tensor of shape {list(source_shape)}, "
            f"the target of one of shape {list(target_shape)}: the Dropout layers sit at different places in the "
            f"two models")
    for name, moved in fitting:
        if name == channel_move:
            return np.ascontiguousarray(moved)
    return np.ascontiguousarray(fitting[0][1])


@contextlib.contextmanager
def injected(framework: str, masks: SharedMasks, step: int, role: str) -> Iterator[None]:
    """Within this block, the framework's dropout draws its masks from ``masks``."""
    if framework == "torch":
        with _torch_injected(masks, step, role):
            yield
    else:
        with _keras_injected(masks, step, role):
            yield


def _keep(noise: np.ndarray, rate: float) -> np.ndarray:
    """1 / (1 - rate) where kept, 0 where dropped: both frameworks' inverted dropout."""
    if rate >= 1.0:
        return np.zeros_like(noise, dtype=np.float32)
    return ((noise >= rate) / (1.0 - rate)).astype(np.float32)


@contextlib.contextmanager
def _torch_injected(masks: SharedMasks, step: int, role: str) -> Iterator[None]:
    import torch
    import torch.nn.functional as functional

    original = functional.dropout

    def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if not training or p == 0:
            return input
        noise = masks.noise_for(step, role, tuple(input.shape), float(p))
        scale = torch.from_numpy(_keep(noise, float(p))).to(input.device, input.dtype)
        return input.mul_(scale) if inplace else input * scale

    def refuse(name: str) -> Callable[..., Any]:
        def refused(input: Any, *args: Any, **kwargs: Any) -> Any:
            training = kwargs.get("training", args[1] if len(args) > 1 else True)
            if not training:
                return input
            raise ParityUsageError(
                f"the training check gives both sides the same dropout masks, but {name} (channel or alpha dropout) "
                f"is not supported yet; compare with the model in eval mode (parity.check) or replace it for the "
                f"check")
        return refused

    replaced = {"dropout": dropout, **{name: refuse(f"torch.nn.functional.{name}") for name in (
        "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")}}
    saved = {name: getattr(functional, name) for name in replaced}
    try:
        for name, function in replaced.items():
            setattr(functional, name, function)
        yield
    finally:
        for name, function in saved.items():
            setattr(functional, name, function)
        assert functional.dropout is original


@contextlib.contextmanager
def _keras_injected(masks: SharedMasks, step: int, role: str) -> Iterator[None]:
    from keras.src import backend

    random = backend.random
    original = random.dropout

    def dropout(inputs: Any, rate: float, noise_shape: Any = None, seed: Any = None) -> Any:
        import tensorflow as tf

        shape = tuple(int(size) for size in inputs.shape)
        if noise_shape is not None:
            shape = tuple(int(size) if size is not None else full for size, full in zip(noise_shape, shape))
        noise = masks.noise_for(step, role, shape, float(rate))
        return inputs * tf.constant(_keep(noise, float(rate)), dtype=inputs.dtype)

    random.dropout = dropout
    try:
        yield
    finally:
        random.dropout = original
