"""Opset 18 -> 17 for the exported PyTorch graph, including the ops onnx.version_converter has no adapter for.

torch.onnx.export builds opset 18 graphs and onnx2torch reads up to 17, so the graph is brought down with
onnx.version_converter. Two ops changed at 18 in a way the converter cannot undo ("No Adapter From Version $18 for
Split", "No Adapter To Version $17 for Pad", onnx 1.23): Split gained ``num_outputs``, Pad gained an ``axes`` input.
torchvision's ShuffleNetV2, Swin and MaxViT use them (torch.chunk, F.pad). Those nodes are rewritten here into their
opset 13-17 form, held in a private domain while the converter runs (it adapts only default-domain nodes), and put
back after.
"""

from __future__ import annotations

from typing import Any

from pytest_parity.bridge import onnx_rewrites

HELD_DOMAIN = "pytest_parity.held"
# Ops whose opset 18 form has no down-adapter in onnx.version_converter, and whose 13-17 form is written here.
HELD_OPS = ("Split", "Pad")


class OpsetConversionError(RuntimeError):
    """The exported graph cannot be brought down to the requested opset."""


def convert_version(model_proto: Any, opset: int) -> Any:
    import onnx

    constants_as_tensors(model_proto)
    held = _hold(model_proto) if opset >= 13 else 0
    try:
        converted = onnx.version_converter.convert_version(model_proto, opset)
    except Exception as error:
        raise OpsetConversionError(f"onnx.version_converter could not convert the exported graph from opset "
                                   f"{_default_opset(model_proto)} to {opset}: {error}") from error
    if held:
        _release(converted)
    return converted


# Constant's short forms (opset 12+) and the numpy dtype of the tensor each stands for.
_SHORT_CONSTANTS = {"value_int": "int64", "value_ints": "int64", "value_float": "float32", "value_floats": "float32"}


def constants_as_tensors(model_proto: Any) -> int:
    """Write every Constant of the graphs given in a short form (value_ints=..., value_float=...) with a ``value``
    tensor instead; returns how many. Same values, same op: torch.onnx gives ReduceMean-18 its axes as
    Constant(value_ints), and onnx.version_converter's Reduce adapter (18 -> 17) reads only ``value``, failing with
    "required undefined attribute 'value'" (timm's nf_regnet_b0)."""
    import numpy as np
    from onnx import helper, numpy_helper

    rewritten = 0
    for graph in onnx_rewrites.all_graphs(model_proto.graph):
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            short = next((attribute for attribute in node.attribute if attribute.name in _SHORT_CONSTANTS), None)
            if short is None:
                continue
            value = np.asarray(helper.get_attribute_value(short), dtype=_SHORT_CONSTANTS[short.name])
            node.attribute.remove(short)
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
            rewritten += 1
    return rewritten


def _default_opset(model_proto: Any) -> int | None:
    return next((entry.version for entry in model_proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def _hold(model_proto: Any) -> int:
    """Rewrite Split/Pad nodes of the main graph to their opset 13-17 form and move them to HELD_DOMAIN."""
    import onnx

    nodes = [node for node in model_proto.graph.node if node.domain in ("", "ai.onnx") and node.op_type in HELD_OPS]
    if not nodes:
        return 0
    shapes = _static_shapes(model_proto)
    constants = {name: onnx.numpy_helper.to_array(tensor)
                 for name, tensor in onnx_rewrites.graph_constants(model_proto.graph).items()}
    for node in nodes:
        if node.op_type == "Split":
            _split_to_13(model_proto, node, shapes)
        else:
            _pad_to_13(model_proto, node, shapes, constants)
        node.domain = HELD_DOMAIN
    model_proto.opset_import.append(onnx.helper.make_opsetid(HELD_DOMAIN, 1))
    return len(nodes)


def _release(model_proto: Any) -> None:
    for node in model_proto.graph.node:
        if node.domain == HELD_DOMAIN:
            node.domain = ""
    kept = [entry for entry in model_proto.opset_import if entry.domain != HELD_DOMAIN]
    del model_proto.opset_import[:]
    model_proto.opset_import.extend(kept)


def _static_shapes(model_proto: Any) -> dict[str, list[int | None]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto)
    shapes: dict[str, list[int | None]] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = [dim.dim_value if dim.HasField("dim_value") else None
                                  for dim in tensor_type.shape.dim]
    return shapes


def _split_to_13(model_proto: Any, node: Any, shapes: dict[str, list[int | None]]) -> None:
    """Split-18 with num_outputs=n -> Split-13 with explicit sizes (opset 18: chunks of ceil(dim / n), the last
    smaller), or with none when the dim divides evenly (Split-13's default)."""
    import numpy as np
    import onnx

    attributes = {attribute.name: attribute for attribute in node.attribute}
    if "num_outputs" not in attributes:
        return  # sizes given as the second input: the same in 13-17
    count = attributes["num_outputs"].i
    axis = attributes["axis"].i if "axis" in attributes else 0
    node.attribute.remove(attributes["num_outputs"])
    shape = shapes.get(node.input[0])
    dim = None if shape is None else shape[axis]
    if dim is None:
        return  # unknown size: even chunks, which is what a torch.chunk of a divisible dim gives
    chunk = -(-dim // count)
    sizes = [chunk] * (count - 1) + [dim - chunk * (count - 1)]
    if len(set(sizes)) == 1:
        return
    name = f"{node.name or node.output[0]}_split_sizes"
    model_proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(sizes, np.int64), name))
    del node.input[1:]
    node.input.append(name)


def _pad_to_13(model_proto: Any, node: Any, shapes: dict[str, list[int | None]], constants: dict[str, Any]) -> None:
    """Pad-18 with an axes input -> Pad-13 with pads for every axis (zeros where axes does not reach)."""
    import numpy as np
    import onnx

    if len(node.input) < 4 or not node.input[3]:
        del node.input[3:]
        return  # no axes: the same in 13-17
    rank = len(shapes.get(node.input[0], []) or [])
    axes, pads = constants.get(node.input[3]), constants.get(node.input[1])
    if not rank or axes is None or pads is None:
        raise OpsetConversionError(
            f"the Pad node {node.name!r} has an axes input, which opset 17 does not have, and its pads, axes or rank "
            f"are not known before running the graph, so it cannot be rewritten for opset 17")
    full = np.zeros(2 * rank, np.int64)
    for position, axis in enumerate(int(a) % rank for a in np.asarray(axes).reshape(-1)):
        full[axis] = pads[position]
        full[rank + axis] = pads[len(axes) + position]
    name = f"{node.name or node.output[0]}_full_pads"
    model_proto.graph.initializer.append(onnx.numpy_helper.from_array(full, name))
    node.input[1] = name
    del node.input[3:]
