"""TensorFlow/Keras adapter: Keras 3 models and layers (Sequential, functional, subclassed) and plain tf.Module models.

Everything TensorFlow is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pytest_parity import import_guard
from pytest_parity.errors import FrameworkNotInstalled
from pytest_parity.frameworks import (
    ModelInputs,
    devices,
    onnx_input_name,
    split_gradients,
    startup_logs,
    tensor_outputs,
)
from pytest_parity.trees import flatten_tree, rebuild_sequence, unflatten_like


def import_tensorflow() -> Any:
    import_guard.install_guard()
    # TensorFlow prints C++ INFO lines (oneDNN, CPU features) on import; keep a user's own choice if they made one.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if devices.tensorflow_configured():
        import tensorflow as tf

        return tf
    # The import and the first device enumeration (configure_tensorflow) print start-up notices on file descriptor 2
    # ("failed call to cuInit" without a GPU); see startup_logs.
    with startup_logs.quiet_startup():
        try:
            import tensorflow as tf
        except ImportError as error:
            raise FrameworkNotInstalled("tensorflow", "tensorflow", error) from error
        devices.configure_tensorflow(tf)
    return tf


def tf_device_name(device: str) -> str:
    return "/GPU:0" if device == "cuda" else "/CPU:0"


def _is_keras(model: Any) -> bool:
    return any(cls.__module__.split(".")[0] in ("keras", "tf_keras") for cls in type(model).__mro__)


RECURRENT_LAYERS = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}
# Names of the graph inputs that carry weights in an export with weights_as_inputs (they become initializers).
WEIGHT_INPUT_PREFIX = "parity_weight_"


class TensorFlowModel:
    framework = "tensorflow"

    def __init__(self, model: Any) -> None:
        self.tf = import_tensorflow()
        self.model = model
        self.is_keras = _is_keras(model)
        self.is_functional = any(cls.__name__ == "Functional" for cls in type(model).__mro__)
        self._variables = self._named_variables()
        kind = type(model).__name__
        name = getattr(model, "name", None)
        self.description = f"{'Keras' if self.is_keras else 'TensorFlow'} {kind}" + (f" {name!r}" if name else "")
        # Outputs the last run left out of the comparison (not tensors), as 'path (type)'; see tensor_outputs.
        self.left_out_outputs: list[str] = []

    # -- weights -----------------------------------------------------------------------------------------------
    def _named_variables(self) -> dict[str, Any]:
        tf = self.tf
        named: dict[str, Any] = {}
        if self.is_keras:
            pairs = [(getattr(v, "path", None) or v.name, v) for v in self.model.weights]
        elif isinstance(self.model, tf.Module):
            # Attribute paths ("W1", "layers/0/kernel") name low-level variables better than their ":0" names, which
            # are often all "Variable:0".
            found = self.model._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)
            pairs = [("/".join(str(p) for p in path), v) for path, v in found]
        else:
            pairs = []
        seen: set[int] = set()
        for name, variable in pairs:
            if id(variable) in seen or not tf.as_dtype(variable.dtype).is_floating:
                continue
            seen.add(id(variable))
            unique = name
            suffix = 2
            while unique in named:
                unique, suffix = f"{name}#{suffix}", suffix + 1
            named[unique] = variable
        return named

    def build(self, inputs: ModelInputs, device: str) -> None:
        """A model that has not run yet (a subclassed Keras model, a tf.Module creating variables on first call) has
        no variables to compare, randomize or key the conversion cache on: run it once on the inputs, then read them."""
        if self._variables:
            return  # built (a model without any weight runs once here, which costs one forward pass)
        tf = self.tf
        with tf.device(tf_device_name(device)):
            self._call(inputs, [tf.constant(a) for a in inputs.arrays])
        self._variables = self._named_variables()

    def remember_placement(self) -> Callable[[], None]:
        """Nothing to put back: variables stay where they were created (ops are placed with tf.device), and Keras
        models are called with training=False without changing any state."""
        return lambda: None

    def weights(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(v.numpy()) for name, v in self._variables.items()}

    def trainable_names(self) -> list[str]:
        return [name for name, v in self._variables.items() if v.trainable]

    def assign_weights(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            self._variables[name].assign(value)

    def expected_input_count(self) -> int | None:
        inputs = getattr(self.model, "inputs", None) if self.is_keras else None
        try:
            return len(inputs) if inputs else None
        except TypeError:
            return None

    def expected_inputs(self) -> str | None:
        shape = getattr(self.model, "input_shape", None) if self.is_keras else None
        if shape is None:
            signature = getattr(type(self.model).__dict__.get("__call__"), "input_signature", None)
            if signature:
                return ", ".join(f"{s.dtype.name}{s.shape}" for s in signature)
            return None
        return str(shape)

    # -- running ----------------------------------------------------------------------------------------------
    def variables(self) -> dict[str, Any]:
        """The model's variables by the names the check uses (training reads their regularizers)."""
        return dict(self._variables)

    def call(self, inputs: ModelInputs, tensors: Sequence[Any], *, training: bool = False) -> Any:
        """The model on ``tensors``, in training mode when asked (a training check's steps)."""
        return self._call(inputs, tensors, training=training)

    def _call(self, inputs: ModelInputs, tensors: Sequence[Any],
              weights: tuple[list[Any], list[Any]] | None = None, *, training: bool = False) -> Any:
        """The model on ``tensors``; with ``weights`` (trainable, non-trainable values, in the model's variable order)
        a Keras model computes with those values instead of its variables (Keras' stateless_call)."""
        if inputs.kind == "single":
            args: tuple[Any, ...] = (tensors[0],)
        elif inputs.kind == "named":
            args = (dict(zip(inputs.names, tensors)),)
        elif self.is_functional:
            # A functional model with several inputs takes them as one list, not as positional arguments.
            args = (list(tensors),)
        else:
            args = tuple(tensors)
        if weights is not None:
            outputs, _ = self.model.stateless_call(weights[0], weights[1], *args, training=training)
            return outputs
        if self.is_keras:
            return self.model(*args, training=training)
        return self.model(*args)

    def _sorted_tree(self, tree: Any) -> Any:
        # tf.nest (and so tf2onnx's output order) visits dict keys sorted; mirror that so leaf order agrees.
        if isinstance(tree, Mapping):
            return {key: self._sorted_tree(tree[key]) for key in sorted(tree)}
        if isinstance(tree, (list, tuple)):
            return rebuild_sequence(tree, [self._sorted_tree(v) for v in tree])
        return tree

    def run(self, inputs: ModelInputs, device: str,
            cotangents: list[np.ndarray | None] | Callable[[list[np.ndarray]], list[np.ndarray | None]] | None,
            grad_weights: list[str] | None = None) -> tuple[Any, list[np.ndarray | None] | None,
                                                            dict[str, np.ndarray | None] | None]:
        tf = self.tf
        with tf.device(tf_device_name(device)):
            tensors = [tf.constant(a) for a in inputs.arrays]
            if cotangents is None:
                tree = self._sorted_tree(self._call(inputs, tensors))
                tree, self.left_out_outputs = tensor_outputs(tree, tf.is_tensor, self.description)
                return _to_numpy(tree), None, None
            names = self.trainable_names() if grad_weights is None else grad_weights
            variables = [self._variables[name] for name in names]
            float_inputs = [t for t in tensors if t.dtype.is_floating]
            with tf.GradientTape() as tape:
                tape.watch(float_inputs)
                tree = self._sorted_tree(self._call(inputs, tensors))
                tree, self.left_out_outputs = tensor_outputs(tree, tf.is_tensor, self.description)
                leaves = [leaf for _, leaf in flatten_tree(tree, "output")]
                leaves_np = [np.asarray(leaf.numpy()) for leaf in leaves]
                cots = cotangents(leaves_np) if callable(cotangents) else cotangents
                terms = [tf.reduce_sum(leaf * tf.constant(c, dtype=leaf.dtype))
                         for leaf, c in zip(leaves, cots) if c is not None]
                loss = tf.add_n(terms)
            gradients = tape.gradient(loss, float_inputs + variables)
        input_grads, weight_grads = split_gradients([t.dtype.is_floating for t in tensors], names,
                                                    [_grad_to_numpy(g) for g in gradients])
        # The outputs were already copied to numpy for the cotangents: reuse them.
        return unflatten_like(tree, leaves_np), input_grads, weight_grads

    # -- timing ----------------------------------------------------------------------------------------------
    def speed_call(self, inputs: ModelInputs, device: str, timed: str) -> Callable[[], None]:
        """Timed as a tf.function with a pinned signature, as TensorFlow models run in production (eager Keras
        would add Python dispatch per layer); traced during the timing warm-up, never retraced."""
        tf = self.tf
        with tf.device(tf_device_name(device)):
            tensors = [tf.constant(a) for a in inputs.arrays]
        specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype)) for a in inputs.arrays]

        def synchronise() -> None:
            if device == "cuda":
                tf.test.experimental.sync_devices()

        if timed == "forward":
            @tf.function(input_signature=specs, autograph=False)
            def forward(*arguments: Any) -> Any:
                return tensor_outputs(self._call(inputs, list(arguments)), tf.is_tensor, self.description)[0]

            def run_forward() -> None:
                with tf.device(tf_device_name(device)):
                    forward(*tensors)
                synchronise()

            return run_forward

        variables = [v for v in self._variables.values() if v.trainable]

        @tf.function(input_signature=specs, autograph=False)
        def forward_backward(*arguments: Any) -> Any:
            # The cotangent's values do not change the cost: the sum of the outputs (all-ones cotangent), as in torch.
            float_inputs = [t for t in arguments if t.dtype.is_floating]
            with tf.GradientTape() as tape:
                tape.watch(float_inputs)
                leaves = [leaf for _, leaf in flatten_tree(self._call(inputs, list(arguments)), "output")
                          if tf.is_tensor(leaf)]
                loss = tf.add_n([tf.reduce_sum(leaf) for leaf in leaves if leaf.dtype.is_floating])
            return tape.gradient(loss, float_inputs + variables)

        def run_forward_backward() -> None:
            with tf.device(tf_device_name(device)):
                forward_backward(*tensors)
            synchronise()

        return run_forward_backward

    # -- export ----------------------------------------------------------------------------------------------
    @property
    def can_export_weights_as_inputs(self) -> bool:
        return self.is_keras and hasattr(self.model, "stateless_call")

    @property
    def folds_weights_when_frozen(self) -> bool:
        """A Keras model with a BatchNormalization (Grappler folds it into the layer before it) and no recurrent
        layer (tf2onnx's LSTM/GRU rewriters need frozen weights): exported with its weights as graph inputs at once."""
        if not self.can_export_weights_as_inputs:
            return False
        kinds = {type(layer).__name__ for layer in self.model._flatten_layers(include_self=False)}
        return "BatchNormalization" in kinds and not kinds & RECURRENT_LAYERS

    def to_onnx(self, inputs: ModelInputs, opset: int, weights_as_inputs: bool = False) -> Any:
        """TF -> ONNX through tf2onnx with a static signature (from_keras fails on Keras 3); see tf_export.

        ``weights_as_inputs`` (Keras models): the traced function takes every variable's value as an argument
        (stateless_call) instead of reading the variables, so freezing finds no constant to fold: Grappler cannot fold
        a BatchNormalization into the convolution before it, and each weight reaches the ONNX graph as itself
        (tf_export turns those arguments back into initializers holding the current values)."""
        tf = self.tf
        try:
            import tf2onnx  # noqa: F401 - tf_export imports its parts
        except ImportError as error:
            raise FrameworkNotInstalled("tensorflow", "tf2onnx", error) from error
        from pytest_parity.bridge import tf_export

        specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name=onnx_input_name(name, i))
                 for i, (name, a) in enumerate(zip(inputs.names, inputs.arrays))]

        weight_values: dict[str, np.ndarray] = {}
        weight_specs: list[Any] = []
        split = 0
        if weights_as_inputs:
            variables = [*self.model.trainable_variables, *self.model.non_trainable_variables]
            split = len(self.model.trainable_variables)
            weight_specs = [tf.TensorSpec(v.shape, tf.as_dtype(v.dtype), name=f"{WEIGHT_INPUT_PREFIX}{index}")
                            for index, v in enumerate(variables)]
            weight_values = {spec.name: np.asarray(v.numpy()) for spec, v in zip(weight_specs, variables)}
        count = len(specs)

        # autograph=False: the wrapper has no Python control flow, and AutoGraph warns about lambdas.
        @tf.function(input_signature=[*specs, *weight_specs], autograph=False)
        def forward(*tensors: Any) -> Any:
            values = list(tensors[count:])
            weights = (values[:split], values[split:]) if weights_as_inputs else None
            tree, _ = tensor_outputs(self._call(inputs, list(tensors[:count]), weights), tf.is_tensor,
                                     self.description)
            return self._sorted_tree(tree)

        weight_bytes = sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size for v in self._variables.values())
        tf_export.refuse_if_memory_is_short(weight_bytes, self.description)
        return tf_export.export(tf, forward, [*specs, *weight_specs], opset, weight_values)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return rebuild_sequence(tree, [_to_numpy(v) for v in tree])
    return np.asarray(tree.numpy() if hasattr(tree, "numpy") else tree)


def _grad_to_numpy(gradient: Any) -> np.ndarray | None:
    if gradient is None:
        return None
    if hasattr(gradient, "values") and hasattr(gradient, "indices"):  # IndexedSlices from embeddings / gathers
        import tensorflow as tf

        gradient = tf.convert_to_tensor(gradient)
    return np.asarray(gradient.numpy())
