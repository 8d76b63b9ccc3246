"""Carry a model across frameworks through ONNX, and explain converter failures in terms a user can act on.

ONNX is the interlingua: each framework needs only its own <-> ONNX step. onnxruntime can run the ONNX graph itself as
a neutral referee, which tells which step diverged when a check fails.

Opset 17 end to end: tf2onnx's newest is 18, and onnx2torch lacks many opset >= 18 versions.

Routes: TensorFlow/Keras -> tf2onnx -> onnx2torch -> PyTorch, and PyTorch -> torch.onnx.export (the dynamo exporter,
optimize=False, down-converted from its native opset 18; torch_export.EXPORTER_CHOICE says why) -> onnx2torch
-> PyTorch, a round trip that proves the exported graph computes what the module does. There is no ONNX -> TensorFlow
import: a check against TensorFlow needs a hand-written Keras twin (port mode).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_parity.bridge import cache as conversion_cache
from pytest_parity.bridge import onnx_rewrites
from pytest_parity.bridge.cache import ConversionCache
from pytest_parity.bridge.torch_export import EXPORTER_CHOICE
from pytest_parity.errors import ANSI_ESCAPE, ConversionError, FrameworkNotInstalled, ParityUsageError
from pytest_parity.frameworks import FRAMEWORK_LABELS, ModelAdapter, ModelInputs, devices

OPSET = 17


@dataclass
class Conversion:
    target: ModelAdapter
    onnx_model: Any
    route: str
    # What the conversion cache did: "hit", "miss", "rebuilt", "uncacheable"; None when the cache is off.
    cache_outcome: str | None = None


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


# What each side of a conversion imports: loaded (and torch.export warmed up) before a conversion is timed, so that a
# check's conversion_s is the conversion's own time, not the one-time cost of the converters (a Linear(8, 4)'s first
# conversion took 4.6 s, a second one 0.4 s; now the first takes 0.3 s, and the session reports the imports and
# warm-up once, 2.7-4.9 s here).
# (Not onnxruntime: only a failing check's referee needs it.)
_CONVERTER_MODULES = {"tensorflow": ("onnx", "tf2onnx"), "torch": ("onnx", "onnxscript")}


def preload_converters(source_framework: str, target_framework: str) -> float:
    """Import the converters a conversion between these frameworks needs, and warm up torch.export; the seconds it
    took (about 0 when done before). A converter that is not installed is left for the conversion step to report."""
    started = time.perf_counter()
    modules = list(_CONVERTER_MODULES.get(source_framework, ()))
    if target_framework == "torch":
        from pytest_parity.frameworks.torch import import_torch

        try:
            import_torch()  # first, through the import guard: onnx2torch pulls in torchvision (and triton)
        except FrameworkNotInstalled:
            return time.perf_counter() - started
        modules.append("onnx2torch")
    for name in modules:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            return time.perf_counter() - started
    if source_framework == "torch":
        from pytest_parity.bridge import torch_export

        torch_export.warm_up()
    return time.perf_counter() - started


def convert(source: ModelAdapter, inputs: ModelInputs, target_framework: str,
            cache: ConversionCache | None = None, weights_as_inputs: bool = False) -> Conversion:
    """``weights_as_inputs``: export a Keras model with its weights as graph inputs (TensorFlowModel.to_onnx), so no
    weight is folded into another before it reaches the graph."""
    if target_framework == "torch":
        model_proto, cache_outcome = _export_through_cache(source, inputs, cache, weights_as_inputs)
        return Conversion(target=import_into_torch(model_proto), onnx_model=model_proto,
                          route=f"{source.framework} -> onnx -> torch", cache_outcome=cache_outcome)
    if target_framework == "tensorflow":
        raise ParityUsageError(_no_tensorflow_import(source.framework))
    raise ParityUsageError(
        f"convert mode from {FRAMEWORK_LABELS[source.framework]} to {FRAMEWORK_LABELS.get(target_framework)} is not "
        f"supported by this version of pytest-parity; it converts TensorFlow/Keras and PyTorch models to PyTorch "
        f"(tensorflow -> onnx -> torch, torch -> onnx -> torch)"
    )


def _export_through_cache(source: Any, inputs: ModelInputs, cache: ConversionCache | None,
                          weights_as_inputs: bool = False) -> tuple[Any, str | None]:
    """The exported ONNX graph, from the cache when it holds this model's export (see conversion_cache)."""

    def export(source: Any, inputs: ModelInputs) -> Any:
        if source.framework == "tensorflow":
            return export_tensorflow(source, inputs, weights_as_inputs)
        return export_torch(source, inputs)

    if cache is None:
        return export(source, inputs), None
    model = source.model if source.framework == "tensorflow" else source.module
    key = conversion_cache.conversion_key(source.framework, model, source.weights(), inputs, OPSET,
                                          "weights as inputs" if weights_as_inputs else "")
    if key is None:
        return export(source, inputs), conversion_cache.UNCACHEABLE
    payload, outcome = cache.load(key)
    if payload is not None:
        import onnx

        # Protobuf parsing, not unpickling; the entry's sha256 was checked, and it was validated when stored.
        try:
            model_proto = onnx.load_model_from_string(payload)
            if len(model_proto.graph.node) > 0:
                return model_proto, outcome
        except Exception:
            pass
        cache.discard(key)
        outcome = conversion_cache.REBUILT
    model_proto = export(source, inputs)
    cache.store(key, model_proto.SerializeToString())
    return model_proto, outcome


def _no_tensorflow_import(source_framework: str) -> str:
    unavailable = ("convert mode cannot target TensorFlow: this version of pytest-parity has no ONNX -> TensorFlow "
                   "import, so it cannot build a TensorFlow model from the exported ONNX graph.")
    if source_framework == "torch":
        return (f"{unavailable}\nTo check a PyTorch model against TensorFlow, write its Keras twin and use port mode: "
                f"parity.check(torch_model, keras_model, inputs=...), which carries the PyTorch weights into the Keras "
                f"model through ONNX and compares outputs and gradients. Without target='tensorflow', "
                f"parity.check(torch_model, inputs=...) checks the model against its own torch -> onnx -> torch "
                f"round trip.")
    return (f"{unavailable}\nA TensorFlow/Keras model is checked against its PyTorch conversion: leave target unset "
            f"(or target='torch') for tensorflow -> onnx -> torch, or use port mode, parity.check(keras_model, "
            f"torch_model, inputs=...), against a hand-written PyTorch twin.")


def export_tensorflow(source: Any, inputs: ModelInputs, weights_as_inputs: bool = False) -> Any:
    step = f"TensorFlow -> ONNX (tf2onnx {_version('tf2onnx')}, opset {OPSET})"
    try:
        model_proto = source.to_onnx(inputs, OPSET, weights_as_inputs)
    except (FrameworkNotInstalled, ConversionError):
        raise
    except Exception as error:
        raise ConversionError(
            f"{step} failed for {source.description}: {type(error).__name__}: {_first_line(error)}\n"
            f"What you can do: check that the model runs under tf.function with inputs of the given shapes "
            f"({inputs.describe()}); ops tf2onnx cannot convert can be handled with tf2onnx's custom_op_handlers.",
            step=step, opset=OPSET) from None
    check_onnx_model(model_proto, step)
    return model_proto


def export_torch(source: Any, inputs: ModelInputs) -> Any:
    step = f"PyTorch -> ONNX ({EXPORTER_CHOICE}, torch {_version('torch')}, opset {OPSET})"
    try:
        model_proto = source.to_onnx(inputs, OPSET)
    except FrameworkNotInstalled:
        raise
    except Exception as error:
        what, advice, op = _explain_torch_export_failure(error, inputs, _attention_implementation(source))
        raise ConversionError(f"{step} failed for {source.description}: {what}\nWhat you can do: {advice}",
                              step=step, op=op, opset=OPSET) from None
    validate_onnx_model(model_proto, step)
    return model_proto


# The dynamo exporter wraps its failures (TorchExportError: "step 1/3", capturing forward() with torch.export;
# ConversionError: "step 3/3", translating aten ops to ONNX) and chains the real cause; a missing translation names
# the aten op as OpOverload(op='aten.xxx'), and a capture failure quotes the user's line after this header.
_ATEN_OP = re.compile(r"OpOverload\(op='(?P<op>[^']+)'")
_USER_LINE = re.compile(r'The following call raised this error:\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in '
                        r'[^\n]*\n\s*(?P<code>[^\n]+)')


# torch.onnx.export(dynamo=True) says which of its three steps failed ("This is step 2/3 of exporting ...").
_EXPORT_STEP = re.compile(r"step (?P<step>[123])/3")
EXPORT_STEPS = {"1": "capture (torch.export of forward())", "2": "decomposition (into the ops ONNX can express)",
                "3": "ONNX translation"}
_ORIGINAL_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
# transformers' attention implementations that run a fused kernel (its decomposition is what fails to export).
FUSED_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


def _attention_implementation(source: Any) -> str | None:
    """transformers models say which attention they run in config._attn_implementation; None for other models."""
    config = getattr(getattr(source, "module", None), "config", None)
    value = getattr(config, "_attn_implementation", None)
    return value if isinstance(value, str) else None


def _explain_torch_export_failure(error: BaseException, inputs: ModelInputs,
                                  attention: str | None = None) -> tuple[str, str, str | None]:
    """(what went wrong, what the user can do, the op if one is to blame) for an exception from TorchModel.to_onnx."""
    chain = [error]
    while (chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)  # type: ignore[arg-type]
    root = chain[-1]
    texts = [ANSI_ESCAPE.sub("", str(e)) for e in chain]
    cause = f"{type(root).__name__}: {_first_line(root)}"
    if type(error).__name__ == "OpsetConversionError":
        return (_first_line(error),
                f"the message names the adapter of the op that has no opset {OPSET} form onnx.version_converter "
                f"{_version('onnx')} can produce; avoid that op in forward() (onnx2torch needs opset {OPSET})", None)
    step = next((found["step"] for text in texts if (found := _EXPORT_STEP.search(text))), None)
    if step == "2":
        frames = _ORIGINAL_FRAME.findall(texts[-1])
        where = f" at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}()" if frames else ""
        what = f"torch.onnx's {EXPORT_STEPS['2']} step (2 of 3) failed{where}: {cause}"
        if attention in FUSED_ATTENTION:
            return (what, f"the model runs attn_implementation={attention!r}, whose fused attention torch.onnx "
                          f"cannot decompose here; build it with attn_implementation='eager' (in its config, or "
                          f"from_pretrained(..., attn_implementation='eager')): eager attention is plain matmuls and "
                          f"softmax, which export and compute the same function", None)
        return (what, "capture succeeded (torch.export.export works); an op in the graph has no decomposition "
                      "torch.onnx can use for these shapes. Rewrite the line named above with plain ops (e.g. "
                      ".reshape instead of .view on a transposed tensor), or check the model in port mode", None)
    missing_op = next((found for text in texts if (found := _ATEN_OP.search(text))), None)
    if missing_op:
        op = missing_op["op"]
        return (f"the PyTorch op {op} has no ONNX translation in torch.onnx ({cause})",
                f"replace {op} in forward() with operations torch.onnx can export, or check the model in port mode "
                f"against a hand-written twin", op)
    if step == "3":
        return (f"torch.onnx's {EXPORT_STEPS['3']} step (3 of 3) failed: {cause}",
                f"capture and decomposition succeeded; an op of the decomposed graph could not be written as ONNX at "
                f"opset {OPSET}. Replace the op the error names in forward(), or check the model in port mode", None)
    if any(type(e).__name__ == "TorchExportError" or "torch.export" in text for e, text in zip(chain, texts)):
        line = next((found for text in texts if (found := _USER_LINE.search(text))), None)
        where = f" at {line['file']}:{line['line']} ({line['code'].strip()})" if line else ""
        if "data-dependent" in texts[-1] or "DataDependent" in type(root).__name__:
            return (f"torch.export could not capture forward(): it branches on a tensor's value{where}; {cause}",
                    "an exported graph cannot follow Python control flow that depends on tensor values: compute both "
                    "branches and pick with torch.where, use torch.cond, or move the decision out of forward()", None)
        return (f"torch.export could not capture forward(){where}: {cause}",
                f"make torch.export.export(model, args, strict=False) succeed for inputs of these shapes "
                f"({inputs.describe()}); https://pytorch.org/docs/stable/export.html lists what it supports", None)
    return (cause, f"check that torch.onnx.export(model, args, dynamo=True) succeeds for inputs of these shapes "
                   f"({inputs.describe()})", None)


# A call of a nested tf.function that tf2onnx did not inline. Functions marked for XLA (Keras 3 runs grouped
# convolutions through one) have their markers removed before conversion (tf_export); what reaches this point is a
# function tf2onnx could not inline for another reason.
NESTED_FUNCTION_CALLS = ("StatefulPartitionedCall", "PartitionedCall")
NESTED_FUNCTION_CALL_ADVICE = (
    "is a call of a nested tf.function that tf2onnx could not inline, so it was left unconverted in the graph "
    "(onnx/tensorflow-onnx#2099, #2347)",
    "call the code inside that nested tf.function directly from call() (without @tf.function or jit_compile=True "
    "around it), or check the model in port mode against a hand-written PyTorch twin (port mode carries weights "
    "without tf2onnx)")


def check_onnx_model(model_proto: Any, step: str) -> None:
    """tf2onnx leaves ops it cannot convert in the graph (continue_on_error); find them before onnx2torch does."""
    import onnx

    for node in onnx_rewrites.all_nodes(model_proto.graph):
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            if node.op_type in NESTED_FUNCTION_CALLS:
                what, advice = NESTED_FUNCTION_CALL_ADVICE
            else:
                what = "has no ONNX conversion, so it was left unconverted in the graph"
                advice = (f"express it with ops tf2onnx supports, or register a handler for it (tf2onnx.handler.tf_op "
                          f"/ custom_op_handlers); see tf2onnx's support_status.md for opset {OPSET}")
            raise ConversionError(f"{step}: the TensorFlow op {node.op_type!r} (node {node.name!r}) {what}.\n"
                                  f"What you can do: {advice}.", step=step, op=node.op_type, opset=OPSET)
    validate_onnx_model(model_proto, step)


def validate_onnx_model(model_proto: Any, step: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model_proto)
    except onnx.checker.ValidationError as error:
        raise ConversionError(f"{step} produced an invalid ONNX model: {_first_line(error)}", step=step,
                              opset=OPSET) from None


_MISSING_CONVERTER = re.compile(r"operation_type='(?P<op>[^']+)', version=(?P<version>\d+)")


def import_into_torch(model_proto: Any) -> ModelAdapter:
    from pytest_parity.frameworks import torch as torch_adapter

    step = f"ONNX -> PyTorch (onnx2torch {_version('onnx2torch')})"
    # A ConvTranspose's asymmetric pads become a crop first, so that a rerouted one (below) has symmetric pads too.
    onnx_rewrites.crop_asymmetric_conv_transpose_pads(model_proto.graph)
    # Then, while readers are counted on the exported graph: a Conv or ConvTranspose reading a shared or computed
    # weight takes it as an input (onnx2torch_conv); then its shared weight is routed through one Identity like any
    # other.
    model_proto = onnx_rewrites.route_convs_reading_shared_or_computed_weights(model_proto)
    model_proto = onnx_rewrites.route_normalizations_of_computed_or_shared_weights(model_proto)
    model_proto = onnx_rewrites.route_gather_nd_with_batch_dims(model_proto)
    share_weights_read_twice(model_proto.graph)
    onnx_rewrites.fill_omitted_clip_bounds(model_proto.graph)
    model_proto = onnx_rewrites.route_integer_clips(model_proto)
    try:
        return torch_adapter.from_onnx(model_proto)
    except FrameworkNotInstalled:
        raise
    except NotImplementedError as error:
        found = _MISSING_CONVERTER.search(str(error))
        if not found:
            node_name, op = _failing_onnx2torch_node(error)
            raise ConversionError(_converter_refused_node(step, error, node_name, op), step=step, op=op,
                                  opset=OPSET) from None
        op, version = found["op"], int(found["version"])
        nodes = [n.name for n in onnx_rewrites.all_nodes(model_proto.graph) if n.op_type == op][:3]
        raise ConversionError(
            f"{step}: onnx2torch has no converter for the ONNX op {op!r} (version {version}, model opset {OPSET}), "
            f"used by node(s) {', '.join(repr(n) for n in nodes)}.\n"
            f"What you can do: register one with onnx2torch.node_converters.registry.add_converter("
            f"operation_type={op!r}, version={version}) before the check, or avoid the layer that produces it.",
            step=step, op=op, opset=OPSET) from None
    except Exception as error:
        node_name, op = _failing_onnx2torch_node(error)
        where = f" at node {node_name!r} (ONNX op {op})" if op else ""
        raise ConversionError(f"{step} failed{where}: {type(error).__name__}: {_first_line(error)}", step=step,
                              op=op, opset=OPSET) from None


def _failing_onnx2torch_node(error: BaseException) -> tuple[str | None, str | None]:
    """(node name, op type) of the ONNX node onnx2torch was converting when it raised, or (None, None).

    onnx2torch's messages ("Dynamic value of min/max is not implemented") do not say which node; its convert() loop
    holds the node in a local variable, onnx_node, in the frame the error passed through.
    """
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        node = frame.f_locals.get("onnx_node") if frame.f_globals.get("__name__") == "onnx2torch.converter" else None
        if node is not None:
            return getattr(node, "name", None), getattr(node, "operation_type", None)
        traceback = traceback.tb_next
    return None, None


def _converter_refused_node(step: str, error: BaseException, node_name: str | None, op: str | None) -> str:
    """The message for an onnx2torch converter that exists but refuses this node's attributes or inputs."""
    where = (f"onnx2torch's converter for the ONNX op {op} refused node {node_name!r}" if op
             else "onnx2torch refused a node")
    return (f"{step}: {where}: {_first_line(error).rstrip('.')}.\n"
            f"What you can do: express that computation differently in the model (for example with constant bounds, "
            f"symmetric padding or the default mode). onnx2torch's own converter for {op or 'the op'} cannot be "
            f"replaced through add_converter (it refuses an op already registered): a fix belongs in onnx2torch, or "
            f"in an exact graph rewrite before the import (pytest_parity/onnx_rewrites.py).")


# onnx2torch converters that need an input to be an initializer: they copy it into their module's own nn.Parameter
# (Conv, BatchNorm) or read its value at conversion time (Clip's bounds).
_NEEDS_INITIALIZER = {"Conv", "ConvTranspose", "BatchNormalization", "InstanceNormalization", "Clip"}


def _float_weight_names(graph: Any) -> set[str]:
    """Initializers that can be weights: floating point, more than one element (single elements are the constants
    exporters share: a Clip bound, a Pow exponent)."""
    from onnx import TensorProto

    floating = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    return {tensor.name for tensor in graph.initializer
            if tensor.data_type in floating and int(np.prod(tensor.dims)) > 1}


def share_weights_read_twice(graph: Any) -> None:
    """Route a weight that several nodes read through one Identity node, in place.

    onnx2torch gives every node that reads an initializer a copy of its own (a separate buffer, or a Gemm's own
    nn.Linear): a weight read twice, as a shared Keras layer's kernel is, or nn.LSTM's weight_ih (sliced once per
    gate), or a tied embedding, would become several independent tensors in the converted model, its gradient split
    among them and only one of them matched. Read through an Identity, it stays one tensor. Left alone: weights read by
    an op whose converter needs the initializer itself (a ConvTranspose or normalisation copies it into a parameter per
    node anyway; a Conv reading a shared weight was rerouted before, see import_into_torch), and
    single-element tensors, which exporters share as constants (a Clip bound, a Pow exponent) far more often than
    models share a scalar weight.
    """
    from collections import Counter

    from onnx import helper

    weights = _float_weight_names(graph)
    readers = Counter(name for node in graph.node for name in node.input if name in weights)
    needs_initializer = {name for node in graph.node if node.op_type in _NEEDS_INITIALIZER for name in node.input}
    taken = {name for node in graph.node for name in node.output} | weights | {value.name for value in graph.input}
    identities = []
    for name, count in readers.items():
        if count < 2 or name in needs_initializer:
            continue
        shared = f"{name}__shared"
        while shared in taken:
            shared += "_"
        taken.add(shared)
        for node in graph.node:
            for index, input_name in enumerate(node.input):
                if input_name == name:
                    node.input[index] = shared
        identities.append(helper.make_node("Identity", [name], [shared], name=f"{shared}_identity"))
    for position, node in enumerate(identities):
        graph.node.insert(position, node)


class OnnxRuntimeOutputs(list[np.ndarray]):
    """The ONNX graph's outputs in graph output order (a list, as callers of ``run_onnxruntime`` always got), with
    where they were computed: ``provider`` is the execution provider that ran the graph, ``fallback`` says why that is
    not the device asked for (None when it is)."""

    def __init__(self, outputs: list[np.ndarray], *, device: str, provider: str, fallback: str | None) -> None:
        super().__init__(outputs)
        self.device = device
        self.provider = provider
        self.fallback = fallback

    def describe(self) -> str:
        """For a diagnosis: "onnxruntime on CUDAExecutionProvider (TF32 off)", or the CPU and why."""
        where = f"onnxruntime on {self.provider}"
        if self.provider == devices.CUDA_EXECUTION_PROVIDER:
            return f"{where} (TF32 off)"
        return f"{where} ({self.fallback})" if self.fallback else where


def run_onnxruntime(model_proto: Any, inputs: ModelInputs, device: str = "cpu") -> OnnxRuntimeOutputs:
    """Outputs of the ONNX graph itself, in graph output order, run by onnxruntime on ``device``.

    On "cuda" the CUDA execution provider runs it (TF32 off) when the installed onnxruntime has one; otherwise, or
    when onnxruntime cannot create it, the CPU provider does, and the result's ``fallback`` says why.
    """
    import onnxruntime

    available = onnxruntime.get_available_providers()
    # onnxruntime falls back to the CPU provider by itself when the CUDA one cannot be created (missing CUDA or cuDNN
    # libraries); the session's own provider list is the record of what runs.
    session = onnxruntime.InferenceSession(model_proto.SerializeToString(),
                                           providers=devices.onnxruntime_providers(device, available))
    used = session.get_providers()
    feed = {graph_input.name: array for graph_input, array in zip(session.get_inputs(), inputs.arrays)}
    outputs = [np.asarray(output) for output in session.run(None, feed)]
    return OnnxRuntimeOutputs(
        outputs, device=device, provider=used[0] if used else devices.CPU_EXECUTION_PROVIDER,
        fallback=devices.onnxruntime_fallback_reason(device, available, used, _version("onnxruntime")))
