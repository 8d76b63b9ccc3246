"""PyTorch adapter: any torch.nn.Module, including the fx GraphModules that onnx2torch builds.

Everything torch is imported inside functions, so importing this module is cheap. Export to ONNX goes through
torch.onnx.export(dynamo=True, optimize=False) plus a little post-processing; EXPORTER_CHOICE below says why.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity import import_guard
from pytest_parity.compare import flatten_tree, rebuild_sequence, unflatten_like
from pytest_parity.errors import FrameworkNotInstalled
from pytest_parity.frameworks import ModelInputs, split_gradients


def import_torch() -> Any:
    import_guard.before_torch_import()
    try:
        import torch
    except ImportError as error:
        raise FrameworkNotInstalled("torch", "torch", error) from error
    return torch


class TorchModel:
    framework = "torch"

    def __init__(self, module: Any, *, positional_inputs: bool = False) -> None:
        self.torch = import_torch()
        self.module = module
        # onnx2torch's GraphModules take the ONNX graph inputs positionally, whatever the user's input names were.
        self.positional_inputs = positional_inputs
        self.description = f"PyTorch {type(module).__name__}"

    def _named_tensors(self) -> dict[str, Any]:
        named = dict(self.module.named_parameters())
        # onnx2torch keeps most initializers (e.g. a Keras Dense's MatMul weight) as buffers, not parameters; they are
        # weights all the same and must be matched and differentiated.
        named.update((name, b) for name, b in self.module.named_buffers() if b.is_floating_point())
        return named

    def weights(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy().copy() for name, t in self._named_tensors().items()}

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.module.named_parameters() if p.requires_grad]

    def assign_weights(self, values: dict[str, np.ndarray]) -> None:
        tensors = self._named_tensors()
        with self.torch.no_grad():
            for name, value in values.items():
                tensor = tensors[name]
                tensor.copy_(self.torch.from_numpy(np.ascontiguousarray(value)).to(tensor.dtype))

    def expected_inputs(self) -> str | None:
        return None

    def _arguments(self, inputs: ModelInputs, tensors: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if inputs.kind == "named" and not self.positional_inputs:
            return (), dict(zip(inputs.names, tensors))
        return tuple(tensors), {}

    def run(self, inputs: ModelInputs, device: str,
            cotangents: list[np.ndarray | None] | Callable[[list[np.ndarray]], list[np.ndarray | None]] | None,
            grad_weights: list[str] | None = None) -> tuple[Any, list[np.ndarray | None] | None,
                                                            dict[str, np.ndarray | None] | None]:
        torch = self.torch
        self.module.eval()
        self.module.to(device)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.arrays]
        args, kwargs = self._arguments(inputs, tensors)
        if cotangents is None:
            with torch.no_grad():
                tree = self.module(*args, **kwargs)
            return _to_numpy(tree), None, None

        names = self.trainable_names() if grad_weights is None else grad_weights
        named = self._named_tensors()
        weights = [named[name] for name in names]
        for weight in weights:
            # Buffers that stand for weights (see _named_tensors) take part in autograd only when asked to.
            if not weight.requires_grad:
                weight.requires_grad_(True)
        float_inputs = [t.requires_grad_(True) for t in tensors if t.is_floating_point()]
        with torch.enable_grad(), warnings.catch_warnings():
            # The CUDA build of torch on a machine without a driver warns "CUDA initialization: ..." at the first
            # backward pass; it says nothing about the model and would fail suites that turn warnings into errors.
            warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
            tree = self.module(*args, **kwargs)
            leaves = [leaf for _, leaf in flatten_tree(tree, "output")]
            leaves_np = [leaf.detach().cpu().numpy() for leaf in leaves]
            cots = cotangents(leaves_np) if callable(cotangents) else cotangents
            terms = [(leaf * torch.from_numpy(np.ascontiguousarray(c)).to(leaf.device, leaf.dtype)).sum()
                     for leaf, c in zip(leaves, cots) if c is not None and leaf.requires_grad]
            if terms:
                loss = torch.stack(terms).sum()
                gradients = torch.autograd.grad(loss, float_inputs + weights, allow_unused=True)
            else:  # no output depends on anything differentiable: every gradient is missing
                gradients = (None,) * (len(float_inputs) + len(weights))
        input_grads, weight_grads = split_gradients([t.is_floating_point() for t in tensors], names,
                                                    [_grad_to_numpy(g) for g in gradients])
        # The outputs were already copied to numpy for the cotangents: reuse them.
        return unflatten_like(tree, leaves_np), input_grads, weight_grads

    # -- export ----------------------------------------------------------------------------------------------
    def to_onnx(self, inputs: ModelInputs, opset: int) -> Any:
        """PyTorch -> ONNX at ``opset`` with torch.onnx.export(dynamo=True): eval mode, CPU, static shapes.

        Graph inputs follow ``inputs`` (names and order); graph outputs are the output leaves in flatten order (dicts
        in insertion order, as ``compare.flatten_tree`` walks them). See EXPORTER_CHOICE for why this exporter and
        why the graph is post-processed.
        """
        torch = self.torch
        try:
            import onnx
            import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) translates through it
        except ImportError as error:
            raise FrameworkNotInstalled("torch", error.name or "onnxscript", error) from error
        module = self.module
        was_training = module.training
        module.eval()
        module.to("cpu")
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.arrays]
        args, kwargs = self._arguments(inputs, tensors)
        try:
            with warnings.catch_warnings():
                # The exporter warns about its own workings (e.g. nn.LSTM's "_flat_weights ... were assigned during
                # export"), nothing a user can act on; suites that turn warnings into errors would fail on them.
                warnings.simplefilter("ignore")
                input_names = [_onnx_input_name(name, i) for i, name in enumerate(inputs.names)]
                export_with_registry = _export_with_prebuilt_registry()
                if export_with_registry is not None:
                    program = export_with_registry(module, args, kwargs, input_names)
                else:
                    program = torch.onnx.export(module, args, kwargs=kwargs or None, dynamo=True,
                                                opset_version=EXPORT_OPSET, optimize=False, verbose=False,
                                                input_names=input_names)
        finally:
            module.train(was_training)
        _fold_constants_except_weights(program.model)
        model_proto = program.model_proto
        if opset < EXPORT_OPSET:
            try:
                model_proto = onnx.version_converter.convert_version(model_proto, opset)
            except Exception as error:
                raise OpsetConversionError(f"onnx.version_converter could not convert the exported graph from opset "
                                           f"{EXPORT_OPSET} to {opset}: {error}") from error
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
#   models above convert and match every weight (nn.LSTM through pytest_parity.onnx2torch_converters).
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


class OpsetConversionError(RuntimeError):
    """onnx.version_converter could not bring the exported graph down to the requested opset."""


def _onnx_input_name(name: str, index: int) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return cleaned or f"input_{index}"


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

    graphs = _all_graphs(model_proto.graph)
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



def _all_graphs(graph: Any) -> list[Any]:
    graphs = [graph]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                graphs.extend(_all_graphs(attribute.g))
            for subgraph in attribute.graphs:
                graphs.extend(_all_graphs(subgraph))
    return graphs


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return rebuild_sequence(tree, [_to_numpy(v) for v in tree])
    if hasattr(tree, "detach"):
        return tree.detach().cpu().numpy()
    return np.asarray(tree)


def _grad_to_numpy(gradient: Any) -> np.ndarray | None:
    return None if gradient is None else gradient.detach().cpu().numpy()


def from_onnx(model_proto: Any) -> TorchModel:
    """ONNX -> PyTorch through onnx2torch; converter errors propagate for the bridge to explain."""
    import_torch()
    try:
        import onnx2torch
    except ImportError as error:
        raise FrameworkNotInstalled("torch", "onnx2torch", error) from error
    from pytest_parity import onnx2torch_converters  # registers LSTM, GRU, RNN, Loop, ReverseSequence

    with onnx2torch_converters.model_opsets(model_proto):
        module = onnx2torch.convert(model_proto)
    return TorchModel(module, positional_inputs=True)
