"""PyTorch adapter: any torch.nn.Module, including the fx GraphModules that onnx2torch builds.

Everything torch is imported inside functions, so importing this module is cheap. Export to ONNX is
``pytest_parity.bridge.torch_export``'s.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_parity import import_guard
from pytest_parity.errors import FrameworkNotInstalled
from pytest_parity.frameworks import ModelInputs, onnx_input_name, split_gradients, tensor_outputs
from pytest_parity.trees import flatten_tree, rebuild_sequence, unflatten_like


def import_torch() -> Any:
    import_guard.before_torch_import()
    try:
        import torch
    except ImportError as error:
        raise FrameworkNotInstalled("torch", "torch", error) from error
    _quiet_structured_trace()
    return torch


class _OnlyWhenTracing(logging.Filter):
    """torch.export logs every step to the "torch.__trace" logger at DEBUG, with empty messages, for TORCH_TRACE's
    structured trace files; the records also reach the root logger, so pytest's log capture showed hundreds of empty
    "DEBUG torch.__trace" lines in every failing parity test. They are kept when the user asked for a trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(os.environ.get("TORCH_TRACE"))


def _quiet_structured_trace() -> None:
    trace_logger = logging.getLogger("torch.__trace")
    if not any(isinstance(f, _OnlyWhenTracing) for f in trace_logger.filters):
        trace_logger.addFilter(_OnlyWhenTracing())


class TorchModel:
    framework = "torch"

    def __init__(self, module: Any, *, positional_inputs: bool = False) -> None:
        self.torch = import_torch()
        self.module = module
        # onnx2torch's GraphModules take the ONNX graph inputs positionally, whatever the user's input names were.
        self.positional_inputs = positional_inputs
        self.description = f"PyTorch {type(module).__name__}"
        # Outputs the last run left out of the comparison (not tensors), as 'path (type)'; see tensor_outputs.
        self.left_out_outputs: list[str] = []

    def _named_tensors(self) -> dict[str, Any]:
        named = dict(self.module.named_parameters())
        # onnx2torch keeps most initializers (e.g. a Keras Dense's MatMul weight) as buffers, not parameters; they are
        # weights all the same and must be matched and differentiated.
        named.update((name, b) for name, b in self.module.named_buffers() if b.is_floating_point())
        return named

    def weights(self) -> dict[str, np.ndarray]:
        return {name: t.detach().cpu().numpy().copy() for name, t in self._named_tensors().items()}

    def build(self, inputs: ModelInputs, device: str) -> None:
        """Lazy modules (nn.LazyLinear, ...) have no weights until their first call: run once so they exist."""
        uninitialized = self.torch.nn.parameter.UninitializedParameter
        if not any(isinstance(p, uninitialized) for p in self.module.parameters()):
            return
        self.module.to(device)
        tensors = [self.torch.from_numpy(a).to(device) for a in inputs.arrays]
        args, kwargs = self._arguments(inputs, tensors)
        with self.torch.no_grad():
            self.module(*args, **kwargs)

    def remember_placement(self) -> Callable[[], None]:
        """What puts the module back as it was given: a check moves it to each device it runs on and switches every
        submodule to eval mode; the user's model must come back on its device and in its train/eval mode."""
        module = self.module
        tensor = next(module.parameters(), None)
        if tensor is None:
            tensor = next(module.buffers(), None)
        device = None if tensor is None else tensor.device
        training = [(submodule, submodule.training) for submodule in module.modules()]

        def restore() -> None:
            if device is not None:
                module.to(device)
            for submodule, mode in training:
                submodule.training = mode

        return restore

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.module.named_parameters() if p.requires_grad]

    def assign_weights(self, values: dict[str, np.ndarray]) -> None:
        tensors = self._named_tensors()
        with self.torch.no_grad():
            for name, value in values.items():
                tensor = tensors[name]
                # np.array, not np.ascontiguousarray, which makes a 0-d value (a scalar buffer) 1-d.
                tensor.copy_(self.torch.from_numpy(np.array(value, order="C")).to(tensor.dtype))

    def expected_inputs(self) -> str | None:
        return None

    def expected_input_count(self) -> int | None:
        return None

    def arguments(self, inputs: ModelInputs, tensors: list[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """How the module takes ``tensors``: by keyword for named inputs, else positionally."""
        return self._arguments(inputs, tensors)

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
            tree, self.left_out_outputs = tensor_outputs(tree, torch.is_tensor, self.description)
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
            tree, self.left_out_outputs = tensor_outputs(tree, torch.is_tensor, self.description)
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

    # -- timing ----------------------------------------------------------------------------------------------
    def cuda_event_timer(self) -> CudaEventTimer:
        return CudaEventTimer(self.torch)

    def speed_call(self, inputs: ModelInputs, device: str, timed: str) -> Callable[[], None]:
        torch = self.torch
        self.module.eval()
        self.module.to(device)
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.arrays]
        args, kwargs = self._arguments(inputs, tensors)

        def synchronise() -> None:
            if device == "cuda":
                torch.cuda.synchronize()

        if timed == "forward":
            def forward() -> None:
                with torch.inference_mode():
                    self.module(*args, **kwargs)
                synchronise()

            return forward

        weights = [t for t in self._named_tensors().values() if t.requires_grad]
        float_inputs = [t.requires_grad_(True) for t in tensors if t.is_floating_point()]

        def forward_backward() -> None:
            # The cotangent's values do not change the cost: the sum of the outputs (all-ones cotangent), as in TF.
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
                leaves = [leaf for _, leaf in flatten_tree(self.module(*args, **kwargs), "output")
                          if torch.is_tensor(leaf)]
                terms = [leaf.sum() for leaf in leaves if leaf.is_floating_point() and leaf.requires_grad]
                if terms:
                    torch.autograd.grad(torch.stack(terms).sum(), float_inputs + weights, allow_unused=True)
            synchronise()

        return forward_backward

    # -- export ----------------------------------------------------------------------------------------------
    def to_onnx(self, inputs: ModelInputs, opset: int) -> Any:
        """PyTorch -> ONNX at ``opset``: eval mode, CPU, static shapes (see ``torch_export`` for the route and why).

        Graph inputs follow ``inputs`` (names and order); graph outputs are the output leaves in flatten order (dicts
        in insertion order, as ``trees.flatten_tree`` walks them).
        """
        from pytest_parity.bridge import torch_export

        module = self.module
        was_training = module.training
        module.eval()
        module.to("cpu")
        tensors = [self.torch.from_numpy(np.ascontiguousarray(a)) for a in inputs.arrays]
        args, kwargs = self._arguments(inputs, tensors)
        input_names = [onnx_input_name(name, i) for i, name in enumerate(inputs.names)]
        exported = _tensor_outputs_only(self.torch, module, self.description) if self.left_out_outputs else module
        try:
            return torch_export.export(exported, args, kwargs, input_names, opset)
        finally:
            module.train(was_training)


def _tensor_outputs_only(torch: Any, module: Any, description: str) -> Any:
    """``module`` returning only its tensor outputs, in flatten order, for the export: a cache object among the
    outputs (left out of the comparison) must not become graph outputs the source's comparison does not have."""

    class TensorOutputsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            tree, _ = tensor_outputs(self.inner(*args, **kwargs), torch.is_tensor, description)
            return tuple(leaf for _, leaf in flatten_tree(tree, "output"))

    return TensorOutputsOnly()


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
    from pytest_parity.bridge.converters import (
        onnx2torch_clip,  # noqa: F401 - registers the Clip of integers
        onnx2torch_comparisons,  # noqa: F401 - registers LessOrEqual and GreaterOrEqual at opset 16
        onnx2torch_conv,  # noqa: F401 - registers the Conv and ConvTranspose of a shared or computed weight
        onnx2torch_gather_nd,  # noqa: F401 - registers GatherND with batch_dims != 0
        onnx2torch_normalization,  # noqa: F401 - registers normalisations of computed or shared weights
        onnx2torch_pooling,  # noqa: F401 - registers GlobalMaxPool
        onnx2torch_recurrent,  # registers LSTM, GRU, RNN, Loop, ReverseSequence
    )

    with onnx2torch_recurrent.model_opsets(model_proto):
        module = onnx2torch.convert(model_proto)
    _silence_onnx2torch_indexing_warning(module)
    return TorchModel(module, positional_inputs=True)


# onnx2torch 1.5.15's Slice indexes with a list of slices, which torch >= 2.5 warns about on every call ("Using a
# non-tuple sequence for multidimensional indexing is deprecated"); torch still reads it as a tuple. The warning is
# about the converter's code, not the user's model, and would fail suites that turn warnings into errors; if torch
# ever reads it differently, the outputs comparison says so.
ONNX2TORCH_INDEXING_WARNING = "Using a non-tuple sequence for multidimensional indexing is deprecated"


def _silence_onnx2torch_indexing_warning(module: Any) -> None:
    """Wrap the converted module's forward (as an instance attribute, so weight names stay as they are)."""
    forward = module.forward

    def forward_without_the_indexing_warning(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=ONNX2TORCH_INDEXING_WARNING, category=UserWarning)
            return forward(*args, **kwargs)

    module.forward = forward_without_the_indexing_warning


class CudaEventTimer:
    """Device time between two CUDA events on the current stream (timing.Timer): what the GPU spent, not what the
    host waited, so a busy host CPU does not inflate it."""

    def __init__(self, torch: Any) -> None:
        self.torch = torch

    def start(self) -> Any:
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, token: Any) -> float:
        end = self.torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return float(token.elapsed_time(end)) / 1e3  # elapsed_time is in milliseconds
