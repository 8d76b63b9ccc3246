"""Tiny models and guards for the bad-input battery (tests/e2e/test_bad_input_battery.py).

Copied into every battery session as ``bm.py``. ``guarded_check`` runs ``parity.check`` and, whatever it does (pass,
fail, raise), asserts afterwards that nothing the user handed in was changed: weights, train/eval mode, dtypes,
requires_grad flags, and the input arrays (values, dtype, writeable flag).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def keras_mlp(name: str = "mlp", inputs: int = 6, units: int = 3) -> Any:
    import keras

    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units)], name=name)


def keras_two_inputs() -> Any:
    import keras

    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], out, name="two_inputs")


def torch_mlp(inputs: int = 6, units: int = 3) -> Any:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(inputs, units)).eval()


def _state(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return ("array", obj, obj.copy(), obj.dtype, obj.flags.writeable, obj.strides)
    if isinstance(obj, (list, tuple)):
        return ("seq", obj, list(obj), [_state(item) for item in obj])
    if isinstance(obj, dict):
        return ("dict", obj, dict(obj), {key: _state(value) for key, value in obj.items()})
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return ("torch", obj, {k: v.detach().clone() for k, v in obj.state_dict().items()},
                [(name, m.training) for name, m in obj.named_modules()],
                [(name, p.requires_grad, p.dtype, p.device) for name, p in obj.named_parameters()])
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Layer):
        return ("keras", obj, [(w.path, np.array(w.numpy()), w.trainable, w.dtype) for w in obj.weights],
                obj.trainable, obj.dtype)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(obj, tf.Module):
        return ("tf", obj, [(v.name, v.numpy().copy(), v.trainable, v.dtype) for v in obj.variables])
    return None


def _check(state: Any, where: str) -> None:
    if state is None:
        return
    kind, obj = state[0], state[1]
    if kind == "array":
        _, _, values, dtype, writeable, strides = state
        assert obj.dtype == dtype, f"parity.check changed the dtype of the input array {where}"
        assert obj.flags.writeable == writeable, f"parity.check changed the writeable flag of the input {where}"
        assert obj.strides == strides, f"parity.check changed the strides of the input {where}"
        assert np.array_equal(obj, values, equal_nan=obj.dtype.kind in "fc"), \
            f"parity.check modified the values of the input array {where}"
    elif kind == "seq":
        assert list(obj) == state[2] or len(obj) == len(state[2]), f"parity.check changed the inputs {where}"
        for index, item in enumerate(state[3]):
            _check(item, f"{where}[{index}]")
    elif kind == "dict":
        assert list(obj) == list(state[2]), f"parity.check changed the keys of the inputs {where}"
        for key, item in state[3].items():
            _check(item, f"{where}[{key!r}]")
    elif kind == "torch":
        _, _, tensors, modes, params = state
        now = obj.state_dict()
        assert list(now) == list(tensors), f"parity.check changed the state_dict keys of {where}"
        for name, value in tensors.items():
            assert now[name].dtype == value.dtype, f"parity.check changed the dtype of {where}.{name}"
            assert (now[name].shape == value.shape and bool((now[name].detach() == value).all())) or (
                value.is_floating_point() and bool(now[name].detach().isnan().all() and value.isnan().all())), \
                f"parity.check changed the values of {where}.{name}"
        assert [(name, m.training) for name, m in obj.named_modules()] == modes, \
            f"parity.check changed the train/eval mode of {where}"
        assert [(name, p.requires_grad, p.dtype, p.device) for name, p in obj.named_parameters()] == params, \
            f"parity.check changed requires_grad/dtype/device of the parameters of {where}"
    elif kind == "keras":
        _, _, weights, trainable, dtype = state
        now = {w.path: w for w in obj.weights}
        for path, value, was_trainable, weight_dtype in weights:
            assert path in now, f"parity.check removed the weight {path} of {where}"
            assert now[path].dtype == weight_dtype, f"parity.check changed the dtype of {path} of {where}"
            assert now[path].trainable == was_trainable, f"parity.check changed trainable of {path} of {where}"
            assert np.array_equal(np.array(now[path].numpy()), value), f"parity.check changed {path} of {where}"
        assert obj.trainable == trainable and obj.dtype == dtype, f"parity.check changed {where}.trainable/dtype"
    elif kind == "tf":
        now = {v.name: v for v in obj.variables}
        for name, value, _trainable, _dtype in state[2]:
            assert np.array_equal(now[name].numpy(), value), f"parity.check changed the variable {name} of {where}"


def snapshot(**objects: Any) -> dict[str, Any]:
    return {name: _state(obj) for name, obj in objects.items()}


def assert_unchanged(states: dict[str, Any]) -> None:
    for name, state in states.items():
        _check(state, name)


def guarded_check(parity: Any, source: Any, target: Any = None, *, inputs: Any, **overrides: Any) -> Any:
    """parity.check, then: the models and inputs are exactly as they were handed in."""
    states = snapshot(source=source, target=target, inputs=inputs)
    try:
        return parity.check(source, target, inputs=inputs, **overrides)
    finally:
        assert_unchanged(states)
