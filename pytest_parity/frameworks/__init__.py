"""One adapter per framework. This module only tells frameworks apart; it never imports one.

An adapter wraps a model and speaks numpy at its boundary: the check hands it numpy inputs and cotangents and gets
numpy outputs and gradients back, so no framework tensor ever crosses to the other framework.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pytest_parity.errors import ParityUsageError
from pytest_parity.trees import flatten_tree, rebuild_sequence

FRAMEWORK_LABELS = {"tensorflow": "TensorFlow/Keras", "torch": "PyTorch"}

# Top-level module of a class in the model's MRO -> framework. Checked by name so nothing gets imported.
_MODULE_ROOTS = {"keras": "tensorflow", "tf_keras": "tensorflow", "tensorflow": "tensorflow", "torch": "torch"}


def detect_framework(model: Any) -> str:
    """'tensorflow' or 'torch'; a clear ParityUsageError for anything else."""
    if isinstance(model, type):
        known = any(cls.__module__.split(".")[0] in _MODULE_ROOTS for cls in model.__mro__)
        raise ParityUsageError(
            f"parity.check() got the class {model.__module__}.{model.__qualname__}, not a model"
            + (f": pass an instance, e.g. {model.__qualname__}()" if known else
               ": pass a Keras model or layer, a tf.Module, or a torch.nn.Module instance"))
    for cls in type(model).__mro__:
        root = cls.__module__.split(".")[0]
        if root in _MODULE_ROOTS:
            return _MODULE_ROOTS[root]
    raise ParityUsageError(
        f"parity.check() got {type(model).__module__}.{type(model).__qualname__}, which is not a model it knows: "
        f"pass a Keras model or layer, a tf.Module, or a torch.nn.Module"
    )


@dataclass(frozen=True)
class ModelInputs:
    """The user's inputs flattened: ``kind`` says how to hand ``arrays`` back to a model.

    kind: "single" (one array), "positional" (a tuple/list: one positional argument each) or "named" (a dict).
    """

    kind: str
    names: tuple[str, ...]
    arrays: tuple[np.ndarray, ...]

    # Names of the inputs the user gave as float64 and the check cast to float32 (see for_model_precision).
    cast_from_float64: tuple[str, ...] = ()

    def describe(self) -> str:
        return ", ".join(f"{name}: {a.dtype}{list(a.shape)}"
                         + (" (given as float64, cast to float32)" if name in self.cast_from_float64 else "")
                         for name, a in zip(self.names, self.arrays))

    def with_arrays(self, arrays: tuple[np.ndarray, ...]) -> ModelInputs:
        return ModelInputs(self.kind, self.names, arrays, self.cast_from_float64)


class ModelAdapter(Protocol):
    """What the check needs of a model, whatever its framework."""

    framework: str
    description: str

    def weights(self) -> dict[str, np.ndarray]:
        """Every floating-point weight (trainable or not), by name, as numpy."""

    def build(self, inputs: ModelInputs, device: str) -> None:
        """Run a model whose weights exist only after its first call (unbuilt Keras, lazy torch modules) once."""

    def expected_input_count(self) -> int | None:
        """How many inputs the model takes, where it says (a built Keras model); None otherwise."""

    def remember_placement(self) -> Callable[[], None]:
        """A function that puts the model back on its device and in its train/eval mode after a check."""

    # Outputs the last run left out of the comparison because they are not tensors (see tensor_outputs).
    left_out_outputs: list[str]

    def trainable_names(self) -> list[str]:
        """Names (keys of ``weights()``) that gradients are taken for."""

    def assign_weights(self, values: dict[str, np.ndarray]) -> None:
        """Overwrite the named weights in place."""

    def run(self, inputs: ModelInputs, device: str, cotangents: Any | None,
            grad_weights: list[str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray | None] | None,
                                                             dict[str, np.ndarray | None] | None]:
        """Forward in inference mode; with ``cotangents`` also the vector-Jacobian product.

        ``cotangents`` is None (forward only), a list of arrays (one per output leaf), or a callable that gets the
        output leaves and returns that list. Returns (output leaves, input gradients, weight gradients).
        """

    def expected_inputs(self) -> str | None:
        """What the model says it expects as input (for error messages), when it says."""

    def speed_call(self, inputs: ModelInputs, device: str, timed: str) -> Callable[[], None]:
        """A call to time: one forward ("forward") or forward + VJP ("forward_backward") on ``inputs``, prepared on
        ``device`` beforehand, ending with a device synchronisation. Inputs, cotangents and any tracing are set up
        here, outside the timed call."""


def split_gradients(is_float: list[bool], weight_names: list[str], gradients: list[np.ndarray | None]
                    ) -> tuple[list[np.ndarray | None], dict[str, np.ndarray | None]]:
    """Gradients taken w.r.t. [float inputs..., weights...] -> (one entry per input, None for non-float; by weight)."""
    float_count = sum(is_float)
    input_gradients = iter(gradients[:float_count])
    return ([next(input_gradients) if floating else None for floating in is_float],
            dict(zip(weight_names, gradients[float_count:])))


_LEFT_OUT = object()


def tensor_outputs(tree: Any, is_tensor: Callable[[Any], bool], description: str) -> tuple[Any, list[str]]:
    """The model's output tree with its tensors only, and what was left out, each as 'path (type)'.

    Parity compares tensors. A model output often carries other things beside them: a cache object (transformers'
    DynamicCache with use_cache on), None, a config; those are left out of the comparison and the export, and the
    result's notes name them. A sequence that loses an element becomes a dict keyed by the element's index, so every
    tensor keeps its name (``output[2]`` stays ``output[2]``). A model with no tensor output at all is a usage error.
    """
    left_out: list[str] = []

    def keep(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            kept = {key: value for key, value in ((k, keep(v, f"{path}[{k!r}]")) for k, v in node.items())
                    if value is not _LEFT_OUT}
            return kept if kept or not node else _LEFT_OUT
        if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            values = [keep(value, f"{path}[{index}]") for index, value in enumerate(node)]
            if all(value is not _LEFT_OUT for value in values):
                return rebuild_sequence(node, values)
            by_index = {index: value for index, value in enumerate(values) if value is not _LEFT_OUT}
            return by_index or _LEFT_OUT
        if is_tensor(node):
            return node
        left_out.append(f"{path} ({_kind(node)})")
        return _LEFT_OUT

    kept = keep(tree, "output")
    if kept is _LEFT_OUT or not flatten_tree(kept, "output"):
        raise ParityUsageError(
            f"The model ({description}) returns {_kind(tree)}, with no tensor in it"
            + (f" ({', '.join(left_out[:4])})" if left_out and left_out != [f"output ({_kind(tree)})"] else "")
            + "; parity compares tensor outputs (a tensor, or tuples, lists and dicts of tensors). What you can do: "
              "return the tensors to compare, e.g. wrap the model in a module whose forward/call returns them.")
    return kept, left_out


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    module = type(value).__module__
    return f"a {type(value).__qualname__}" if module == "builtins" else f"a {module}.{type(value).__qualname__}"


def left_out_note(left_out: list[str], description: str) -> list[str]:
    """The result's note for outputs tensor_outputs left out."""
    if not left_out:
        return []
    shown = ", ".join(left_out[:6]) + (f" and {len(left_out) - 6} more" if len(left_out) > 6 else "")
    return [f"{description}: outputs that are not tensors were left out of the comparison and the export: {shown}"]


def onnx_input_name(name: str, index: int) -> str:
    """An input's name as an ONNX graph input: identifier characters only ("input[0]" -> "input_0")."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
    return cleaned or f"input_{index}"


def flatten_inputs(inputs: Any) -> ModelInputs:
    """numpy array / tuple or list of arrays / dict of arrays -> ModelInputs; other things are a usage error."""
    if isinstance(inputs, dict):
        if not inputs:
            raise ParityUsageError("inputs={} is empty: pass at least one array")
        return ModelInputs("named", tuple(str(k) for k in inputs), tuple(_as_array(f"inputs[{k!r}]", v)
                                                                          for k, v in inputs.items()))
    if isinstance(inputs, (tuple, list)):
        if not inputs:
            raise ParityUsageError("inputs=() is empty: pass at least one array")
        if _only_python_numbers(inputs):
            raise ParityUsageError(
                f"inputs is a nested Python {type(inputs).__name__} of numbers; a list or tuple of inputs means one "
                f"input per element (positional inputs). For one input, pass it as an array: "
                f"inputs=np.asarray(...) (or parity.randn(...)); for several, a list of arrays")
        return ModelInputs("positional", tuple(f"input[{i}]" for i in range(len(inputs))),
                           tuple(_as_array(f"inputs[{i}]", v) for i, v in enumerate(inputs)))
    return ModelInputs("single", ("input",), (_as_array("inputs", inputs),))


def _only_python_numbers(value: Any) -> bool:
    """A (nested) Python list or tuple holding Python numbers only: a matrix written out, not a list of inputs."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(_only_python_numbers(item) for item in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (int, float, bool)) or (isinstance(value, (list, tuple)) and value):
        array = np.asarray(value)
    else:
        raise ParityUsageError(
            f"{name} is a {type(value).__module__}.{type(value).__qualname__}; parity inputs must be numpy arrays "
            f"(numpy is the exchange format between frameworks): use parity.randn(...) or np.asarray(...)"
        )
    if array.dtype == object:
        raise ParityUsageError(f"{name} has dtype object; pass a numeric numpy array")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ParityUsageError(f"{name} has dtype {array.dtype}: the ONNX route carries real tensors only, and a cast "
                               f"would drop the imaginary part. Pass the real and imaginary parts as two float inputs")
    if array.size == 0:
        raise ParityUsageError(f"{name} ({array.dtype}{list(array.shape)}) is empty: a check on it would compare "
                               f"nothing and pass. Give at least one example, e.g. parity.randn(4, ...)")
    # A private, writable, C-contiguous copy: the check never writes into the user's array, and a read-only one (a
    # memory-mapped file) would make torch.from_numpy warn, which fails suites that turn warnings into errors.
    return np.array(array, order="C", copy=True)


def for_model_precision(inputs: ModelInputs, weights: dict[str, np.ndarray]) -> ModelInputs:
    """float64 inputs stay float64 for a model whose floating weights are all float64; for any other model they are
    cast to float32 (both frameworks' default), and the result's describe() says so, so no message calls the user's
    float64 input float32."""
    wide = [name for name, a in zip(inputs.names, inputs.arrays) if a.dtype == np.float64]
    floats = [w.dtype for w in weights.values() if np.issubdtype(w.dtype, np.floating)]
    if not wide or (floats and all(dtype == np.float64 for dtype in floats)):
        return inputs
    arrays = tuple(a.astype(np.float32) if a.dtype == np.float64 else a for a in inputs.arrays)
    return ModelInputs(inputs.kind, inputs.names, arrays, tuple(wide))
