"""TensorFlow -> ONNX: tf2onnx's own steps (freeze, Grappler, convert, optimize), in one pass and within memory.

tf2onnx.convert.from_function does the same steps; they are spelled out here for two reasons:

- Keras 3's grouped convolutions hide in nested functions that no tf2onnx entry point inlines (see
  _strip_xla_markers). The markers have to go between freezing and converting; calling from_function first and
  converting again when it left a nested call behind doubled the work and the memory.
- Memory. Before each of its ONNX optimizers tf2onnx deep-copies the whole graph (to go on without an optimizer that
  fails), and the discarded copies, like the graphs the optimizers replace, are reference cycles that Python's cyclic
  garbage collector reaches only now and then, so copies of every weight pile up. Measured (one run, ResNet50, 24 M
  parameters, the optimize step alone): peak 6.6 GB, 11.3 s; a garbage collection before each optimizer: 2.2 GB,
  5.6 s; no copies (catch_errors=False): 3.9 GB, 1.7 s, so the garbage is not only the copies. Keras ConvNeXtLarge
  (198 M) was killed by the out-of-memory killer of a 24 GB machine with tf2onnx's default and with no copies; with
  the collections the whole export peaks 15 GB above the built model. They are made for large graphs only
  (LARGE_GRAPH_BYTES): in a test session's large heap one collection takes long enough to make a small model's
  conversion several times slower.

Everything TensorFlow/tf2onnx is imported inside functions.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity.errors import ConversionError

# What keeps Keras 3's jit-compiled functions from being inlined (see _strip_xla_markers).
XLA_MARKERS = ("_XlaMustCompile", "_noinline")
# The step named in this module's own errors (the bridge adds the tf2onnx version and opset to the ones it raises).
STEP = "TensorFlow -> ONNX (tf2onnx)"
# A frozen graph above this size is worth a garbage collection (which takes a while in a test session's large heap).
LARGE_GRAPH_BYTES = 64 * 2**20


def export(tf: Any, forward: Any, specs: list[Any], opset: int,
           weight_values: dict[str, np.ndarray] | None = None) -> Any:
    """A tf.function with a static input signature -> an ONNX ModelProto at ``opset``.

    Unsupported TensorFlow ops stay in the graph as they are (tf2onnx's continue_on_error, as from_function does), so
    that the bridge's check can name them. ``weight_values``: the specs (by name) that carry weights rather than model
    inputs, and their values; they become initializers, and layout ops applied to them alone are folded.
    """
    import tf2onnx
    from tf2onnx import optimizer, tf_loader
    from tf2onnx.tfonnx import process_tf_graph

    from pytest_parity.bridge.converters import tf2onnx_handlers  # noqa: F401 - registers handlers for ops tf2onnx lacks

    with tf.device("/cpu:0"):
        concrete = forward.get_concrete_function(*specs)
        input_names = [t.name for t in concrete.inputs if t.dtype != tf.resource]
        output_names = [t.name for t in concrete.outputs if t.dtype != tf.resource]
        graph_def = tf_loader.from_function(concrete, input_names, output_names)  # freeze + Grappler
        large = graph_def.ByteSize() > LARGE_GRAPH_BYTES
        if large:
            gc.collect()  # the freezing's intermediate graphs: ConvNeXtLarge's 0.73 GB graph left 2 GB of them
        if _strip_xla_markers(graph_def):
            with tf.Graph().as_default():  # Grappler runs on a graph, not eagerly; now it inlines the functions
                graph_def = tf_loader.tf_optimize(input_names, output_names, graph_def)
        renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
        with tf.Graph().as_default() as tf_graph:
            tf.import_graph_def(graph_def, name="")
            del graph_def
            onnx_graph = process_tf_graph(tf_graph, continue_on_error=True, opset=opset, input_names=input_names,
                                          output_names=output_names, tensors_to_rename=renames)
            optimizers = optimizer._get_optimizers()
            if large:
                optimizers = {name: _collecting_first(factory) for name, factory in optimizers.items()}
            onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=True, optimizers=optimizers)
            model_proto = onnx_graph.make_model(f"converted from {concrete.name}")
    del onnx_graph
    captured = {internal.name: external for external, internal in concrete.graph.captures
                if external.dtype != tf.resource}
    weight_values = weight_values or {}
    captured.update(weight_values)
    _captured_constants_to_initializers(model_proto, {spec.name for spec in specs} - set(weight_values), captured)
    if weight_values:
        fold_layout_ops_on_initializers(model_proto)
    return model_proto


# Ops that only move a weight's elements: folded into the initializer when a weight reaches the graph as an input
# (tf2onnx folds them itself for frozen constants), so a Conv reads its kernel as an initializer, as onnx2torch needs.
LAYOUT_OPS = ("Transpose", "Identity", "Reshape", "Squeeze", "Unsqueeze")


def fold_layout_ops_on_initializers(model_proto: Any) -> int:
    """Replace each layout op whose inputs are all initializers by an initializer holding its result (computed by
    onnx's reference evaluator, which implements the ops exactly); returns how many were folded. Arithmetic on
    weights (a BatchNormalization's scale and shift) is not folded: that is what would hide the weights."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model_proto.graph
    initializers = {init.name: init for init in graph.initializer}
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.node):
            if node.op_type not in LAYOUT_OPS or not node.input or not all(name in initializers for name in node.input
                                                                           if name):
                continue
            # The node alone, with just its initializers: cheap to evaluate whatever the model's size.
            single = helper.make_model(
                helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(node.output[0])],
                                  initializer=[initializers[name] for name in dict.fromkeys(node.input) if name]),
                opset_imports=model_proto.opset_import, ir_version=model_proto.ir_version)
            outputs: Any = ReferenceEvaluator(single).run(None, {})
            value = outputs[0]
            graph.node.remove(node)
            tensor = numpy_helper.from_array(np.asarray(value), node.output[0])
            graph.initializer.append(tensor)
            initializers[node.output[0]] = tensor
            folded += 1
            changed = True
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return folded


# Peak memory of an export above the built model, per byte of weights (measured, one run each: ResNet50 1.87 GB for
# 98 MB of weights, ConvNeXtLarge 14.8 GB for 0.79 GB: 19-20x; freezing and Grappler copy the graph several times).
EXPORT_MEMORY_PER_WEIGHT_BYTE = 20


def refuse_if_memory_is_short(weight_bytes: int, description: str) -> None:
    """A ConversionError, before starting, when the export would need more memory than the machine has available.

    Without it the out-of-memory killer ends the whole test session with no message (Keras ConvNeXtXLarge, 1.4 GB of
    weights, on a 24 GB machine). Linux only (/proc/meminfo); elsewhere the export just runs.
    """
    available = _available_memory_bytes()
    needed = weight_bytes * EXPORT_MEMORY_PER_WEIGHT_BYTE
    if available is None or needed <= available:
        return
    raise ConversionError(
        f"{STEP}: not started for {description}: its {weight_bytes / 2**30:.2f} GiB of weights need about "
        f"{needed / 2**30:.0f} GiB of memory to export (tf2onnx's freezing and optimizers copy the graph several "
        f"times; about {EXPORT_MEMORY_PER_WEIGHT_BYTE}x the weights), and this machine has "
        f"{available / 2**30:.1f} GiB available; going ahead would have the out-of-memory killer end the test session."
        f"\nWhat you can do: run this check on a machine with more memory, alone in its process (pytest -k, or one "
        f"pytest-xdist worker per large model), or check a smaller configuration of the same architecture.",
        step=STEP)


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _collecting_first(factory: Callable[[], Any]) -> Callable[[], Any]:
    """An optimizer factory that first collects the graph copies the previous optimizers left (module docstring)."""

    def collect_then_create() -> Any:
        gc.collect()
        return factory()

    return collect_then_create


def _strip_xla_markers(graph_def: Any) -> int:
    """Remove the XLA markers from a frozen graph's functions and nodes; returns how many were removed.

    Keras 3's TensorFlow backend runs grouped convolutions (Conv2D/Conv1D with groups > 1, e.g. ConvNeXt's
    depthwise convolution) through a tf.function(jit_compile=True): its function is marked _XlaMustCompile and
    _noinline, so Grappler does not inline it and tf2onnx leaves a StatefulPartitionedCall it cannot convert
    (onnx/tensorflow-onnx#2099, #2347). Without the markers the body is inlined and converts as plain ops (a grouped
    Conv); the markers only decide how TensorFlow would compile the function, not what it computes."""
    removed = 0
    for function in graph_def.library.function:
        for marker in XLA_MARKERS:
            if marker in function.attr:
                del function.attr[marker]
                removed += 1
    for node in [*graph_def.node, *(node for function in graph_def.library.function for node in function.node_def)]:
        for marker in XLA_MARKERS:
            if marker in node.attr:
                del node.attr[marker]
                removed += 1
    return removed


def _captured_constants_to_initializers(model_proto: Any, input_names: set[str], captured: dict[str, Any]) -> None:
    """tf2onnx freezes captured variables but leaves captured eager tensors (e.g. the mean and variance a Keras
    Normalization layer keeps as tensors, in every keras.applications EfficientNet) as extra graph inputs, which the
    converted model would then demand as arguments. Give them their captured values as initializers."""
    from onnx import numpy_helper

    extra = [value for value in model_proto.graph.input if value.name not in input_names]
    unknown = [value.name for value in extra if value.name not in captured]
    if unknown:
        raise ConversionError(
            f"{STEP}: the exported graph has inputs that are not the model's inputs and not "
            f"values the model captured: {', '.join(unknown)}.\nWhat you can do: make sure the model's call() takes "
            f"all its inputs as arguments (pass the same structure as inputs=...).",
            step=STEP)
    for value in extra:
        model_proto.graph.initializer.append(numpy_helper.from_array(np.asarray(captured[value.name]), value.name))
        model_proto.graph.input.remove(value)
