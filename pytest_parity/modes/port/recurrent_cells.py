"""Hand-written recurrent cells (LSTM/GRU written as two projections in a loop) paired with the framework's LSTM/GRU.

A port often writes the cell by hand: ``gates = self.ih(x_t) + self.hh(h)`` with ``ih = Linear(I, 4H)`` and
``hh = Linear(H, 4H)`` in a loop over time (or two Dense layers in a Keras loop or custom RNN cell), where the other
side has one nn.LSTM / keras LSTM. Exported, the loop is two Gemms called T times, the other side one LSTM op, so ops in
order do not pair ("different operations: LSTM vs Gemm"). Where one side has a single-direction LSTM (GRU) op of hidden
size H and input size I and the other, at that place, two consecutive Gemms W [G*H, I] and W [G*H, H] (G = 4 for an
LSTM, 3 for a GRU), the two are read as one recurrent op: W from the input projection, R from the hidden one, B = [Wb,
Rb] from their biases (one bias counts as Wb with Rb zero, as Keras' single LSTM bias does), each in the gate order of
the cell's own framework, the order its LSTM/GRU documents and a hand-written cell copies: PyTorch LSTM i,f,g,o and GRU
r,z,n (reset gate applied after the hidden projection, as nn.GRU); Keras LSTM i,f,c,o and GRU z,r,h (reset_after=True).
Outputs and every weight's gradient are then compared as for any pair.

A cell that chunks its gates in one order and uses them in another (i,f,g,o chunks used as i,g,f,o) computes another
function: the comparison fails, and ``gate_order_finding`` tries the other gate orders for the cell's row blocks; the
one under which the outputs agree names the gates the cell swaps. Cells written otherwise (one projection per gate, one
Linear over [x, h]) are not recognised: the pairing refusal names what is supported.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.layouts import GRU_KERAS_TO_ONNX, GRU_TORCH_TO_ONNX, LSTM_KERAS_TO_ONNX, LSTM_TORCH_TO_ONNX
from pytest_parity.modes.port.ops import Binding, ParamOp, Values, reorder_gates, restore_gates

GATES = {"LSTM": 4, "GRU": 3}
# The gate names and order (-> ONNX) a hand-written cell is read in: its own framework's documented convention.
CONVENTIONS: dict[tuple[str, str], tuple[tuple[str, ...], tuple[int, ...]]] = {
    ("torch", "LSTM"): (("i", "f", "g", "o"), LSTM_TORCH_TO_ONNX),
    ("keras", "LSTM"): (("i", "f", "c", "o"), LSTM_KERAS_TO_ONNX),
    ("torch", "GRU"): (("r", "z", "n"), GRU_TORCH_TO_ONNX),
    ("keras", "GRU"): (("z", "r", "h"), GRU_KERAS_TO_ONNX),
}
SUPPORTED = ("a hand-written LSTM/GRU cell is recognised as an input projection Linear/Dense (I -> G*H) called before "
             "a hidden projection (H -> G*H), G = 4 for an LSTM and 3 for a GRU, with the gates in its framework's "
             "order (PyTorch i,f,g,o / r,z,n; Keras i,f,c,o / z,r,h); a cell with one projection per gate or one "
             "projection of [x, h] is not")

Shapes = dict[str, tuple[int, ...]]


def _framework(op: ParamOp) -> str:
    return "keras" if op.kind in ("Dense", "EinsumDense") else "torch"


@dataclass(frozen=True)
class CellReading:
    """How a hand-written cell's two projections are read as one recurrent op."""

    kind: str                       # "LSTM" or "GRU"
    framework: str                  # "torch" or "keras": whose gate convention the cell follows
    input_projection: ParamOp
    hidden_projection: ParamOp
    # Block k of the cell's projections is used as gate names[usage[k]]: the identity for a cell that follows its
    # convention; another order only while gate_order_finding tries one.
    usage: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return CONVENTIONS[(self.framework, self.kind)][0]

    def label(self) -> str:
        return f"{self.input_projection.layer} + {self.hidden_projection.layer}"


def _gates(reading: CellReading) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """Cell layout [G*H, ...] -> ONNX gate order, and back."""
    _, to_onnx = CONVENTIONS[(reading.framework, reading.kind)]

    def export(cell: np.ndarray) -> np.ndarray:
        return reorder_gates(restore_gates(cell, reading.usage, 0), to_onnx, 0)

    def load(onnx: np.ndarray) -> np.ndarray:
        return reorder_gates(restore_gates(onnx, to_onnx, 0), reading.usage, 0)

    return export, load


def _weight(projection: Binding, reading: CellReading) -> Binding:
    export, load = _gates(reading)
    return Binding(projection.variables, lambda values: export(projection.export(values))[None],
                   lambda tensor: projection.load(load(tensor[0])))


def _bias(input_bias: Binding | None, hidden_bias: Binding | None, reading: CellReading, size: int) -> Binding:
    """B = [Wb, Rb] (ONNX, one direction) from the two projections' biases; a missing one is zero, and with a single
    bias loading sums the halves (its adjoint copies the gradient to both), as for Keras' single LSTM bias."""
    export, load = _gates(reading)
    present = [binding for binding in (input_bias, hidden_bias) if binding is not None]
    variables = tuple(name for binding in present for name in binding.variables)

    def halves(values: Values) -> list[np.ndarray]:
        return [np.zeros(size, np.float32) if binding is None else export(binding.export(values))
                for binding in (input_bias, hidden_bias)]

    def export_bias(values: Values) -> np.ndarray:
        return np.concatenate(halves(values))[None]

    if len(present) == 2:
        def load_both(tensor: np.ndarray) -> Values:
            first, second = np.split(tensor[0], 2)
            assert input_bias is not None and hidden_bias is not None
            return {**input_bias.load(load(first)), **hidden_bias.load(load(second))}

        return Binding(variables, export_bias, load_both)
    (single,) = present

    def load_single(tensor: np.ndarray) -> Values:
        first, second = np.split(tensor[0], 2)
        return single.load(load(first + second))

    def export_adjoint(gradient: np.ndarray) -> Values:
        first, second = np.split(gradient[0], 2)
        return single.load(load(first if single is input_bias else second))

    def load_adjoint(gradients: Values) -> np.ndarray:
        gates = export(single.export(gradients))
        return np.concatenate([gates, gates])[None]

    return Binding(variables, export_bias, load_single, export_adjoint, load_adjoint)


def cell_op(reading: CellReading, hidden_size: int) -> ParamOp:
    """The two projections as one single-direction recurrent op in ONNX conventions."""
    size = GATES[reading.kind] * hidden_size
    bindings = {"W": _weight(reading.input_projection.bindings["W"], reading),
                "R": _weight(reading.hidden_projection.bindings["W"], reading)}
    if "B" in reading.input_projection.bindings or "B" in reading.hidden_projection.bindings:
        bindings["B"] = _bias(reading.input_projection.bindings.get("B"), reading.hidden_projection.bindings.get("B"),
                              reading, size)
    attributes: dict[str, Any] = {"hidden_size": hidden_size, "direction": "forward", "hand_written_cell": reading}
    return ParamOp(reading.kind, f"{reading.label()} (hand-written {reading.kind} cell)",
                   f"{reading.input_projection.kind} pair", bindings, attributes)


def _plain(binding: Binding) -> bool:
    return not (binding.export_adjoint or binding.load_adjoint or binding.parts or binding.block)


def _reading_at(recurrent: ParamOp, shapes: Shapes, others: list[ParamOp], other_shapes: list[Shapes],
                index: int) -> CellReading | None:
    if recurrent.op not in GATES or "W" not in shapes or "R" not in shapes or shapes["W"][0] != 1:
        return None
    if index + 1 >= len(others) or any(op.op != "Gemm" for op in others[index:index + 2]):
        return None
    _, gate_rows, inputs = shapes["W"]
    hidden = shapes["R"][2]
    first, second = other_shapes[index:index + 2]
    if first.get("W") != (gate_rows, inputs) or second.get("W") != (gate_rows, hidden):
        return None
    if not all(_plain(binding) for op in others[index:index + 2] for binding in op.bindings.values()):
        return None
    framework = _framework(others[index])
    return CellReading(recurrent.op, framework, others[index], others[index + 1], tuple(range(GATES[recurrent.op])))


def fuse_hand_written_cells(source_ops: list[ParamOp], target_ops: list[ParamOp], source_shapes: list[Shapes],
                            target_shapes: list[Shapes]) -> list[str]:
    """Where one side has a recurrent op and the other a hand-written cell's two projections at that place, the two
    projections become one recurrent op (the lists are changed in place); a note for each."""
    notes: list[str] = []
    index = 0
    while index < min(len(source_ops), len(target_ops)):
        for recurrent, shapes, others, other_shapes in ((source_ops, source_shapes, target_ops, target_shapes),
                                                        (target_ops, target_shapes, source_ops, source_shapes)):
            reading = _reading_at(recurrent[index], shapes[index], others, other_shapes, index)
            if reading is None:
                continue
            _, gate_rows, inputs = shapes[index]["W"]
            hidden = shapes[index]["R"][2]
            fused = cell_op(reading, hidden)
            others[index:index + 2] = [fused]
            other_shapes[index:index + 2] = [{"W": (1, gate_rows, inputs), "R": (1, gate_rows, hidden),
                                              **({"B": (1, 2 * gate_rows)} if "B" in fused.bindings else {})}]
            notes.append(f"hand-written {reading.kind} cell {reading.label()} paired with {recurrent[index].label()}: "
                         f"its input and hidden projections read as one {reading.kind} with the gates in "
                         f"{'PyTorch' if reading.framework == 'torch' else 'Keras'}'s order "
                         f"({','.join(reading.names)})")
            break
        index += 1
    return notes


def gate_order_finding(pairs: list[Any], outputs_agree: Callable[[], bool]) -> str | None:
    """For a failed check with hand-written cells: the gate order under which the outputs agree, tried for one cell
    at a time (``pairs``: the plan's op pairs, changed and put back; ``outputs_agree`` carries the weights of the plan
    as it is then and compares the outputs). Found: which gates the cell uses in another order; None where no order
    explains the failure (or there is no hand-written cell)."""
    cells: list[tuple[Callable[[ParamOp], None], ParamOp, CellReading]] = []
    for pair in pairs:
        for side in ("source", "target"):
            op = getattr(pair, side)
            reading = op.attributes.get("hand_written_cell")
            if isinstance(reading, CellReading):
                cells.append((functools.partial(setattr, pair, side), op, reading))
    for put, original, reading in cells:
        hidden = int(original.attributes["hidden_size"])
        try:
            for usage in itertools.permutations(range(GATES[reading.kind])):
                if usage == reading.usage:
                    continue
                put(cell_op(CellReading(reading.kind, reading.framework, reading.input_projection,
                                        reading.hidden_projection, usage), hidden))
                if outputs_agree():
                    used = ",".join(reading.names[k] for k in usage)
                    swapped = [f"rows of block {k + 1} ({reading.names[k]}) are used as {reading.names[usage[k]]}"
                               for k in range(len(usage)) if usage[k] != k]
                    return (f"hand-written {reading.kind} cell {reading.label()}: its gates are used in the order "
                            f"{used}, not {','.join(reading.names)} ({'; '.join(swapped)}): the outputs agree once "
                            f"its projections' row blocks are carried in that order. Likely cause: the chunks of the "
                            f"gate pre-activations unpacked in another order than the one they are computed in; "
                            f"unpack them as {','.join(reading.names)}")
        finally:
            put(original)
    return None
