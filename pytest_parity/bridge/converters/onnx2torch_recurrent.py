"""onnx2torch converters for the ONNX ops that Keras recurrent layers become and onnx2torch 1.5.15 lacks.

tf2onnx 1.17 turns a Keras LSTM (also inside Bidirectional) into an ONNX LSTM node, but a Keras GRU or SimpleRNN into a
Loop over the cell's ops, and the backward half of a Bidirectional GRU/SimpleRNN reverses its input with
ReverseSequence. onnx2torch has a converter for none of LSTM, GRU, RNN, Loop and ReverseSequence; this module registers
them through onnx2torch's own registry, so importing it is enough (``from_onnx`` imports it before converting).

LSTM / GRU / RNN follow the ONNX spec for the defaults tf2onnx emits (directions forward / reverse / bidirectional,
layout 0 and 1, optional initial states, outputs Y, Y_h, Y_c) and refuse anything else with a NotImplementedError that
names the node, the attribute and its value, rather than computing something subtly different. Their W, R and B
initializers become nn.Parameters in ONNX layout, so that they are weights of the converted model and take gradients.

A Loop's body is converted with onnx2torch itself and run step by step; the weights tf2onnx passes into the loop stay
tensors of the enclosing model, so gradients reach them through every step.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import onnx
import torch
from onnx import helper
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

from pytest_parity.layouts import GRU_TORCH_TO_ONNX, LSTM_TORCH_TO_ONNX

__all__ = ["model_opsets"]

# Gate blocks of torch's fused kernels, as indices into the ONNX blocks (the inverse of port mode's torch -> ONNX
# orders, so both share one statement of the conventions). ONNX LSTM: i, o, f, c; torch: i, f, g(=c), o. ONNX GRU:
# z, r, h; torch: r, z, n.
_LSTM_ONNX_TO_TORCH = tuple(LSTM_TORCH_TO_ONNX.index(i) for i in range(4))
_GRU_ONNX_TO_TORCH = tuple(GRU_TORCH_TO_ONNX.index(i) for i in range(3))

# torch's cuDNN path warns on every call when the weights are not one flat buffer. Ours are gathered from the
# ONNX-layout parameters at each call (that is what makes them differentiable in ONNX layout), so they never are.
_CUDNN_WEIGHT_WARNING = "RNN module weights are not part of single contiguous chunk of memory"

# A Loop body is a graph of its own, converted with the enclosing model's opsets; the converter interface
# (node, graph) does not carry them, so from_onnx sets them here around onnx2torch.convert.
_MODEL_OPSETS: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("model_opsets", default=None)


@contextlib.contextmanager
def model_opsets(model_proto: Any) -> Iterator[None]:
    """Make the model's opsets known to the Loop converter while onnx2torch converts ``model_proto``."""
    token = _MODEL_OPSETS.set({entry.domain: entry.version for entry in model_proto.opset_import})
    try:
        yield
    finally:
        _MODEL_OPSETS.reset(token)


def _register(operation_type: str, versions: Sequence[int], converter: Any) -> None:
    for version in versions:
        try:
            add_converter(operation_type=operation_type, version=version)(converter)
        except ValueError:
            pass  # already registered, by a newer onnx2torch or by the user: theirs stays in charge


def _index_slices_with_tuples() -> None:
    """onnx2torch 1.5.15's Slice indexes with a *list* of slices, which torch >= 2.9 warns about ("Using a non-tuple
    sequence for multidimensional indexing", an error in suites that turn warnings into errors) and announces will mean
    tensor indexing later. tf2onnx slices every Keras recurrent layer's output, so its one helper is replaced by the
    same code indexing with tuples; only when it still has the signature this was written against."""
    import inspect

    from onnx2torch.node_converters import slice as slice_converters

    original = getattr(slice_converters, "_do_slice", None)
    if original is None or getattr(original, "pytest_parity_tuple_indexing", False):
        return
    if list(inspect.signature(original).parameters) != ["x", "flip_dims", "pos_axes_slices", "neg_axes_slices"]:
        return

    def _do_slice(x: torch.Tensor, flip_dims: list[int], pos_axes_slices: list[Any],
                  neg_axes_slices: list[Any]) -> torch.Tensor:
        if flip_dims:
            x = torch.flip(x, dims=flip_dims)
        if pos_axes_slices:
            x = x[tuple(pos_axes_slices)]
        if neg_axes_slices:
            x = x[tuple(neg_axes_slices)]
        return x

    _do_slice.pytest_parity_tuple_indexing = True  # type: ignore[attr-defined]
    slice_converters._do_slice = _do_slice


_index_slices_with_tuples()


def _unsupported(node: OnnxNode, what: str, value: Any, supported: str) -> NotImplementedError:
    # One line: the bridge quotes the first line of a converter's error in its ConversionError.
    return NotImplementedError(
        f"ONNX {node.operation_type} node {node.name!r}: {what}={value!r} is not supported by pytest-parity's "
        f"converter (supported: {supported})")


# ----------------------------------------------------------------------------------------------------------------------
# LSTM, GRU, RNN
# ----------------------------------------------------------------------------------------------------------------------

_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
# ONNX input positions; the ones after B are optional and differ between LSTM and GRU / RNN only by initial_c and P.
_INPUT_SLOTS = {"LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
                "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
                "RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h")}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}


def _check_recurrent_attributes(node: OnnxNode, num_directions: int) -> None:
    op = node.operation_type
    attributes = node.attributes
    default = _DEFAULT_ACTIVATIONS[op]
    activations = tuple(str(a).lower() for a in attributes.get("activations", default * num_directions))
    # The RNN schema's own default lists Tanh twice even for one direction.
    if len(activations) % len(default) or activations != default * (len(activations) // len(default)) or \
            len(activations) // len(default) not in (num_directions, 2):
        raise _unsupported(node, "attribute activations", list(attributes["activations"]),
                           f"the defaults {[a.capitalize() for a in default]} per direction")
    for name in ("activation_alpha", "activation_beta", "clip"):
        if name in attributes:
            raise _unsupported(node, f"attribute {name}", attributes[name], "not setting it")
    if attributes.get("input_forget", 0) != 0:
        raise _unsupported(node, "attribute input_forget", attributes["input_forget"], "0")
    if attributes.get("layout", 0) not in (0, 1):
        raise _unsupported(node, "attribute layout", attributes["layout"], "0 or 1")
    if op == "GRU" and attributes.get("linear_before_reset", 0) not in (0, 1):
        raise _unsupported(node, "attribute linear_before_reset", attributes["linear_before_reset"], "0 or 1")
    slots = _INPUT_SLOTS[op]
    for position, value_name in enumerate(node.input_values):
        if value_name and slots[position] in ("sequence_lens", "P"):
            raise _unsupported(node, f"input {slots[position]}", value_name, "leaving it out")


def _gate_index(order: Sequence[int], hidden_size: int, device: torch.device) -> torch.Tensor:
    blocks = [torch.arange(g * hidden_size, (g + 1) * hidden_size, device=device) for g in order]
    return torch.cat(blocks)


class OnnxRecurrent(nn.Module, OnnxToTorchModule):
    """ONNX LSTM / GRU / RNN with W, R, B in ONNX layout ([num_directions, gates * hidden, ...])."""

    def __init__(self, operation_type: str, node_name: str, hidden_size: int, direction: str, layout: int,
                 linear_before_reset: int, constants: dict[str, torch.Tensor], dynamic_slots: tuple[str, ...],
                 num_outputs: int) -> None:
        super().__init__()
        self.operation_type = operation_type
        self.node_name = node_name
        self.hidden_size = hidden_size
        self.direction = direction
        self.num_directions = _DIRECTIONS[direction]
        self.layout = layout
        self.linear_before_reset = linear_before_reset
        self.gates = _GATES[operation_type]
        self.dynamic_slots = dynamic_slots
        self.num_outputs = num_outputs
        self.W: nn.Parameter | None = None
        self.R: nn.Parameter | None = None
        self.B: nn.Parameter | None = None
        for name, value in constants.items():
            setattr(self, name, nn.Parameter(value))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        values = dict(zip(self.dynamic_slots, inputs))
        x = values["X"]
        weight = values.get("W", self.W)
        recurrent = values.get("R", self.R)
        bias = values.get("B", self.B)
        assert weight is not None and recurrent is not None  # the converter made them parameters or inputs
        hidden = self.hidden_size
        if self.layout == 1:  # [batch, seq, ...] and [batch, num_directions, hidden]: compute in layout 0
            x = x.transpose(0, 1)
        batch = x.shape[1]
        if bias is None:
            bias = x.new_zeros(self.num_directions, 2 * self.gates * hidden)
        states = []
        for slot in ("initial_h", "initial_c"):
            state = values.get(slot)
            if state is None:
                state = x.new_zeros(self.num_directions, batch, hidden)
            elif self.layout == 1:
                state = state.transpose(0, 1)
            states.append(state.to(x.dtype).contiguous())
        if self.operation_type == "GRU" and not self.linear_before_reset:
            y, y_h = _gru_reset_before_linear(x, weight, recurrent, bias, states[0], self.direction)
            y_c = None
        else:
            y, y_h, y_c = self._fused(x, weight, recurrent, bias, states)
        if self.layout == 1:
            y = y.permute(2, 0, 1, 3)  # [seq, dirs, batch, hidden] -> [batch, seq, dirs, hidden]
            y_h = y_h.transpose(0, 1)
            y_c = None if y_c is None else y_c.transpose(0, 1)
        if self.num_outputs == 1:
            return y
        outputs = [y, y_h] if y_c is None else [y, y_h, y_c]
        return tuple(outputs[:self.num_outputs])

    def _fused(self, x: torch.Tensor, weight: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor,
               states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """torch's own kernels (cuDNN on GPU), with the gate blocks reordered by indexing, which keeps autograd
        pointing at the ONNX-layout tensors. The single "reverse" direction has no fused form: it runs forward on the
        time-reversed sequence and reverses the result, which is what the spec's reverse direction computes."""
        hidden, gates = self.hidden_size, self.gates
        order = {"LSTM": _LSTM_ONNX_TO_TORCH, "GRU": _GRU_ONNX_TO_TORCH, "RNN": (0,)}[self.operation_type]
        index = _gate_index(order, hidden, x.device)
        params: list[torch.Tensor] = []
        for d in range(self.num_directions):
            params += [weight[d].index_select(0, index), recurrent[d].index_select(0, index),
                       bias[d, :gates * hidden].index_select(0, index),
                       bias[d, gates * hidden:].index_select(0, index)]
        reverse = self.direction == "reverse"
        if reverse:
            x = x.flip(0)
        bidirectional = self.num_directions == 2
        # train=True whenever autograd records: cuDNN can only differentiate a call made in training mode, and with
        # dropout 0 (ONNX has none) training mode computes the same outputs.
        train = torch.is_grad_enabled()
        cell_state = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_CUDNN_WEIGHT_WARNING, category=UserWarning)
            if self.operation_type == "LSTM":
                output, final_h, cell_state = torch._VF.lstm(
                    x, (states[0], states[1]), params, True, 1, 0.0, train, bidirectional, False)
            elif self.operation_type == "GRU":
                output, final_h = torch._VF.gru(
                    x, states[0], params, True, 1, 0.0, train, bidirectional, False)
            else:
                output, final_h = torch._VF.rnn_tanh(
                    x, states[0], params, True, 1, 0.0, train, bidirectional, False)
        if reverse:
            output = output.flip(0)
        # torch puts the directions side by side in the feature axis; ONNX Y has them on an axis of their own.
        y = output.reshape(output.shape[0], output.shape[1], self.num_directions, hidden).permute(0, 2, 1, 3)
        return y, final_h, cell_state


def _gru_reset_before_linear(x: torch.Tensor, weight: torch.Tensor, recurrent: torch.Tensor, bias: torch.Tensor,
                             initial_h: torch.Tensor, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX GRU with linear_before_reset=0 (Keras reset_after=False): the reset gate scales the hidden state before the
    recurrent product, which no torch kernel computes, so this is an explicit time loop."""
    hidden = recurrent.shape[-1]
    steps = x.shape[0]
    reverse_flags = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    outputs, finals = [], []
    for d, reverse in enumerate(reverse_flags):
        # Input projections for all steps at once; gates z, r, h as in ONNX.
        projected = torch.matmul(x, weight[d].t()) + bias[d, :3 * hidden]
        update_reset_weight, candidate_weight = recurrent[d, :2 * hidden], recurrent[d, 2 * hidden:]
        update_reset_bias, candidate_bias = bias[d, 3 * hidden:5 * hidden], bias[d, 5 * hidden:]
        h = initial_h[d]
        per_step: list[torch.Tensor | None] = [None] * steps
        for t in (reversed(range(steps)) if reverse else range(steps)):
            x_z, x_r, x_h = projected[t].split(hidden, dim=-1)
            h_z, h_r = (torch.matmul(h, update_reset_weight.t()) + update_reset_bias).split(hidden, dim=-1)
            update = torch.sigmoid(x_z + h_z)
            reset = torch.sigmoid(x_r + h_r)
            candidate = torch.tanh(x_h + torch.matmul(reset * h, candidate_weight.t()) + candidate_bias)
            h = (1 - update) * candidate + update * h
            per_step[t] = h
        outputs.append(torch.stack([s for s in per_step if s is not None]))
        finals.append(h)
    return torch.stack(outputs, dim=1), torch.stack(finals)


def _convert_recurrent(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    op = node.operation_type
    direction = node.attributes.get("direction", "forward")
    if direction not in _DIRECTIONS:
        raise _unsupported(node, "attribute direction", direction, "forward, reverse, bidirectional")
    _check_recurrent_attributes(node, _DIRECTIONS[direction])
    slots = _INPUT_SLOTS[op]
    constants: dict[str, torch.Tensor] = {}
    dynamic_names: list[str] = []
    dynamic_slots: list[str] = []
    for position, value_name in enumerate(node.input_values):
        if not value_name:
            continue
        slot = slots[position]
        if slot in ("W", "R", "B") and value_name in graph.initializers:
            constants[slot] = graph.initializers[value_name].to_torch()
        else:
            dynamic_names.append(value_name)
            dynamic_slots.append(slot)
    hidden_size = node.attributes.get("hidden_size")
    if "R" in constants:
        if hidden_size is not None and hidden_size != constants["R"].shape[-1]:
            raise _unsupported(node, "attribute hidden_size", hidden_size, f"R's last axis, {constants['R'].shape[-1]}")
        hidden_size = constants["R"].shape[-1]
    if hidden_size is None:
        raise _unsupported(node, "attribute hidden_size", None, "a hidden_size or a constant R")
    module = OnnxRecurrent(op, node.name, int(hidden_size), direction, node.attributes.get("layout", 0),
                           node.attributes.get("linear_before_reset", 0), constants, tuple(dynamic_slots),
                           len(node.output_values))
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=tuple(dynamic_names), outputs=node.output_values))


# LSTM / GRU / RNN 7 and 14 differ only by the layout attribute (and bfloat16); an opset-17 model looks up 14.
for _op in ("LSTM", "GRU", "RNN"):
    _register(_op, (7, 14), _convert_recurrent)


# ----------------------------------------------------------------------------------------------------------------------
# ReverseSequence
# ----------------------------------------------------------------------------------------------------------------------


class OnnxReverseSequence(nn.Module, OnnxToTorchModule):
    """Reverse the first sequence_lens[b] steps of each batch entry; a gather, so gradients flow to the input."""

    def __init__(self, batch_axis: int, time_axis: int) -> None:
        super().__init__()
        self.batch_axis = batch_axis
        self.time_axis = time_axis

    def forward(self, x: torch.Tensor, sequence_lens: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(x.shape[self.time_axis], device=x.device)[None, :]
        lengths = sequence_lens.to(device=x.device, dtype=torch.int64)[:, None]
        index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [batch, time]
        if self.time_axis < self.batch_axis:
            index = index.t()
        index = index.reshape(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
        return torch.gather(x, self.time_axis, index)


def _convert_reverse_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    batch_axis, time_axis = node.attributes.get("batch_axis", 1), node.attributes.get("time_axis", 0)
    if {batch_axis, time_axis} != {0, 1}:
        raise _unsupported(node, "attributes batch_axis, time_axis", (batch_axis, time_axis), "(0, 1) or (1, 0)")
    return OperationConverterResult(torch_module=OnnxReverseSequence(batch_axis, time_axis),
                                    onnx_mapping=OnnxMapping(inputs=node.input_values, outputs=node.output_values))


_register("ReverseSequence", (10,), _convert_reverse_sequence)


# ----------------------------------------------------------------------------------------------------------------------
# Loop
# ----------------------------------------------------------------------------------------------------------------------


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found = [attribute.g for attribute in node.attribute if attribute.HasField("g")]
    return found + [g for attribute in node.attribute for g in attribute.graphs]


def _defined_and_used(graph: onnx.GraphProto) -> tuple[set[str], list[str]]:
    """Names a graph (with its nested subgraphs) defines, and the names it uses, in order of first use."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    used: list[str] = []
    for node in graph.node:
        used += list(node.input)
        for subgraph in _subgraphs(node):
            inner_defined, inner_used = _defined_and_used(subgraph)
            used += [name for name in inner_used if name not in inner_defined]
        defined.update(node.output)
    used += [v.name for v in graph.output]
    return defined, used


def _value_info(name: str, graph: OnnxGraph) -> onnx.ValueInfoProto:
    if name in graph.value_info:
        info = onnx.ValueInfoProto()
        info.CopyFrom(graph.value_info[name])
        return info
    if name in graph.initializers:
        tensor = graph.initializers[name].proto
        return helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
    return onnx.ValueInfoProto(name=name)  # untyped: onnx2torch needs no types, shape inference skips it


def _outer_names(body: onnx.GraphProto) -> list[str]:
    defined, used = _defined_and_used(body)
    return list(dict.fromkeys(name for name in used if name and name not in defined))


class OnnxLoop(nn.Module, OnnxToTorchModule):
    """ONNX Loop: ``for i in range(M) while cond`` over a converted body graph.

    Body inputs: iteration number, condition, loop-carried values, then the enclosing graph's values the body refers
    to (ONNX lets a body read them by name; here they are passed in). Body outputs: condition, carried values, scan
    outputs; each scan output is stacked along a new first axis.
    """

    def __init__(self, node_name: str, body: nn.Module, has_trip_count: bool, has_condition: bool,
                 num_carried: int, num_scan: int, num_outputs: int) -> None:
        super().__init__()
        self.node_name = node_name
        self.body = body
        self.has_trip_count = has_trip_count
        self.has_condition = has_condition
        self.num_carried = num_carried
        self.num_scan = num_scan
        self.num_outputs = num_outputs

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        position = 0
        trip_count = None
        if self.has_trip_count:
            trip_count = int(inputs[0])
            position += 1
        device = inputs[0].device if inputs else torch.device("cpu")
        condition = torch.tensor(True, device=device)
        if self.has_condition:
            condition = inputs[position].reshape(()).to(torch.bool)
            position += 1
        carried = list(inputs[position:position + self.num_carried])
        outer = inputs[position + self.num_carried:]
        scans: list[list[torch.Tensor]] = [[] for _ in range(self.num_scan)]
        iteration = 0
        # bool() waits for the device; the loop's length is data-dependent, so there is no way around it.
        while (trip_count is None or iteration < trip_count) and bool(condition):
            results = self.body(torch.tensor(iteration, dtype=torch.int64, device=device), condition, *carried, *outer)
            if not isinstance(results, (list, tuple)):
                results = [results]
            condition = results[0].reshape(()).to(torch.bool)
            carried = list(results[1:1 + self.num_carried])
            for collected, value in zip(scans, results[1 + self.num_carried:]):
                collected.append(value)
            iteration += 1
        if self.num_scan and iteration == 0:
            raise RuntimeError(f"ONNX Loop node {self.node_name!r} ran zero iterations: the shape of its scan outputs "
                               f"is unknown")
        outputs = carried + [torch.stack(collected) for collected in scans]
        if self.num_outputs == 1:
            return outputs[0]
        return tuple(outputs)


def _convert_loop(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    opsets = _MODEL_OPSETS.get()
    if opsets is None:
        raise NotImplementedError(
            f"ONNX Loop node {node.name!r}: converting its body needs the model's opsets; convert inside "
            f"pytest_parity.bridge.converters.onnx2torch_recurrent.model_opsets(model)")
    body = onnx.GraphProto()
    body.CopyFrom(next(a.g for a in node.proto.attribute if a.name == "body"))
    outer = _outer_names(body)
    passed_in: list[str] = []
    for name in outer:
        initializer = graph.initializers.get(name)
        if initializer is not None and initializer.proto.data_type not in _FLOAT_TYPES:
            # Integer / bool constants (axes, shapes, limits) are copied in: some converters need them constant.
            body.initializer.append(initializer.proto)
        else:
            # Float values stay the enclosing model's tensors, so that a weight is one tensor that gets all gradients.
            passed_in.append(name)
            body.input.append(_value_info(name, graph))
    # onnx2torch returns a graph output by its producing node, which breaks for outputs that are graph inputs (carried
    # weights pass straight through) or several outputs of one node: give each output an Identity of its own.
    original_outputs = [value.name for value in body.output]
    del body.output[:]
    for position, name in enumerate(original_outputs):
        output_name = f"pytest_parity_loop_output_{position}"
        body.node.append(helper.make_node("Identity", [name], [output_name], name=output_name))
        body.output.append(onnx.ValueInfoProto(name=output_name))
    body_model = helper.make_model(body, opset_imports=[helper.make_opsetid(domain, version)
                                                        for domain, version in opsets.items()])
    from onnx2torch import convert  # the package, not the registry: imported here to keep module import order simple

    body_module = convert(body_model)
    num_carried = len(node.input_values) - 2
    module = OnnxLoop(node.name, body_module, has_trip_count=bool(node.input_values[0]),
                      has_condition=bool(node.input_values[1]), num_carried=num_carried,
                      num_scan=len(original_outputs) - 1 - num_carried, num_outputs=len(node.output_values))
    inputs = [name for name in node.input_values[:2] if name] + list(node.input_values[2:]) + passed_in
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}

# Loop 11, 13 and 16 differ only in the value types they allow (sequences, optionals); an opset-17 model looks up 16.
_register("Loop", (11, 13, 16), _convert_loop)
