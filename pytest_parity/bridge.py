"""Carry a model across frameworks through ONNX, and explain converter failures in terms a user can act on.

ONNX is the interlingua: each framework needs only its own <-> ONNX step. onnxruntime can run the ONNX graph itself as
a neutral referee, which tells which step diverged when a check fails.

Opset 17 end to end: tf2onnx's newest is 18, and onnx2torch lacks many opset >= 18 versions.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.errors import ConversionError, FrameworkNotInstalled, ParityUsageError
from pytest_parity.frameworks import FRAMEWORK_LABELS, ModelAdapter, ModelInputs

OPSET = 17


@dataclass
class Conversion:
    target: ModelAdapter
    onnx_model: Any
    route: str


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


def convert(source: ModelAdapter, inputs: ModelInputs, target_framework: str) -> Conversion:
    if source.framework == "tensorflow" and target_framework == "torch":
        model_proto = export_tensorflow(source, inputs)
        return Conversion(target=import_into_torch(model_proto), onnx_model=model_proto,
                          route="tensorflow -> onnx -> torch")
    raise ParityUsageError(
        f"convert mode from {FRAMEWORK_LABELS[source.framework]} to {FRAMEWORK_LABELS.get(target_framework)} is not "
        f"supported by this version of pytest-parity; it converts TensorFlow/Keras models to PyTorch "
        f"(tensorflow -> onnx -> torch)"
    )


def export_tensorflow(source: Any, inputs: ModelInputs) -> Any:
    step = f"TensorFlow -> ONNX (tf2onnx {_version('tf2onnx')}, opset {OPSET})"
    try:
        model_proto = source.to_onnx(inputs, OPSET)
    except FrameworkNotInstalled:
        raise
    except Exception as error:
        raise ConversionError(
            f"{step} failed for {source.description}: {type(error).__name__}: {_first_line(error)}\n"
            f"What you can do: check that the model runs under tf.function with inputs of the given shapes "
            f"({inputs.describe()}); ops tf2onnx cannot convert can be handled with tf2onnx's custom_op_handlers.",
            step=step, opset=OPSET) from None
    check_onnx_model(model_proto, step)
    return model_proto


def check_onnx_model(model_proto: Any, step: str) -> None:
    """tf2onnx leaves ops it cannot convert in the graph (continue_on_error); find them before onnx2torch does."""
    import onnx

    for node in _all_nodes(model_proto.graph):
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            raise ConversionError(
                f"{step}: the TensorFlow op {node.op_type!r} (node {node.name!r}) has no ONNX conversion, so it was "
                f"left unconverted in the graph.\n"
                f"What you can do: express it with ops tf2onnx supports, or register a handler for it "
                f"(tf2onnx.handler.tf_op / custom_op_handlers); see tf2onnx's support_status.md for opset {OPSET}.",
                step=step, op=node.op_type, opset=OPSET)
    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as error:
        raise ConversionError(f"{step} produced an invalid ONNX model: {_first_line(error)}", step=step,
                              opset=OPSET) from None


def _all_nodes(graph: Any) -> list[Any]:
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                nodes.extend(_all_nodes(attribute.g))
            for subgraph in attribute.graphs:
                nodes.extend(_all_nodes(subgraph))
    return nodes


_MISSING_CONVERTER = re.compile(r"operation_type='(?P<op>[^']+)', version=(?P<version>\d+)")


def import_into_torch(model_proto: Any) -> ModelAdapter:
    from pytest_parity.frameworks import torch as torch_adapter

    step = f"ONNX -> PyTorch (onnx2torch {_version('onnx2torch')})"
    try:
        return torch_adapter.from_onnx(model_proto)
    except FrameworkNotInstalled:
        raise
    except NotImplementedError as error:
        found = _MISSING_CONVERTER.search(str(error))
        if not found:
            raise ConversionError(f"{step} failed: {_first_line(error)}", step=step, opset=OPSET) from None
        op, version = found["op"], int(found["version"])
        nodes = [n.name for n in _all_nodes(model_proto.graph) if n.op_type == op][:3]
        raise ConversionError(
            f"{step}: onnx2torch has no converter for the ONNX op {op!r} (version {version}, model opset {OPSET}), "
            f"used by node(s) {', '.join(repr(n) for n in nodes)}.\n"
            f"What you can do: register one with onnx2torch.node_converters.registry.add_converter("
            f"operation_type={op!r}, version={version}) before the check, or avoid the layer that produces it.",
            step=step, op=op, opset=OPSET) from None
    except Exception as error:
        raise ConversionError(f"{step} failed: {type(error).__name__}: {_first_line(error)}", step=step,
                              opset=OPSET) from None


def run_onnxruntime(model_proto: Any, inputs: ModelInputs) -> list[np.ndarray]:
    """Outputs of the ONNX graph itself, in graph output order, on the CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {graph_input.name: array for graph_input, array in zip(session.get_inputs(), inputs.arrays)}
    return [np.asarray(output) for output in session.run(None, feed)]
