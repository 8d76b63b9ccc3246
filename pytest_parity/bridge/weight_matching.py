"""Follow each source weight into the converted model, whatever the converters renamed or transposed.

tf2onnx names a Keras conv kernel ``.../convolution/ReadVariableOp:0`` and stores it OIHW instead of HWIO; onnx2torch
turns it into ``<node>.weight`` or an anonymous ``initializers.onnx_initializer_N`` buffer. Names are no guide, values
are: a converter copies a weight's elements, possibly with its axes permuted or with unit axes added or removed (tf2onnx
reshapes a LayerNormalization gamma [16] to [1, 16]). So a source weight matches the target tensor that equals it under
some axis permutation, unit axes ignored. Seeded non-constant weights (see ``randomize_constant_weights``)
make the values distinctive.

Recurrent layers move elements further. tf2onnx stores a Keras LSTM kernel [in, 4H] (gates i, f, c, o) as the ONNX
LSTM's W [num_directions, 4H, in] with the gates reordered to i, o, f, c; the Keras bias [4H] becomes the first half of
B [num_directions, 8H] (the recurrent half is zero); a GRU bias [2, 3H] (reset_after=True) is a row of B [.., 6H]; a
Bidirectional wrapper's two layers share each of W, R, B, one direction each. So a source that no whole tensor holds
is also looked for in parts of tensors laid out like ONNX recurrent inputs (one direction, one half of a bias, a bias
row read as [2, n]), with the gate blocks along one axis in one of the known gate orders. Only sources without an
exact plain match are searched this way, which keeps the common case as fast as before.

A source that no tensor holds under a permutation may be held in another shape (axes an exporter merged or split:
a Keras EinsumDense kernel [hidden, heads, head_dim] as a MatMul weight [hidden, heads * head_dim]), or several times
over (a weight tiled over the batch and folded into a constant): both are matched only on exact copies.

A target tensor that is *almost* equal to a source weight (within ``NEAR_MATCH_FRACTION`` of its largest element, and
in most elements within ``DENSE_NEAR_FRACTION``) is still matched, so that a conversion which altered a weight shows
up as that weight differing, by name, instead of as an unexplained output difference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

NEAR_MATCH_FRACTION = 0.1
# ... provided it differs in at most half of its elements (a converter altered some), or everywhere by no more than
# DENSE_NEAR_FRACTION of its largest element (rounding, a cast). A tensor a converter derived from a randomized weight
# is neither: tf2onnx folds a BatchNormalization's gamma * rsqrt(variance + eps), within 5% of gamma in every element
# (steps.SCALE_SPREAD), and must not pass for an altered gamma.
DENSE_NEAR_FRACTION = 0.01

# Gate-block orders a converter may apply to a recurrent weight, as "target block j holds source block order[j]".
GATE_ORDERS: dict[int, tuple[tuple[int, ...], ...]] = {
    4: ((0, 3, 1, 2),   # LSTM, Keras / torch (i, f, c, o) -> ONNX (i, o, f, c)
        (0, 2, 3, 1)),  # and back
    3: ((1, 0, 2),),    # GRU, Keras / ONNX (z, r, h) <-> torch (r, z, n)
}
# How many elements, spread over the tensor, are compared before all of them are: most candidates fail there.
_SAMPLE = 256

Box = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class WeightMatch:
    source_name: str
    target_name: str
    # With unit axes dropped from both shapes: target == source.transpose(permutation).
    permutation: tuple[int, ...]
    source_shape: tuple[int, ...]
    # The part of the target that holds the source, as (start, stop) per axis of the target; None: all of it.
    target_region: Box | None = None
    # That part read in this shape (before unit axes are dropped), e.g. an ONNX GRU bias row [6H] as [2, 3H].
    target_view_shape: tuple[int, ...] | None = None
    # Gate blocks reordered along this axis of the transposed source (unit axes dropped): target block j holds
    # source block gate_order[j].
    gate_axis: int | None = None
    gate_order: tuple[int, ...] | None = None
    # The target holds this many copies of the source along a new leading axis (a weight tiled over the batch and
    # folded into a constant, as keras-hub's ViT does with its class token): a weight reads back as the copies' mean,
    # a gradient as their sum (the gradient of a tile is the sum over its copies).
    copies: int | None = None

    def to_source_layout(self, target_value: np.ndarray) -> np.ndarray:
        """A target weight in the source's layout."""
        value = np.asarray(target_value)
        if self.copies is not None:
            return value.reshape(self.copies, *self.source_shape).mean(axis=0, dtype=np.float64).astype(value.dtype)
        return self._arranged(value)

    def gradient_to_source_layout(self, target_gradient: np.ndarray) -> np.ndarray:
        """The target tensor's gradient as the source weight's gradient."""
        value = np.asarray(target_gradient)
        if self.copies is not None:
            return value.reshape(self.copies, *self.source_shape).sum(axis=0, dtype=np.float64).astype(value.dtype)
        return self._arranged(value)

    def _arranged(self, value: np.ndarray) -> np.ndarray:
        if self.target_region is not None:
            value = value[tuple(slice(start, stop) for start, stop in self.target_region)]
        if self.target_view_shape is not None:
            value = value.reshape(self.target_view_shape)
        value = value.reshape(_without_unit_axes(value.shape))
        if self.gate_order is not None:
            assert self.gate_axis is not None
            value = _reorder_blocks(value, self.gate_axis, tuple(int(i) for i in np.argsort(self.gate_order)))
        return np.transpose(value, np.argsort(self.permutation)).reshape(self.source_shape)


def _without_unit_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def _reorder_blocks(value: np.ndarray, axis: int, order: tuple[int, ...]) -> np.ndarray:
    """Block j of the result is block order[j] of ``value`` (equal blocks along ``axis``)."""
    blocks = np.split(value, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


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


@dataclass
class _View:
    """A target tensor, or a part of one, as a source weight may appear in it."""

    target_name: str
    box: Box  # the elements it covers, for one-to-one bookkeeping
    region: Box | None
    view_shape: tuple[int, ...] | None
    values: np.ndarray  # unit axes dropped
    _float64: np.ndarray | None = None

    @property
    def float64(self) -> np.ndarray:
        if self._float64 is None:
            self._float64 = self.values.astype(np.float64)
        return self._float64


def _whole_view(name: str, value: np.ndarray) -> _View:
    box = tuple((0, size) for size in value.shape)
    return _View(name, box, None, None, value.reshape(_without_unit_axes(value.shape)))


def _recurrent_views(name: str, value: np.ndarray) -> list[_View]:
    """Parts of a tensor laid out like an ONNX LSTM / GRU / RNN input: W, R [num_directions, gates * H, n] and
    B [num_directions, 2 * gates * H], num_directions 1 or 2."""
    if value.ndim not in (2, 3) or value.shape[0] not in (1, 2) or not np.issubdtype(value.dtype, np.floating):
        return []
    views: list[_View] = []
    directions, rest = value.shape[0], value.shape[1:]
    if directions == 2 and np.array_equal(value[0], value[1]):
        # Two directions holding the very same values are one weight tiled twice (over a batch of 2), not the two
        # halves of a bidirectional layer, whose weights are distinct (randomize_constant_weights sees to equal ones).
        return []
    for d in range(directions):
        row: Box = ((d, d + 1), *((0, size) for size in rest))
        if directions == 2:  # with one direction, the whole tensor already is this part
            part = value[d:d + 1]
            views.append(_View(name, row, row, None, part.reshape(_without_unit_axes(part.shape))))
        if value.ndim == 2 and rest[0] % 2 == 0 and rest[0] >= 2:
            half = rest[0] // 2
            for start in (0, half):  # input half (Wb), recurrent half (Rb)
                region: Box = ((d, d + 1), (start, start + half))
                part = value[d:d + 1, start:start + half]
                views.append(_View(name, region, region, None, part.reshape(_without_unit_axes(part.shape))))
            # Both halves stacked, as a Keras GRU (reset_after=True) keeps its input and recurrent biases.
            views.append(_View(name, row, row, (2, half), value[d].reshape(2, half)))
    return views


@dataclass(frozen=True)
class _Candidate:
    relative_distance: float
    structured: bool  # anything beyond a plain axis permutation of a whole tensor
    source_order: int
    view_order: int
    match: WeightMatch
    box: Box


def _distance(moved: np.ndarray, view: _View, threshold: float, dense_threshold: float) -> float | None:
    """Largest absolute difference, or None when it exceeds ``threshold``, or ``dense_threshold`` in more than half of
    the elements; a sample is checked first."""
    if moved.size > _SAMPLE:
        # Spread over the whole tensor: a prefix would lie in the first gate block, which no gate order moves.
        picks = np.linspace(0, moved.size - 1, _SAMPLE).astype(np.intp)
        sample = np.abs(moved.flat[picks].astype(np.float64) - view.values.flat[picks].astype(np.float64))
        if float(np.max(sample)) > threshold:
            return None
    differences = np.abs(moved.astype(np.float64) - view.float64)
    distance = float(np.max(differences, initial=0.0))
    if distance > threshold:
        return None
    if distance > dense_threshold and np.count_nonzero(differences) > differences.size / 2:
        return None
    return distance


def _candidates(source_name: str, source_value: np.ndarray, source_order: int, views: list[tuple[int, _View]],
                structured_views: bool, gates: bool) -> list[_Candidate]:
    scale = float(np.max(np.abs(source_value))) if source_value.size else 0.0
    threshold = NEAR_MATCH_FRACTION * scale if scale > 0 else 0.0
    dense_threshold = DENSE_NEAR_FRACTION * scale if scale > 0 else 0.0
    source_core = source_value.reshape(_without_unit_axes(source_value.shape))
    found = []
    for view_order, view in views:
        structured = structured_views and view.region is not None
        for permutation in _permutations_onto(source_core.shape, view.values.shape):
            moved = np.transpose(source_core, permutation)
            arrangements: list[tuple[int | None, tuple[int, ...] | None, np.ndarray]] = []
            if not gates or structured:
                arrangements.append((None, None, moved))
            if gates:
                for axis, size in enumerate(moved.shape):
                    for order in (o for count, orders in GATE_ORDERS.items() if size % count == 0 for o in orders):
                        arrangements.append((axis, order, _reorder_blocks(moved, axis, order)))
            for gate_axis, gate_order, arranged in arrangements:
                distance = _distance(arranged, view, threshold, dense_threshold)
                if distance is None:
                    continue
                match = WeightMatch(source_name, view.target_name, permutation, tuple(source_value.shape),
                                    view.region, view.view_shape, gate_axis, gate_order)
                found.append(_Candidate(distance / scale if scale else 0.0, structured or gate_order is not None,
                                        source_order, view_order, match, view.box))
    return found


# Source ranks up to which every axis order is tried before a reshape (4! = 24 orders).
MAX_RESHAPE_RANK = 4


def _reshaped_candidates(source_name: str, source_value: np.ndarray, source_order: int,
                         views: list[tuple[int, _View]]) -> list[_Candidate]:
    """Whole target tensors (``views`` holds whole tensors only) with exactly the source's elements under another
    shape, possibly after its axes were reordered: a kernel whose axes an exporter merged or split (Keras' EinsumDense
    kernel [hidden, heads, head_dim] becomes a MatMul weight [hidden, heads * head_dim]; keras-hub Gemma's
    [heads, hidden, head_dim] is transposed to [hidden, heads, head_dim] first). Exact copies only; read back by a
    reshape and the inverse transpose."""
    if source_value.size < 2:
        return []
    core = source_value.reshape(_without_unit_axes(source_value.shape))
    orders = list(itertools.permutations(range(core.ndim))) if core.ndim <= MAX_RESHAPE_RANK else \
        [tuple(range(core.ndim))]
    found = []
    for view_order, view in views:
        for order in orders:
            moved = np.transpose(core, order)
            if view.values.shape == moved.shape or not np.array_equal(view.values.reshape(-1), moved.reshape(-1)):
                continue
            match = WeightMatch(source_name, view.target_name, tuple(int(a) for a in order),
                                tuple(source_value.shape), target_view_shape=tuple(moved.shape))
            found.append(_Candidate(0.0, True, source_order, view_order, match, view.box))
            break
    return found


def _tiled_candidates(source_name: str, source_value: np.ndarray, source_order: int,
                      target: dict[str, np.ndarray]) -> list[_Candidate]:
    """Target tensors of shape (k, *source shape), unit axes aside, k > 1, whose k slices are each exactly the source:
    the weight tiled over a leading axis and folded into a constant. Exact copies only: anything else is not a tile."""
    if source_value.size < 2:
        return []  # a scalar equals far too many slices of far too many tensors by chance
    core = source_value.reshape(_without_unit_axes(source_value.shape))
    found = []
    for view_order, (name, value) in enumerate(target.items()):
        if value.size <= source_value.size or value.size % source_value.size or value.dtype != source_value.dtype:
            continue
        copies = value.size // source_value.size
        target_core = value.reshape(_without_unit_axes(value.shape))
        if target_core.shape != (copies, *core.shape) or not np.array_equal(target_core, np.broadcast_to(
                core, target_core.shape)):
            continue
        match = WeightMatch(source_name, name, tuple(range(core.ndim)), tuple(source_value.shape), copies=copies)
        box = tuple((0, size) for size in value.shape)
        found.append(_Candidate(0.0, True, source_order, view_order, match, box))
    return found


def _overlaps(first: Box, second: Box) -> bool:
    return all(a_start < b_stop and b_start < a_stop for (a_start, a_stop), (b_start, b_stop) in zip(first, second))


def match_weights(source: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> WeightMatching:
    """One-to-one matching, closest pairs first; exact copies always win over near ones, plain copies over parts of
    tensors and reordered gates."""
    whole: dict[int, list[tuple[int, _View]]] = {}
    structured: dict[int, list[tuple[int, _View]]] = {}
    view_order = 0
    for name, value in target.items():
        whole.setdefault(value.size, []).append((view_order, _whole_view(name, value)))
        view_order += 1
        for view in _recurrent_views(name, value):
            structured.setdefault(view.values.size, []).append((view_order, view))
            view_order += 1

    candidates: list[_Candidate] = []
    for order, (source_name, source_value) in enumerate(source.items()):
        plain = _candidates(source_name, source_value, order, whole.get(source_value.size, []),
                            structured_views=False, gates=False)
        candidates += plain
        if any(c.relative_distance == 0.0 for c in plain):
            continue
        # No whole tensor holds it as it is: look into parts of recurrent-layout tensors and for reordered gates, and
        # for tensors that hold it several times over.
        views = sorted(whole.get(source_value.size, []) + structured.get(source_value.size, []), key=lambda v: v[0])
        structured_found = _candidates(source_name, source_value, order, views, structured_views=True, gates=True)
        candidates += structured_found
        if any(c.relative_distance == 0.0 for c in structured_found):
            continue
        # Nor a part of one: exact copies in another shape, or several times over.
        candidates += _tiled_candidates(source_name, source_value, order, target)
        candidates += _reshaped_candidates(source_name, source_value, order, whole.get(source_value.size, []))

    candidates.sort(key=lambda c: (c.relative_distance, c.structured, c.source_order, c.view_order))
    matching = WeightMatching()
    used_source: set[str] = set()
    claimed: dict[str, list[Box]] = {}
    for candidate in candidates:
        match = candidate.match
        if match.source_name in used_source:
            continue
        boxes = claimed.setdefault(match.target_name, [])
        if any(_overlaps(candidate.box, box) for box in boxes):
            continue
        used_source.add(match.source_name)
        boxes.append(candidate.box)
        matching.matches.append(match)
    order_of = {name: i for i, name in enumerate(source)}
    matching.matches.sort(key=lambda m: order_of[m.source_name])
    for name in source:
        if name not in used_source:
            matching.unmatched[name] = _duplicate_reason(name, source, matching, candidates) or (
                "no tensor in the target holds these values: the converter folded it into another tensor "
                "(e.g. BatchNorm into the preceding Conv) or dropped it, so its gradient cannot be compared"
            )
    return matching


def _duplicate_reason(name: str, source: dict[str, np.ndarray], matching: WeightMatching,
                      candidates: list[_Candidate]) -> str | None:
    """Why a weight lost its place to another one with the very same values, if it did."""
    places = {(c.match.target_name, c.box) for c in candidates
              if c.match.source_name == name and c.relative_distance == 0.0}
    for match in matching.matches:
        twin = source[match.source_name]
        if twin.shape == source[name].shape and np.array_equal(twin, source[name]) and any(
                target == match.target_name for target, _ in places):
            return (f"it holds exactly the values of {match.source_name!r}, and the target keeps one tensor for both "
                    f"({match.target_name!r}; tf2onnx merges equal constants), so neither gradient can be told apart: "
                    f"give the two weights different values")
    return None
