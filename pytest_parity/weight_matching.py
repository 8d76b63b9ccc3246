"""Follow each source weight into the converted model, whatever the converters renamed or transposed.

tf2onnx names a Keras conv kernel ``.../convolution/ReadVariableOp:0`` and stores it OIHW instead of HWIO; onnx2torch
turns it into ``<node>.weight`` or an anonymous ``initializers.onnx_initializer_N`` buffer. Names are no guide, values
are: a converter copies a weight's elements, possibly with its axes permuted or with unit axes added or removed (tf2onnx
reshapes a LayerNormalization gamma [16] to [1, 16]). So a source weight matches the target tensor that equals it under
some axis permutation, unit axes ignored. Seeded non-constant weights (see ``randomize_constant_weights``)
make the values distinctive.

A target tensor that is *almost* equal to a source weight (within ``NEAR_MATCH_FRACTION`` of its largest element) is
still matched, so that a conversion which altered a weight shows up as that weight differing, by name, instead of as an
unexplained output difference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

NEAR_MATCH_FRACTION = 0.1


@dataclass(frozen=True)
class WeightMatch:
    source_name: str
    target_name: str
    # With unit axes dropped from both shapes: target == source.transpose(permutation).
    permutation: tuple[int, ...]
    source_shape: tuple[int, ...]

    def to_source_layout(self, target_value: np.ndarray) -> np.ndarray:
        squeezed = target_value.reshape(_without_unit_axes(target_value.shape))
        return np.transpose(squeezed, np.argsort(self.permutation)).reshape(self.source_shape)


def _without_unit_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


@dataclass
class WeightMatching:
    matches: list[WeightMatch] = field(default_factory=list)
    unmatched: dict[str, str] = field(default_factory=dict)

    def by_source(self) -> dict[str, WeightMatch]:
        return {match.source_name: match for match in self.matches}


def _permutations_onto(source_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    if len(source_shape) != len(target_shape) or sorted(source_shape) != sorted(target_shape):
        return []
    found = []
    for permutation in itertools.permutations(range(len(source_shape))):
        if tuple(source_shape[axis] for axis in permutation) == target_shape:
            found.append(permutation)
    return found


def match_weights(source: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> WeightMatching:
    """One-to-one matching, closest pairs first; exact copies always win over near ones."""
    candidates: list[tuple[float, int, str, str, tuple[int, ...]]] = []
    for order, (source_name, source_value) in enumerate(source.items()):
        scale = float(np.max(np.abs(source_value))) if source_value.size else 0.0
        for target_name, target_value in target.items():
            if target_value.size != source_value.size:
                continue
            source_core = source_value.reshape(_without_unit_axes(source_value.shape))
            target_core = target_value.reshape(_without_unit_axes(target_value.shape)).astype(np.float64)
            for permutation in _permutations_onto(source_core.shape, target_core.shape):
                moved = np.transpose(source_core, permutation)
                distance = float(np.max(np.abs(moved.astype(np.float64) - target_core), initial=0.0))
                if distance == 0.0 or (scale > 0 and distance <= NEAR_MATCH_FRACTION * scale):
                    candidates.append((distance / scale if scale else 0.0, order, source_name, target_name,
                                       permutation))
    candidates.sort(key=lambda c: (c[0], c[1]))
    matching = WeightMatching()
    used_source: set[str] = set()
    used_target: set[str] = set()
    for _, _, source_name, target_name, permutation in candidates:
        if source_name in used_source or target_name in used_target:
            continue
        used_source.add(source_name)
        used_target.add(target_name)
        matching.matches.append(WeightMatch(source_name, target_name, permutation, source[source_name].shape))
    order_of = {name: i for i, name in enumerate(source)}
    matching.matches.sort(key=lambda m: order_of[m.source_name])
    for name in source:
        if name not in used_source:
            matching.unmatched[name] = (
                "no tensor in the target holds these values: the converter folded it into another tensor "
                "(e.g. BatchNorm into the preceding Conv) or dropped it, so its gradient cannot be compared"
            )
    return matching
