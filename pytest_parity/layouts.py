"""Tensor layouts across frameworks: ``layouts=("NHWC", "NCHW")`` -> axis permutations, validated.

Keras defaults to channels-last (NHWC, NWC), PyTorch to channels-first (NCHW, NCW). In port mode the user gives the
inputs in the source's layout; they are permuted for the target, and the target's outputs (and input gradients) are
permuted back, so every comparison happens in the source's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.errors import ParityUsageError

# Gate blocks along the gate axis: the framework's order -> ONNX's order, as indices into the framework's blocks.
LSTM_KERAS_TO_ONNX = (0, 3, 1, 2)  # Keras i,f,c,o -> ONNX i,o,f,c
LSTM_TORCH_TO_ONNX = (0, 3, 1, 2)  # torch i,f,g,o -> ONNX i,o,f,c
GRU_KERAS_TO_ONNX = (0, 1, 2)      # Keras z,r,h == ONNX z,r,h
GRU_TORCH_TO_ONNX = (1, 0, 2)      # torch r,z,n -> ONNX z,r,h

EXAMPLES = '("NHWC", "NCHW"), ("NWC", "NCW") or ("NDHWC", "NCDHW")'


@dataclass(frozen=True)
class LayoutPair:
    source: str
    target: str

    @property
    def rank(self) -> int:
        return len(self.source)

    @property
    def to_target(self) -> tuple[int, ...]:
        """Axes of a source-layout tensor, in target order: target = source.transpose(to_target)."""
        return tuple(self.source.index(axis) for axis in self.target)

    @property
    def to_source(self) -> tuple[int, ...]:
        return tuple(self.target.index(axis) for axis in self.source)

    @property
    def moves_channels(self) -> bool:
        """Channels-last <-> channels-first: the only kind of pair that also says something about other ranks."""
        return (self.source[-1] == "C" and self.target[1] == "C") or (self.source[1] == "C" and self.target[-1] == "C")

    def describe(self) -> str:
        return f"{self.source} -> {self.target}"

    def source_to_target(self, array: np.ndarray) -> np.ndarray:
        return self._permute(array, to_target=True)

    def target_to_source(self, array: np.ndarray) -> np.ndarray:
        return self._permute(array, to_target=False)

    def _permute(self, array: np.ndarray, *, to_target: bool) -> np.ndarray:
        if array.ndim == self.rank:
            return np.ascontiguousarray(np.transpose(array, self.to_target if to_target else self.to_source))
        if array.ndim >= 3 and self.moves_channels:
            # Another rank of the same convention (a Conv1D feature map in an NHWC model): move the channel axis.
            channels_last_first = (self.source[-1] == "C") == to_target
            return np.ascontiguousarray(np.moveaxis(array, -1, 1) if channels_last_first
                                        else np.moveaxis(array, 1, -1))
        return array

    def target_shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape a source-layout tensor of ``shape`` has in the target layout."""
        return tuple(self.source_to_target(np.empty(shape, dtype=np.uint8)).shape) if shape else shape


def parse_layouts(value: Any) -> LayoutPair | None:
    """None, or a pair of layout strings -> LayoutPair; anything else is a usage error naming what is wrong."""
    if value is None:
        return None
    if isinstance(value, LayoutPair):
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        raise ParityUsageError(f"parity argument layouts={value!r} must be a pair (source_layout, target_layout) of "
                               f"layout strings, for example {EXAMPLES}")
    source, target = (v.strip().upper() for v in value)
    for layout in (source, target):
        if len(layout) < 2 or not layout.isalpha() or len(set(layout)) != len(layout):
            raise ParityUsageError(f"parity argument layouts={value!r}: {layout!r} is not a layout; a layout names "
                                   f"each axis once with one letter (N batch, C channels, H/W/D/T spatial or time), "
                                   f"for example {EXAMPLES}")
    if sorted(source) != sorted(target):
        raise ParityUsageError(f"parity argument layouts={value!r}: {source!r} and {target!r} do not name the same "
                               f"axes, so one cannot be permuted into the other; for example {EXAMPLES}")
    return LayoutPair(source, target)


def check_inputs_fit(layouts: LayoutPair, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
    """Every input must have the layout's rank: a rank-2 input under ("NHWC", "NCHW") is a mistake, not a no-op."""
    for name, shape in shapes:
        if len(shape) != layouts.rank:
            raise ParityUsageError(
                f"layouts={(layouts.source, layouts.target)!r} describes rank-{layouts.rank} inputs, but {name} has "
                f"shape {list(shape)} (rank {len(shape)}). Give inputs in the source's layout ({layouts.source}), or "
                f"pass layouts=None when both models take the same layout.")
