"""Exact rewrites of ONNX constructs onnx2torch 1.5.15 cannot import, applied to every graph before the import.

(The weight-sharing rewrite, bridge.share_weights_read_twice, and the PyTorch exporter's own, torch_export, live with
the code they serve.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Slice's "to the end" for an axis with nothing to crop at its end.
_TO_THE_END = 2**63 - 1


def graph_constants(graph: Any) -> dict[str, Any]:
    """Name -> TensorProto of every value of ``graph`` fixed before it runs: initializers and Constant nodes' values."""
    constants = {initializer.name: initializer for initializer in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    return constants


def crop_asymmetric_conv_transpose_pads(graph: Any) -> int:
    """ConvTranspose with different begin and end pads -> ConvTranspose with the symmetric part + a Slice cropping the
    rest; returns how many were rewritten.

    onnx2torch raises "ConvTranspose with non symmetrical padding is not implemented" (nn.ConvTranspose2d's padding is
    symmetric), and tf2onnx emits exactly that for every Keras Conv2DTranspose(padding="same", strides=2) with an odd
    kernel, the decoder of most U-Nets. A transposed convolution's pads only remove rows and columns from the full
    output, so cropping them afterwards computes the same values, and the kernel stays one tensor under its name.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    rewritten = 0
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type != "ConvTranspose" or node.domain not in ("", "ai.onnx"):
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        if "pads" not in attributes or "output_shape" in attributes:
            continue
        pads = list(attributes["pads"].ints)
        spatial = len(pads) // 2
        begins, ends = pads[:spatial], pads[spatial:]
        if begins == ends:
            continue
        common = [min(begin, end) for begin, end in zip(begins, ends)]
        del attributes["pads"].ints[:]
        attributes["pads"].ints.extend(common + common)
        cropped_name, prefix = node.output[0], f"{node.name or node.output[0]}_asymmetric_pads"
        node.output[0] = f"{prefix}_uncropped"
        starts = [begin - kept for begin, kept in zip(begins, common)]
        stops = [-(end - kept) if end > kept else _TO_THE_END for end, kept in zip(ends, common)]
        for suffix, values in (("starts", starts), ("ends", stops), ("axes", list(range(2, 2 + spatial)))):
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64), f"{prefix}_{suffix}"))
        nodes.append(helper.make_node("Slice", [node.output[0], f"{prefix}_starts", f"{prefix}_ends", f"{prefix}_axes"],
                                      [cropped_name], name=f"{prefix}_crop"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten


def fill_omitted_clip_bounds(graph: Any) -> int:
    """Clip with an omitted bound ("" in its inputs) -> Clip with that bound given as an unbounded constant (-inf for
    min, +inf for max; an integer type's limits); returns how many were rewritten.

    torch.onnx.export writes torch.clamp(x, max=m) as Clip(x, "", m), with the empty name ONNX uses for an omitted
    optional input, and onnx2torch 1.5.15 looks "" up as a constant, fails, and reports "Dynamic value of min/max is
    not implemented" (every Swin V2 block clamps its logit scale this way). Clamping at -inf/+inf is no clamping, so
    values and gradients stay those of the one-sided clamp. The filled bound takes the dtype of the given one (Clip's
    bounds share the input's type); a Clip whose given bound is computed at run time is left for onnx2torch to refuse.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    dtypes = {name: tensor.data_type for name, tensor in graph_constants(graph).items()}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "Clip" or node.domain not in ("", "ai.onnx") or "" not in list(node.input)[1:]:
            continue
        given = [name for name in list(node.input)[1:] if name]
        if not given:  # Clip(x, "", "") clamps nothing
            del node.input[1:]
            rewritten += 1
            continue
        if given[0] not in dtypes:
            continue
        numpy_dtype = helper.tensor_dtype_to_np_dtype(dtypes[given[0]])
        limits = np.iinfo(numpy_dtype) if np.issubdtype(numpy_dtype, np.integer) else None
        lowest, highest = (limits.min, limits.max) if limits is not None else (-np.inf, np.inf)
        for position, unbounded in ((1, lowest), (2, highest)):
            if position < len(node.input) and node.input[position] == "":
                name = f"{node.name or node.output[0]}_{'min' if position == 1 else 'max'}_omitted"
                graph.initializer.append(numpy_helper.from_array(np.asarray(unbounded, numpy_dtype), name))
                node.input[position] = name
        rewritten += 1
    return rewritten


# The op a Conv becomes when onnx2torch's Conv converter cannot keep its weight one tensor (see onnx2torch_conv, which
# registers the converter for it; named here so that this module needs no torch).
# No dots: onnx2torch names the module "<domain>/<node>", and torch refuses dots in module names.
CONV_OF_INPUT_WEIGHT_DOMAIN = "pytest_parity"
CONV_OF_INPUT_WEIGHT = "ConvOfInputWeight"
CONV_TRANSPOSE_OF_INPUT_WEIGHT = "ConvTransposeOfInputWeight"
CONV_OF_INPUT_WEIGHT_VERSION = 1


def route_convs_reading_shared_or_computed_weights(model_proto: Any) -> Any:
    """The model for onnx2torch, with every Conv (ConvTranspose) whose weight or bias is computed at run time (no
    initializer), or is an initializer that other nodes read too, turned into a CONV_OF_INPUT_WEIGHT
    (CONV_TRANSPOSE_OF_INPUT_WEIGHT) node. The given model is left as it is (onnxruntime, the referee, runs it and knows
    no such op); a copy is returned when a node changed."""
    graph = model_proto.graph
    not_its_own = _shared_or_computed(graph)
    new_types = {index: routed for op_type, routed in (("Conv", CONV_OF_INPUT_WEIGHT),
                                                       ("ConvTranspose", CONV_TRANSPOSE_OF_INPUT_WEIGHT))
                 for index, node in _standard_nodes(graph, op_type) if not_its_own(node.input[1:3])}
    return _copy_with_nodes_rerouted(model_proto, new_types)


def _shared_or_computed(graph: Any) -> Callable[[Any], bool]:
    """A test of a node's weight inputs: does any of them have no initializer (computed at run time), or an
    initializer that other nodes read too? Either way onnx2torch's converter could not keep it one tensor."""
    initializers = {initializer.name for initializer in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    return lambda names: any(name and (name not in initializers or readers[name] > 1) for name in names)


def _standard_nodes(graph: Any, op_type: str) -> list[tuple[int, Any]]:
    """(index, node) of the graph's ``op_type`` nodes in the standard ONNX domain (not ones rerouted already)."""
    return [(index, node) for index, node in enumerate(graph.node)
            if node.op_type == op_type and node.domain in ("", "ai.onnx")]


def _copy_with_nodes_rerouted(model_proto: Any, new_types: dict[int, str],
                              keep_attributes: tuple[str, ...] | None = None) -> Any:
    """The model itself when no node moves; else one copy whose node at each index of ``new_types`` has that op type
    in the project's domain (CONV_OF_INPUT_WEIGHT_DOMAIN), keeping only ``keep_attributes`` when given."""
    if not new_types:
        return model_proto
    copy = type(model_proto)()
    copy.CopyFrom(model_proto)
    for index, op_type in new_types.items():
        node = copy.graph.node[index]
        node.op_type, node.domain = op_type, CONV_OF_INPUT_WEIGHT_DOMAIN
        if keep_attributes is not None:
            for attribute in [a for a in node.attribute if a.name not in keep_attributes]:
                node.attribute.remove(attribute)
    if all(entry.domain != CONV_OF_INPUT_WEIGHT_DOMAIN for entry in copy.opset_import):
        entry = copy.opset_import.add()
        entry.domain, entry.version = CONV_OF_INPUT_WEIGHT_DOMAIN, CONV_OF_INPUT_WEIGHT_VERSION
    return copy


# The ops a normalisation becomes when onnx2torch's converter cannot keep its weights one tensor each, registered by
# onnx2torch_normalization:
# - an inference BatchNormalization whose statistics or affine parameters are computed at run time (weight
#   standardisation, timm's NFNets: F.batch_norm(weight, None, None, training=True) exports as ReduceMean / variance
#   nodes feeding a BatchNormalization): onnx2torch's converter hands them to F.batch_norm as running statistics,
#   which autograd refuses ("not differentiable with respect to argument 'running_mean'");
# - a BatchNormalization or InstanceNormalization whose weights other nodes read too (one nn.BatchNorm1d or
#   nn.InstanceNorm2d applied twice): onnx2torch copies them into a module per node, and the gradient is split
#   between the copies. As ops that take their weights as inputs, they read them through share_weights_read_twice's
#   one Identity, like any other shared weight.
BATCH_NORM_OF_INPUTS = "BatchNormOfInputs"
INSTANCE_NORM_OF_INPUTS = "InstanceNormOfInputs"


def route_normalizations_of_computed_or_shared_weights(model_proto: Any) -> Any:
    """The model for onnx2torch, with every inference BatchNormalization that reads a computed or shared scale, bias,
    mean or variance turned into a BATCH_NORM_OF_INPUTS node, and every InstanceNormalization that reads a computed or
    shared scale or bias into an INSTANCE_NORM_OF_INPUTS node (same inputs and epsilon). As for the Conv routing, the
    given model is left as it is and a copy is returned when a node changed."""
    graph = model_proto.graph
    not_its_own = _shared_or_computed(graph)

    def training(node: Any) -> bool:
        return any(attribute.name == "training_mode" and attribute.i for attribute in node.attribute)

    rerouted = {index: BATCH_NORM_OF_INPUTS for index, node in _standard_nodes(graph, "BatchNormalization")
                if not training(node) and not_its_own(node.input[1:5])}
    rerouted.update({index: INSTANCE_NORM_OF_INPUTS for index, node in _standard_nodes(graph, "InstanceNormalization")
                     if not_its_own(node.input[1:3])})
    # momentum only matters in training mode
    return _copy_with_nodes_rerouted(model_proto, rerouted, keep_attributes=("epsilon",))


# The op a GatherND with batch_dims != 0 becomes: onnx2torch 1.5.15 implements GatherND for batch_dims 0 only and
# raises NotImplementedError when the converted model runs (ENOT-AutoDL/onnx2torch#107); tf2onnx emits it for
# tf.gather_nd(..., batch_dims=1), as in keras-hub's DeBERTa-v3 relative attention. onnx2torch_gather_nd registers it.
GATHER_ND_BATCHED = "GatherNDBatched"


def route_gather_nd_with_batch_dims(model_proto: Any) -> Any:
    """The model for onnx2torch, with every GatherND whose batch_dims is not 0 turned into a GATHER_ND_BATCHED node;
    as for the Conv routing, a copy is returned when a node changed."""
    rerouted = {index: GATHER_ND_BATCHED for index, node in _standard_nodes(model_proto.graph, "GatherND")
                if any(attribute.name == "batch_dims" and attribute.i for attribute in node.attribute)}
    return _copy_with_nodes_rerouted(model_proto, rerouted, keep_attributes=("batch_dims",))


# The op a Clip of integers becomes: onnx2torch 1.5.15 keeps a Clip's constant bounds as Python floats, and
# torch.clamp(int64 tensor, min=float, max=float) returns float32, so an integer index clamped on its way to a Gather
# arrives as float and the Gather refuses it (transformers' DeBERTa-v2 relative positions). onnx2torch_clip registers
# a converter that clamps with bounds of the input's own type.
CLIP_OF_INTEGERS = "ClipOfIntegers"


def route_integer_clips(model_proto: Any) -> Any:
    """The model for onnx2torch, with every Clip whose given bounds are integer constants (Clip's bounds share its
    input's type) turned into a CLIP_OF_INTEGERS node; as for the Conv routing, a copy is returned when a node
    changed. Run it after fill_omitted_clip_bounds, which gives an omitted bound the given one's type."""
    import numpy as np
    from onnx import helper

    dtypes = {name: tensor.data_type for name, tensor in graph_constants(model_proto.graph).items()}

    def integer(bound: str) -> bool:  # a bound's type read as fill_omitted_clip_bounds reads it
        return bound in dtypes and np.issubdtype(helper.tensor_dtype_to_np_dtype(dtypes[bound]), np.integer)

    rerouted = {index: CLIP_OF_INTEGERS for index, node in _standard_nodes(model_proto.graph, "Clip")
                if any(integer(name) for name in list(node.input)[1:] if name)}
    return _copy_with_nodes_rerouted(model_proto, rerouted, keep_attributes=())


def all_graphs(graph: Any) -> list[Any]:
    """The graph and every subgraph of its nodes (Loop and If bodies), depth first."""
    graphs = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                graphs.extend(all_graphs(attribute.g))
            for subgraph in attribute.graphs:
                graphs.extend(all_graphs(subgraph))
    return graphs


def all_nodes(graph: Any) -> list[Any]:
    return [node for each in all_graphs(graph) for node in each.node]
