"""One side of a training check, per framework: the user's optimizer (a fresh copy with its settings), the user's loss,
a standard training step (or the user's own), the model's state, and the settings the configuration diff reads.

Both sides expose the same small interface (``TrainingSide``); numpy crosses between them, nothing else.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pytest_parity.errors import ParityUsageError, error_summary
from pytest_parity.frameworks import ModelInputs

TrainStep = Callable[[Any, Any, Any, Any, Any], Any]


@dataclass(frozen=True)
class BatchNormSettings:
    """A BatchNormalization layer's conventions, in the torch convention for momentum (the weight of the batch)."""

    layer: str
    momentum: float | None  # None: torch's cumulative average (momentum=None)
    epsilon: float
    # False: the layer normalises with its moving statistics and leaves them alone while training (Keras
    # trainable=False, a torch module kept in eval mode or built with track_running_stats=False).
    updates_statistics: bool


@dataclass
class OptimizerSettings:
    """An optimizer's settings in neutral terms (see configuration.py for how the two frameworks' names map here)."""

    kind: str                       # the class name: SGD, Adam, AdamW, RMSprop, Adagrad, ...
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LossSettings:
    kind: str                       # the class name, or "callable"
    values: dict[str, Any] = field(default_factory=dict)


class TrainingSide(Protocol):
    framework: str
    description: str

    def step(self, inputs: ModelInputs, labels: np.ndarray, device: str) -> float: ...
    def forward_training(self, inputs: ModelInputs, device: str) -> list[np.ndarray]: ...
    def state(self) -> dict[str, np.ndarray]: ...
    def restore(self, state: dict[str, np.ndarray]) -> None: ...
    def optimizer_settings(self) -> OptimizerSettings: ...
    def loss_settings(self) -> LossSettings: ...
    def batch_norms(self) -> dict[str, BatchNormSettings]: ...
    def trainable(self) -> set[str]: ...
    def l2_regularizers(self) -> dict[str, float]: ...
    def custom_step(self) -> bool: ...
    def used_settings(self, step: int) -> OptimizerSettings: ...
    def decoupled_decay(self) -> dict[str, float]: ...
    def weight_decay_of(self) -> dict[str, float]: ...
    def trainable_in_optimizer(self) -> set[str]: ...
    def batch_norm_elements_of(self, layer: str) -> int | None: ...
    def adapter_trainable(self) -> list[str]: ...
    def batch_norms_in_inference(self) -> set[str]: ...
    def has_embeddings(self) -> bool: ...
    role: str


def _step_failure(side: str, description: str, error: BaseException, custom: bool) -> ParityUsageError:
    what = "your train_step" if custom else "the standard training step (forward in training mode, loss, gradients, " \
                                            "optimizer step)"
    return ParityUsageError(f"Training the {side} ({description}) failed in {what} with {error_summary(error)}. Check "
                            f"that loss= takes this model's outputs and the labels of batches=, and that optimizer= "
                            f"fits this model")


# ----------------------------------------------------------------------------------------------------------------
# Keras / TensorFlow
# ----------------------------------------------------------------------------------------------------------------


class _AdapterState:
    """What both sides read and write through their framework adapter: every variable (weights and statistics) by
    the check's names, and which are trainable."""

    adapter: Any

    def state(self) -> dict[str, np.ndarray]:
        return self.adapter.weights()

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.adapter.assign_weights(state)

    def trainable(self) -> set[str]:
        return set(self.adapter.trainable_names())

    def adapter_trainable(self) -> list[str]:
        return list(self.adapter.trainable_names())


class KerasSide(_AdapterState):
    framework = "tensorflow"

    def __init__(self, adapter: Any, role: str, optimizer: Any, loss: Any, train_step: TrainStep | None) -> None:
        import keras

        self.adapter, self.role = adapter, role
        self.tf = adapter.tf
        self.model = adapter.model
        self.description = adapter.description
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ParityUsageError(
                f"optimizer= for the {role} ({self.description}) must be a Keras optimizer instance, for example "
                f"keras.optimizers.Adam(1e-3); got {type(optimizer).__module__}.{type(optimizer).__qualname__}")
        # A fresh optimizer with the user's settings: the user's own instance (its step count, its slots) is left
        # untouched, and both sides start from step 0.
        try:
            self.optimizer = type(optimizer).from_config(optimizer.get_config())
        except Exception as error:
            raise ParityUsageError(f"optimizer= for the {role}: {type(optimizer).__name__} could not be "
                                   f"copied from its get_config() ({error_summary(error)}); pass an optimizer built "
                                   f"from a config") \
                from None
        self.loss = loss
        self.train_step = train_step
        # The optimizer's settings as each update starts (a LearningRateSchedule moves the learning rate; a train_step
        # may set epsilon per step before it applies the gradients): read where apply_gradients applies them.
        self._used: list[OptimizerSettings] = []
        apply = self.optimizer.apply

        def apply_recording_settings(*args: Any, **kwargs: Any) -> Any:
            self._used.append(self.optimizer_settings())
            return apply(*args, **kwargs)

        self.optimizer.apply = apply_recording_settings

    def custom_step(self) -> bool:
        return self.train_step is not None

    def used_settings(self, step: int) -> OptimizerSettings:
        return self._used[step - 1] if len(self._used) >= step else self.optimizer_settings()

    def batch_norm_elements_of(self, layer: str) -> int | None:
        return None

    def batch_norms_in_inference(self) -> set[str]:
        return set()

    def has_embeddings(self) -> bool:
        import keras

        return self.adapter.is_keras and any(isinstance(layer, keras.layers.Embedding) for layer in
                                             self.model._flatten_layers(include_self=False, recursive=True))

    def weight_decay_of(self) -> dict[str, float]:
        return {}

    def trainable_in_optimizer(self) -> set[str]:
        return self.trainable()

    def decoupled_decay(self) -> dict[str, float]:
        """Variable name -> the decoupled decay the optimizer applies to it (Keras excludes variables by name)."""
        decay = float(self.optimizer.get_config().get("weight_decay") or 0.0)
        if not decay:
            return {}
        use = getattr(self.optimizer, "_use_weight_decay", None)
        found = {}
        for name, variable in self.adapter.variables().items():
            if not getattr(variable, "trainable", False):
                continue
            try:
                applies = bool(use(variable)) if use is not None else True
            except Exception:
                applies = True
            found[name] = decay if applies else 0.0
        return found

    def _variables(self) -> list[Any]:
        return list(self.model.trainable_variables)

    def _call_training(self, inputs: ModelInputs, tensors: list[Any]) -> Any:
        return self.adapter.call(inputs, tensors, training=True)

    def step(self, inputs: ModelInputs, labels: np.ndarray, device: str) -> float:
        from pytest_parity.frameworks.tensorflow import tf_device_name

        tf = self.tf
        try:
            with tf.device(tf_device_name(device)):
                tensors = [tf.constant(a) for a in inputs.arrays]
                y = tf.constant(labels)
                if self.train_step is not None:
                    loss = self.train_step(self.model, self.optimizer, self.loss, _framework_inputs(inputs, tensors),
                                           y)
                    return float(np.asarray(loss))
                variables = self._variables()
                with tf.GradientTape() as tape:
                    outputs = self._call_training(inputs, tensors)
                    loss = self.loss(y, outputs)
                    # model.fit adds the layers' regularization losses (kernel_regularizer=L2(...)) to the loss.
                    regularization = list(getattr(self.model, "losses", []) or [])
                    total = loss + tf.add_n(regularization) if regularization else loss
                gradients = tape.gradient(total, variables)
                self.optimizer.apply_gradients(zip(gradients, variables))
                # The data loss is compared: a torch port expresses an L2 penalty as weight_decay, outside its loss.
                return float(np.asarray(loss))
        except ParityUsageError:
            raise
        except Exception as error:
            raise _step_failure(self.role, self.description, error, self.train_step is not None) from None

    def forward_training(self, inputs: ModelInputs, device: str) -> list[np.ndarray]:
        from pytest_parity.frameworks.tensorflow import tf_device_name
        from pytest_parity.trees import flatten_tree

        tf = self.tf
        with tf.device(tf_device_name(device)):
            outputs = self._call_training(inputs, [tf.constant(a) for a in inputs.arrays])
        return [np.asarray(leaf) for _, leaf in flatten_tree(outputs, "output")]

    def optimizer_settings(self) -> OptimizerSettings:
        optimizer = self.optimizer
        config = optimizer.get_config()
        values: dict[str, Any] = {key: config[key] for key in (
            "beta_1", "beta_2", "epsilon", "amsgrad", "momentum", "nesterov", "rho", "centered",
            "initial_accumulator_value", "clipnorm", "global_clipnorm", "clipvalue") if key in config}
        values["learning_rate"] = float(np.asarray(optimizer.learning_rate))
        values["weight_decay"] = float(config.get("weight_decay") or 0.0)
        return OptimizerSettings(type(optimizer).__name__, values)

    def loss_settings(self) -> LossSettings:
        loss = self.loss
        get_config = getattr(loss, "get_config", None)
        if get_config is None:
            return LossSettings("callable")
        try:
            config = dict(get_config())
        except Exception:
            return LossSettings(type(loss).__name__)
        return LossSettings(type(loss).__name__, {key: config[key] for key in (
            "from_logits", "reduction", "label_smoothing", "ignore_class", "axis") if key in config})

    def batch_norms(self) -> dict[str, BatchNormSettings]:
        import keras

        found: dict[str, BatchNormSettings] = {}
        if not self.adapter.is_keras:
            return found
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                found[layer.path] = BatchNormSettings(layer.path, 1.0 - float(layer.momentum), float(layer.epsilon),
                                                      bool(layer.trainable))
        return found

    def l2_regularizers(self) -> dict[str, float]:
        """Variable name -> the L2 coefficient of its regularizer (Keras adds l * sum(w**2) to the loss)."""
        import keras

        found: dict[str, float] = {}
        if not self.adapter.is_keras:
            return found
        names = {id(variable): name for name, variable in self.adapter.variables().items()}
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            for attribute, variable_attribute in (("kernel_regularizer", "kernel"), ("bias_regularizer", "bias")):
                regularizer = getattr(layer, attribute, None)
                variable = getattr(layer, variable_attribute, None)
                if regularizer is None or variable is None or id(variable) not in names:
                    continue
                if isinstance(regularizer, (keras.regularizers.L2, keras.regularizers.L1L2)):
                    found[names[id(variable)]] = float(getattr(regularizer, "l2", 0.0))
                    if float(getattr(regularizer, "l1", 0.0) or 0.0):
                        found[names[id(variable)] + " (L1)"] = float(regularizer.l1)
        return found


# ----------------------------------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------------------------------


class TorchSide(_AdapterState):
    framework = "torch"

    def __init__(self, adapter: Any, role: str, optimizer: Any, loss: Any, train_step: TrainStep | None) -> None:
        import torch

        self.torch = torch
        self.adapter, self.role = adapter, role
        self.module = adapter.module
        self.description = adapter.description
        parameters = list(self.module.parameters())
        if isinstance(optimizer, torch.optim.Optimizer):
            mine = {id(p) for p in parameters}
            foreign = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in mine]
            if foreign:
                raise ParityUsageError(
                    f"optimizer= for the {role} ({self.description}) optimizes {len(foreign)} tensor(s) that are not "
                    f"this model's parameters (built over another model, or over a copy?). Pass the optimizer built "
                    f"over this model's parameters, or a factory: lambda params: torch.optim.Adam(params, lr=1e-3)")
            self.optimizer = _fresh_torch_optimizer(torch, optimizer)
        elif callable(optimizer):
            try:
                self.optimizer = optimizer(self.module.parameters())
            except Exception as error:
                raise ParityUsageError(f"optimizer= for the {role}: the factory failed on the model's parameters with "
                                       f"{error_summary(error)}; it must take them and return a torch optimizer, "
                                       f"for example lambda params: torch.optim.Adam(params, lr=1e-3)") from None
            if not isinstance(self.optimizer, torch.optim.Optimizer):
                raise ParityUsageError(f"optimizer= for the {role}: the factory returned "
                                       f"{type(self.optimizer).__qualname__}, not a torch.optim.Optimizer")
        else:
            raise ParityUsageError(
                f"optimizer= for the {role} ({self.description}) must be a torch optimizer over its parameters or a "
                f"factory params -> optimizer, for example lambda params: torch.optim.Adam(params, lr=1e-3); got "
                f"{type(optimizer).__module__}.{type(optimizer).__qualname__}")
        self.loss = loss
        self.train_step = train_step
        # Elements per channel each BatchNorm saw in the last training step (its running variance is the unbiased
        # batch variance, n / (n - 1) times the biased one).
        self.batch_norm_elements: dict[str, int] = {}
        # BatchNorms that ran in inference mode during a training step.
        self._in_inference: set[str] = set()
        self._parameter_names = {id(p): name for name, p in self.module.named_parameters()}
        # The settings each optimizer.step() ran with, read as it starts: a train_step may set lr or eps per step.
        self._used: list[OptimizerSettings] = []
        self.optimizer.register_step_pre_hook(lambda *_: self._used.append(self.optimizer_settings()))

    def custom_step(self) -> bool:
        return self.train_step is not None

    def used_settings(self, step: int) -> OptimizerSettings:
        return self._used[step - 1] if len(self._used) >= step else self.optimizer_settings()

    def batch_norm_elements_of(self, layer: str) -> int | None:
        return self.batch_norm_elements.get(layer)

    def batch_norms_in_inference(self) -> set[str]:
        return set(self._in_inference)

    def has_embeddings(self) -> bool:
        return False

    def decoupled_decay(self) -> dict[str, float]:
        return {}

    def _batch_norm_modules(self) -> dict[str, Any]:
        norm = self.torch.nn.modules.batchnorm._BatchNorm
        return {name: module for name, module in self.module.named_modules() if isinstance(module, norm)}

    def _watch_batch_norms(self) -> list[Any]:
        def hook_for(name: str) -> Callable[..., None]:
            def record(module: Any, args: tuple[Any, ...]) -> None:
                tensor = args[0]
                self.batch_norm_elements[name] = int(tensor.numel() // tensor.shape[1])
                if not module.training:
                    self._in_inference.add(name)  # eval() after model.train(), or a train() override
            return record

        return [module.register_forward_pre_hook(hook_for(name)) for name, module in self._batch_norm_modules().items()]

    def step(self, inputs: ModelInputs, labels: np.ndarray, device: str) -> float:
        module = self.module
        module.to(device)
        module.train()
        hooks = self._watch_batch_norms()
        try:
            with _no_cuda_initialization_warning():
                return self._step(inputs, labels, device)
        finally:
            for hook in hooks:
                hook.remove()

    def _step(self, inputs: ModelInputs, labels: np.ndarray, device: str) -> float:
        torch = self.torch
        module = self.module
        try:
            tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.arrays]
            y = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
            if self.train_step is not None:
                loss = self.train_step(module, self.optimizer, self.loss, _framework_inputs(inputs, tensors), y)
                return float(loss.detach().cpu()) if torch.is_tensor(loss) else float(loss)
            args, kwargs = self.adapter.arguments(inputs, tensors)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                outputs = module(*args, **kwargs)
                loss = self.loss(outputs, y)
                loss.backward()
            self.optimizer.step()
            return float(loss.detach().cpu())
        except ParityUsageError:
            raise
        except Exception as error:
            raise _step_failure(self.role, self.description, error, self.train_step is not None) from None

    def forward_training(self, inputs: ModelInputs, device: str) -> list[np.ndarray]:
        from pytest_parity.trees import flatten_tree

        torch = self.torch
        self.module.to(device)
        self.module.train()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in inputs.arrays]
        args, kwargs = self.adapter.arguments(inputs, tensors)
        with torch.no_grad(), _no_cuda_initialization_warning():
            outputs = self.module(*args, **kwargs)
        return [leaf.detach().cpu().numpy() for _, leaf in flatten_tree(outputs, "output")]

    def optimizer_settings(self) -> OptimizerSettings:
        optimizer = self.optimizer
        group = optimizer.param_groups[0]
        values: dict[str, Any] = {key: group[key] for key in (
            "lr", "betas", "eps", "weight_decay", "amsgrad", "momentum", "dampening", "nesterov", "alpha", "centered",
            "initial_accumulator_value", "lr_decay", "maximize", "decoupled_weight_decay") if key in group}
        if len(optimizer.param_groups) > 1:
            # Per-group settings: weight decay per parameter is what ports most often split (no decay on biases).
            values["groups"] = [{key: value for key, value in g.items() if key != "params"} | {
                "params": [self._parameter_names.get(id(p), "?") for p in g["params"]]} for g in optimizer.param_groups]
        return OptimizerSettings(type(optimizer).__name__, values)

    def loss_settings(self) -> LossSettings:
        loss = self.loss
        if not isinstance(loss, self.torch.nn.Module):
            return LossSettings("callable")
        values = {key: getattr(loss, key) for key in ("reduction", "label_smoothing", "ignore_index")
                  if hasattr(loss, key)}
        if getattr(loss, "weight", None) is not None:
            values["weight"] = "set"
        return LossSettings(type(loss).__name__, values)

    def batch_norms(self) -> dict[str, BatchNormSettings]:
        found = {}
        for name, module in self._batch_norm_modules().items():
            found[name] = BatchNormSettings(
                name, None if module.momentum is None else float(module.momentum), float(module.eps),
                bool(module.track_running_stats and module.running_mean is not None))
        return found

    def weight_decay_of(self) -> dict[str, float]:
        """Parameter name -> the weight_decay of its param group."""
        return {self._parameter_names.get(id(p), "?"): float(group.get("weight_decay", 0.0) or 0.0)
                for group in self.optimizer.param_groups for p in group["params"]}

    def trainable_in_optimizer(self) -> set[str]:
        return {self._parameter_names.get(id(p), "?") for group in self.optimizer.param_groups for p in group["params"]}

    def l2_regularizers(self) -> dict[str, float]:
        return {}


@contextlib.contextmanager
def _no_cuda_initialization_warning() -> Iterator[None]:
    """The CUDA build of torch on a machine without a driver warns "CUDA initialization: ..." at its first backward
    pass or CUDA query; it says nothing about the model and would fail suites that turn warnings into errors (as the
    forward checks' runs filter it, frameworks/torch.py)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
        yield


def _fresh_torch_optimizer(torch: Any, optimizer: Any) -> Any:
    """A new optimizer of the user's class with the user's param groups and settings, and no state: the user's own
    instance keeps its step count and moments."""
    groups = [dict(group) for group in optimizer.param_groups]
    try:
        return type(optimizer)(groups, **optimizer.defaults)
    except TypeError:
        return type(optimizer)(groups)


def _framework_inputs(inputs: ModelInputs, tensors: list[Any]) -> Any:
    """The inputs as a train_step receives them: one tensor, a dict by name, or a tuple."""
    if inputs.kind == "single":
        return tensors[0]
    if inputs.kind == "named":
        return dict(zip(inputs.names, tensors))
    return tuple(tensors)


def make_side(adapter: Any, role: str, optimizer: Any, loss: Any, train_step: TrainStep | None) -> TrainingSide:
    if adapter.framework == "tensorflow":
        return KerasSide(adapter, role, optimizer, loss, train_step)
    return TorchSide(adapter, role, optimizer, loss, train_step)
