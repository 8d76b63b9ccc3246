"""PyTorch -> ONNX: torch.onnx.export(dynamo=True, optimize=False), then the post-processing onnx2torch needs.

The comment above EXPORTER_CHOICE says why this exporter and these settings; everything torch/onnx is imported inside
functions.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from pytest_parity.bridge import onnx_rewrites, opset_down
from pytest_parity.errors import FrameworkNotInstalled


def export(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], input_names: list[str], opset: int) -> Any:
    """An eval-mode module on CPU and its example arguments -> an ONNX ModelProto at ``opset`` onnx2torch can read."""
    import torch

    try:
        import onnx  # noqa: F401 - the post-processing below works on ONNX protobufs
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) translates through it
    except ImportError as error:
        raise FrameworkNotInstalled("torch", error.name or "onnxscript", error) from error
    with warnings.catch_warnings():
        # The exporter warns about its own workings (e.g. nn.LSTM's "_flat_weights ... were assigned during
        # export"), nothing a user can act on; suites that turn warnings into errors would fail on them.
        warnings.simplefilter("ignore")
        export_with_registry = _export_with_prebuilt_registry()
        if export_with_registry is not None:
            program = export_with_registry(module, args, kwargs, input_names)
        else:
            program = torch.onnx.export(module, args, kwargs=kwargs or None, dynamo=True,
                                        opset_version=EXPORT_OPSET, optimize=False, verbose=False,
                                        input_names=input_names)
    _fold_constants_except_weights(program.model)
    model_proto = program.model_proto
    if opset < EXPORT_OPSET:
        model_proto = opset_down.convert_version(model_proto, opset)
    _rewrite_for_onnx2torch(model_proto)
    return model_proto


# Why torch.onnx.export(dynamo=True, optimize=False) plus the post-processing below; measured with torch 2.14.1,
# onnxscript 0.7.2, onnx 1.23.2 and onnx2torch 1.5.15 on an MLP, a CNN with BatchNorm, Embedding, LayerNorm + GELU,
# LSTM and MultiheadAttention models (benchmarks/torch_conversion.py times the route):
# - The legacy TorchScript exporter (dynamo=False) warns DeprecationWarning ("will be removed") on every call. It
#   traces, so Python control flow on tensor values is silently frozen into one branch; its TracerWarning cannot be
#   used to refuse that, because nn.LSTM and nn.MultiheadAttention raise it too. In eval mode it folds BatchNorm into
#   the preceding Conv (the BN weights and the conv's own weights disappear) unless do_constant_folding=False, itself
#   deprecated. It is faster: 2-110 ms per export here, against 0.55-0.65 s for torch.onnx.export(dynamo=True) and
#   0.17-0.27 s with the registry prebuilt (_export_with_prebuilt_registry); a process's first dynamo export: ~2.5 s.
# - The dynamo exporter captures with torch.export, which refuses data-dependent control flow with an error naming the
#   line, and keeps every parameter and buffer as an initializer named after it. Its defaults need three corrections:
#   optimize=True runs onnxscript's rewriter, which folds BatchNorm into Conv (keeping the conv weight's name on the
#   fused values) and pre-transposes weights into anonymous constants: so optimize=False, and only constant
#   subexpressions that read no weight are folded here. Asked for opset 17, it builds opset 18 (torchlib's) and
#   down-converts *before* folding, which fails for a Reduce op whose axes are not constant yet and then silently
#   keeps opset 18 (onnx2torch has no ReduceMean-18): so export at 18, fold, then down-convert. Finally a few
#   constructs onnx2torch rejects are rewritten into equivalents (see _rewrite_for_onnx2torch). With these, all of the
#   models above convert and match every weight (nn.LSTM through pytest_parity.bridge.converters.onnx2torch_recurrent).
EXPORTER_CHOICE = "torch.onnx.export(dynamo=True, optimize=False)"
# The opset torchlib (the dynamo exporter's op library) implements; lower opsets are reached by down-conversion.
EXPORT_OPSET = 18


@functools.cache
def _export_with_prebuilt_registry() -> Callable[..., Any] | None:
    """torch.onnx.export(dynamo=True) rebuilds its registry of ONNX translations from torchlib on every call: ~0.35 s of
    its ~0.6 s for a small model here. The function it delegates to takes a prebuilt registry, so one is built per
    process. That function is torch-internal: it is used only while its signature is the one this was written against
    (torch 2.14), otherwise the public torch.onnx.export is."""
    try:
        from torch.onnx._internal.exporter import _core, _registration

        expected = {"registry", "input_names", "optimize", "opset_version", "verbose"}
        if not expected <= set(inspect.signature(_core.export).parameters):
            return None
        registry = _registration.ONNXRegistry.from_torchlib(opset_version=EXPORT_OPSET)
    except Exception:
        return None

    def export(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], input_names: list[str]) -> Any:
        return _core.export(module, args, kwargs or None, registry=registry, input_names=input_names, optimize=False,
                            opset_version=EXPORT_OPSET, verbose=False)

    return export


@functools.cache
def warm_up() -> None:
    """The first torch.export of a process costs ~1.8 s more than later ones (dynamo's first trace, the torchlib
    registry): paid once here, on a Linear(1, 1), so that no check's conversion time carries it. A warm-up that
    fails changes nothing: the real export reports its own errors."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.nn.Linear(1, 1).eval()
            export_with_registry = _export_with_prebuilt_registry()
            arguments = (torch.zeros(1, 1),)
            if export_with_registry is not None:
                export_with_registry(module, arguments, {}, ["x"])
            else:
                torch.onnx.export(module, arguments, dynamo=True, opset_version=EXPORT_OPSET, optimize=False,
                                  verbose=False)
    except Exception:
        pass


def _fold_constants_except_weights(model_ir: Any) -> None:
    """Fold shape arithmetic and other constant subexpressions, but no node that reads a weight.

    Folding a node that reads a weight would replace the weight by an anonymous derived tensor (a transposed kernel,
    LSTM gates reordered from torch's i,f,g,o to ONNX's i,o,f,c) that weight matching cannot trace back; left in the
    graph, the converted model computes it from the weight itself, so the weight is matched and gets its gradient.
    """
    from onnxscript import optimizer

    weights = set(model_ir.graph.initializers)

    def should_fold(node: Any) -> bool | None:
        if any(value is not None and value.name in weights for value in node.inputs):
            return False
        return None  # onnxscript's own rules (size limits, no random ops)

    optimizer.fold_constants(model_ir, should_fold=should_fold)
    optimizer.remove_unused_nodes(model_ir)


def _rewrite_for_onnx2torch(model_proto: Any) -> None:
    """Rewrite, into exact equivalents, what the exporter emits and onnx2torch 1.5.15 cannot convert.

    - Reshape allowzero=1 (NotImplementedError in onnx2torch) with a constant shape that holds no 0: allowzero only
      changes what a 0 in the shape means, so allowzero=0 is the same op.
    - CastLike (no onnx2torch converter) whose second input has a known element type: Cast to that type.
    - The 18 -> 17 version converter moves a Reduce op's axes into an attribute but leaves noop_with_empty_axes, which
      only ReduceSum has before opset 18 (the model is invalid otherwise); with axes given it has no effect.
    """
    from onnx import helper, numpy_helper


    graphs = onnx_rewrites.all_graphs(model_proto.graph)
    constants: dict[str, Any] = {}
    element_types: dict[str, int] = {}
    for graph in graphs:
        constants.update((tensor.name, tensor) for tensor in graph.initializer)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                constants.update((node.output[0], a.t) for a in node.attribute if a.name == "value")
        for value in [*graph.input, *graph.value_info, *graph.output]:
            if value.type.tensor_type.elem_type:
                element_types[value.name] = value.type.tensor_type.elem_type
    element_types.update((name, tensor.data_type) for name, tensor in constants.items())
    default_opset = next((o.version for o in model_proto.opset_import if o.domain in ("", "ai.onnx")), 0)

    for graph in graphs:
        for node in graph.node:
            if node.domain not in ("", "ai.onnx"):
                continue
            if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in constants:
                if 0 not in numpy_helper.to_array(constants[node.input[1]]):
                    for attribute in node.attribute:
                        if attribute.name == "allowzero":
                            attribute.i = 0
            elif node.op_type == "CastLike" and element_types.get(node.input[1]):
                target_type = element_types[node.input[1]]
                node.op_type = "Cast"
                del node.input[1:]
                del node.attribute[:]  # CastLike's only attribute, saturate, is for float8 targets (opset 19)
                node.attribute.append(helper.make_attribute("to", target_type))
            elif node.op_type.startswith("Reduce") and node.op_type != "ReduceSum" and default_opset < 18:
                has_axes = any(a.name == "axes" and len(a.ints) for a in node.attribute)
                kept = [a for a in node.attribute if a.name != "noop_with_empty_axes" or not (has_axes or a.i == 0)]
                if len(kept) != len(node.attribute):
                    del node.attribute[:]
                    node.attribute.extend(kept)
    _outputs_from_nodes(model_proto.graph)


def _outputs_from_nodes(graph: Any) -> None:
    """A model that returns one of its inputs (or a weight) as is exports a graph output that no node produces, which
    onnx2torch cannot look up (KeyError): produce it with an Identity node under a name of its own."""
    from onnx import helper

    not_produced = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer}
    for index, output in enumerate(graph.output):
        if output.name in not_produced:
            renamed = f"{output.name}__output_{index}"
            graph.node.append(helper.make_node("Identity", [output.name], [renamed], name=f"{renamed}_identity"))
            output.name = renamed
