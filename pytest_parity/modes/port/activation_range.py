"""Activation range: each paired nonlinearity's two functions compared directly, over a range the inputs need not reach.

The forward comparison sees an activation only where the check's inputs and weights push its pre-activation: a ReLU6
ported as a ReLU agrees while nothing exceeds 6 (random inputs rarely do), exact and tanh-approximate GELU agree within
float32 tolerance while |x| stays small (a BERT port at std-0.02 weights). Scaling the inputs to reach further is not
sound (it changes every layer, and saturates softmaxes and normalisations on the way), so the two sides' activation
functions are compared as functions instead:
- each side is run once more with its activations recorded in call order, with the range of values each received
  (torch: every module and functional call through a TorchFunctionMode; Keras: activation layers and the activation
  built into a Dense/Conv, which keras_layers records before it is applied);
- activations are paired between the sides within the same stretch of the model (after the same pair of parametrised
  layers, in call order);
- each pair's two functions, each evaluated by its own framework, are compared on a grid covering [-1000, 1000]
  (dense on [-10, 10]) plus the range observed on both sides, at the check's atol/rtol: the functions must agree at
  least as tightly as the model's outputs must. A difference fails the check naming both layers and the cause (the
  function each side computes is recognised from its values: a clip, a slope, an alpha, an approximation).
Activations seen on one side only (a functional the other side's recording cannot see, such as keras.ops or tf.nn
inside a custom call) cannot be compared as functions; where the range the inputs reached does not tell the function
apart from the variant a port commonly confuses it with, the result says so in a note (a visible partial).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_parity.frameworks import ModelAdapter, ModelInputs
from pytest_parity.modes.port.transfer import TransferPlan
from pytest_parity.result import ActivationFigures, ActivationProbe
from pytest_parity.verdict import compare

# torch functions (and Tensor methods) that compute an elementwise nonlinearity, by name. nn.ReLU6 calls hardtanh,
# nn.GELU gelu, and so on: recording functions sees modules and functionals alike.
TORCH_ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "gelu", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu",
    "selu_", "celu", "celu_", "silu", "mish", "softplus", "hardsigmoid", "hardswish", "sigmoid", "sigmoid_", "tanh",
    "tanh_", "logsigmoid", "softsign", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max", "rrelu",
})
# Keras activations that do not act elementwise (or do nothing): not probed. Any other function given as a layer's
# activation (a string's function, a lambda, keras.activations.gelu with approximate=True bound) is.
KERAS_NOT_ELEMENTWISE = frozenset({"linear", "softmax", "log_softmax", "sparsemax", "glu"})
KERAS_ACTIVATION_LAYERS = frozenset({"ReLU", "LeakyReLU", "ELU", "Activation"})

# The probe grid: dense where activations bend (|x| <= 10), sparse out to 1000 for a clip at a large bound.
DENSE_RANGE = 10.0
FAR_RANGE = 1000.0


def probe_grid(observed: tuple[float, float] | None = None) -> np.ndarray:
    far = np.geomspace(DENSE_RANGE, FAR_RANGE, 64)
    parts = [np.linspace(-DENSE_RANGE, DENSE_RANGE, 4001), far, -far]
    if observed is not None and all(math.isfinite(v) for v in observed):
        parts.append(np.linspace(observed[0], observed[1], 257))
    return np.unique(np.concatenate(parts).astype(np.float32))


@dataclass
class Site:
    """One activation of one side: where it runs, what it is called, the values it received, and its function."""

    label: str
    segment: int  # index of the plan pair whose op ran last before it (-1: before any)
    low: float
    high: float
    evaluate: Callable[[np.ndarray], np.ndarray]
    calls: int = 1

    def widen(self, low: float, high: float) -> None:
        self.low, self.high, self.calls = min(self.low, low), max(self.high, high), self.calls + 1


@dataclass
class Sites:
    sites: list[Site] = field(default_factory=list)
    # Why this side's activations could not be seen at all (a tf.Module of raw variables), else None.
    unseen: str | None = None

    def add(self, label: str, segment: int, values: np.ndarray | None,
            evaluate: Callable[[np.ndarray], np.ndarray]) -> None:
        if values is None or values.size == 0 or not np.issubdtype(values.dtype, np.floating):
            return
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return
        low, high = float(finite.min()), float(finite.max())
        for site in self.sites:
            if site.label == label and site.segment == segment:
                site.widen(low, high)  # a module called again (a loop, a shared block): one function, wider range
                return
        self.sites.append(Site(label, segment, low, high, evaluate))


def _segments(plan: TransferPlan, side: str) -> dict[str, int]:
    """Layer name (without the [part] suffix) -> the last pair index its ops have on this side."""
    found: dict[str, int] = {}
    for index, pair in enumerate(plan.pairs):
        op = pair.source if side == "source" else pair.target
        found[op.layer.split("[", 1)[0]] = index
    return found


# -- torch -----------------------------------------------------------------------------------------------------------

def _torch_value_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _torch_sites(adapter: Any, inputs: ModelInputs, device: str, segments: dict[str, int]) -> Sites:
    import torch
    from torch.overrides import TorchFunctionMode

    module = adapter.module
    paths = {id(m): name for name, m in module.named_modules()}
    running: list[Any] = []  # modules whose forward is running, innermost last
    segment = [-1]
    sites = Sites()

    class Recording(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if name in TORCH_ACTIVATIONS and args and torch.is_tensor(args[0]) and args[0].is_floating_point():
                _record_call(func, name, args, kwargs)
            return func(*args, **kwargs)

    def _record_call(func: Any, name: str, args: Any, kwargs: dict[str, Any]) -> None:
        values = args[0].detach().float().cpu().numpy()
        rest = tuple(args[1:])
        options = {key: value for key, value in kwargs.items() if key != "inplace"}
        where = running[-1] if running else module
        path = paths.get(id(where), "") or type(module).__name__
        in_activation_module = where is not module and type(where).__module__ == "torch.nn.modules.activation"
        if in_activation_module:
            label = f"{path} ({where!r})"
        else:
            shown = ", ".join([*(_torch_value_text(a) for a in rest), *(f"{k}={_torch_value_text(v)}"
                                                                       for k, v in options.items())])
            label = f"{path} ({name}({'x' + (', ' + shown if shown else '')}) in its forward)"
        target_device = args[0].device

        def evaluate(grid: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                tensor = torch.from_numpy(np.ascontiguousarray(grid)).to(target_device)
                return func(tensor, *rest, **options).detach().float().cpu().numpy()

        sites.add(label, segment[0], values, evaluate)

    def before(mod: Any, _args: Any) -> None:
        running.append(mod)

    def after(mod: Any, _args: Any, _output: Any) -> None:
        if running and running[-1] is mod:
            running.pop()
        path = paths.get(id(mod))
        if path is not None and path in segments:
            segment[0] = max(segment[0], segments[path])

    handles = [m.register_forward_pre_hook(before) for m in module.modules()]
    handles += [m.register_forward_hook(after) for m in module.modules()]
    try:
        with Recording():
            adapter.run(inputs, device, None)
    finally:
        for handle in handles:
            handle.remove()
    return sites


# -- Keras -----------------------------------------------------------------------------------------------------------

def _keras_function_name(function: Any) -> str:
    return str(getattr(function, "__name__", type(function).__name__))


def _keras_layer_text(layer: Any) -> str:
    config = layer.get_config()
    kind = type(layer).__name__
    if kind == "Activation":
        return f"Activation({_keras_function_name(layer.activation)!r})"
    shown = {key: config[key] for key in ("max_value", "negative_slope", "threshold", "alpha") if key in config}
    return f"{kind}({', '.join(f'{key}={value}' for key, value in shown.items())})"


def _keras_sites(adapter: Any, inputs: ModelInputs, device: str, segments: dict[str, int]) -> Sites:
    if not hasattr(adapter.model, "_flatten_layers"):
        return Sites(unseen=f"{adapter.description} has no Keras layers (raw tf.Variables), so its activations "
                            f"cannot be seen")
    import tensorflow as tf

    from pytest_parity.modes.port import keras_layers

    sites = Sites()
    segment = [-1]
    leaves = keras_layers.leaf_layers(adapter.model)
    # Keras gives weightless layers no path (layer.path is None): they are named by their own name.
    names = {id(layer): layer.path or layer.name for layer in leaves}
    wrapped: list[tuple[Any, str, Any]] = []  # (layer, attribute, what its instance held before)

    def wrap_call(layer: Any) -> Callable[..., Any]:
        original = layer.call

        def recording_call(*args: Any, **kwargs: Any) -> Any:
            if type(layer).__name__ in KERAS_ACTIVATION_LAYERS and args:
                sites.add(f"{names[id(layer)]} ({_keras_layer_text(layer)})", segment[0], _numpy(args[0]),
                          _keras_evaluator(tf, layer))
            output = original(*args, **kwargs)
            if names[id(layer)] in segments:
                segment[0] = max(segment[0], segments[names[id(layer)]])
            return output

        return recording_call

    def wrap_activation(layer: Any, function: Any) -> Callable[..., Any]:
        # The activation built into a Dense/Conv runs inside its call, after its op: its segment is the op's own.
        def recording_activation(x: Any) -> Any:
            sites.add(f"{names[id(layer)]} ({type(layer).__name__}, activation="
                      f"{_keras_function_name(function)!r})", segments.get(names[id(layer)], segment[0]),
                      _numpy(x), _keras_evaluator(tf, function))
            return function(x)

        return recording_activation

    for layer in leaves:
        if type(layer).__name__ == "Activation" and \
                _keras_function_name(layer.activation) in KERAS_NOT_ELEMENTWISE:
            continue
        wrapped.append((layer, "call", layer.__dict__.get("call")))
        layer.call = wrap_call(layer)
        function = getattr(layer, "activation", None)
        if type(layer).__name__ in keras_layers.FUSED_ACTIVATION and function is not None and \
                _keras_function_name(function) not in KERAS_NOT_ELEMENTWISE:
            wrapped.append((layer, "activation", function))
            layer.activation = wrap_activation(layer, function)
    try:
        adapter.run(inputs, device, None)
    finally:
        for layer, attribute, before in reversed(wrapped):
            if attribute == "call":
                del layer.call
                if before is not None:
                    layer.call = before
            else:
                layer.activation = before
    return sites


def _numpy(value: Any) -> np.ndarray | None:
    return np.asarray(value.numpy()) if hasattr(value, "numpy") else None


def _keras_evaluator(tf: Any, function: Any) -> Callable[[np.ndarray], np.ndarray]:
    def evaluate(grid: np.ndarray) -> np.ndarray:
        return np.asarray(function(tf.constant(grid)))

    return evaluate


def record_sites(adapter: ModelAdapter, inputs: ModelInputs, device: str, plan: TransferPlan, side: str) -> Sites:
    segments = _segments(plan, side)
    if adapter.framework == "torch":
        return _torch_sites(adapter, inputs, device, segments)
    return _keras_sites(adapter, inputs, device, segments)


# -- what each side computes ---------------------------------------------------------------------------------------

def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _known(x: np.ndarray, y: np.ndarray) -> list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """Candidate functions (family, name, closed form), the parametrised ones with their parameter read off the
    values (a clip's bounds, a leaky slope, an ELU alpha)."""
    at = {float(v): float(w) for v, w in zip(x, y)}
    low, high = at.get(-FAR_RANGE, float(y[0])), at.get(FAR_RANGE, float(y[-1]))
    slope = -at.get(-1.0, 0.0)
    alpha = -at.get(-DENSE_RANGE, 0.0) / (1 - math.exp(-DENSE_RANGE))
    candidates: list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]] = [
        ("identity", "no activation (identity)", lambda v: v),
        ("relu", "ReLU", lambda v: np.maximum(v, 0)),
        ("clip", f"clip to [{low:g}, {high:g}]" + (" (ReLU6)" if (low, high) == (0.0, 6.0) else ""),
         lambda v: np.clip(v, low, high)),
        ("leaky_relu", f"LeakyReLU(negative_slope={slope:.4g})", lambda v: np.where(v > 0, v, slope * v)),
        ("elu", f"ELU(alpha={alpha:.4g})", lambda v: np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0)))),
        ("selu", "SELU", lambda v: SELU_SCALE * np.where(v > 0, v, SELU_ALPHA * np.expm1(np.minimum(v, 0)))),
        ("gelu_exact", "exact GELU (erf)", gelu_exact),
        ("gelu_tanh", "tanh-approximate GELU", gelu_tanh),
        ("sigmoid", "sigmoid", _sigmoid),
        ("hard_sigmoid", "hard sigmoid relu6(x + 3) / 6 (Keras 3, torch)", lambda v: np.clip(v / 6 + 0.5, 0, 1)),
        ("hard_sigmoid_0.2", "hard sigmoid clip(0.2x + 0.5, 0, 1) (tf.keras 2, TF 1)",
         lambda v: np.clip(0.2 * v + 0.5, 0, 1)),
        ("tanh", "tanh", np.tanh),
        ("silu", "SiLU (swish)", lambda v: v * _sigmoid(v)),
        ("hard_swish", "hard swish x * relu6(x + 3) / 6", lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),
        ("softplus", "softplus", _softplus),
        ("mish", "mish", lambda v: v * np.tanh(_softplus(v))),
    ]
    return candidates


def identify(x: np.ndarray, y: np.ndarray) -> tuple[str, str] | None:
    """(family, name) of the known function that computes these values, within float32 rounding; None if none."""
    grid, values = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for family, name, function in _known(grid, values):
            expected = function(grid)
            # float32 evaluation of the same function: a few units in the last place of each value.
            if np.all(np.abs(values - expected) <= 1e-6 + 1e-5 * np.abs(expected)):
                return family, name
    return None


# Variants a port commonly writes for each function; an activation seen on one side only is "exercised" when the
# range its inputs reached tells it from each of them.
TWINS: dict[str, tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...]] = {
    "relu": (("ReLU6", lambda v: np.clip(v, 0, 6)),),
    "clip": (("an unclipped ReLU", lambda v: np.maximum(v, 0)),),
    "gelu_exact": (("tanh-approximate GELU", gelu_tanh),),
    "gelu_tanh": (("exact GELU", gelu_exact),),
    "sigmoid": (("hard sigmoid", lambda v: np.clip(v / 6 + 0.5, 0, 1)),),
    "hard_sigmoid": (("hard sigmoid 0.2x + 0.5", lambda v: np.clip(0.2 * v + 0.5, 0, 1)),),
    "hard_sigmoid_0.2": (("hard sigmoid x/6 + 0.5", lambda v: np.clip(v / 6 + 0.5, 0, 1)),),
    "silu": (("hard swish", lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),),
    "tanh": (("hardtanh", lambda v: np.clip(v, -1, 1)),),
    "softplus": (("ReLU", lambda v: np.maximum(v, 0)),),
}


def _cause(source: tuple[str, str] | None, target: tuple[str, str] | None) -> str:
    """The likely cause and its fix, from what each side computes."""
    if source is None or target is None:
        return ("the two activations compute different functions; make the target's activation the source's "
                "(same function and parameters)")
    (source_family, source_name), (target_family, target_name) = source, target
    families = {source_family, target_family}
    if "clip" in families and families & {"relu", "identity", "leaky_relu", "elu"}:
        clipped = source_name if source_family == "clip" else target_name
        kind = "ReLU6 clips at 6" if "(ReLU6)" in clipped else f"one side clips ({clipped})"
        return (f"{kind}; the other side does not clip. Use ReLU6 on both sides (nn.ReLU6 / torch.clamp(x, 0, 6); "
                f"keras.layers.ReLU(max_value=6) or activation='relu6') or an unclipped ReLU on both")
    if families == {"gelu_exact", "gelu_tanh"}:
        which = "source" if source_family == "gelu_tanh" else "target"
        return (f"GELU approximate='tanh' vs exact: the {which} uses the tanh approximation, the other the exact erf "
                f"form; nn.GELU() and Keras' activation='gelu' (gelu(x, approximate=False)) are exact, "
                f"nn.GELU(approximate='tanh') matches keras.activations.gelu(x, approximate=True)")
    if families == {"leaky_relu"}:
        return (f"LeakyReLU negative slope differs: {source_name} vs {target_name} (Keras' LeakyReLU defaults to "
                f"negative_slope=0.3, torch's nn.LeakyReLU to 0.01, tf.nn.leaky_relu to 0.2): set it explicitly on "
                f"both sides")
    if families == {"elu"}:
        return f"ELU alpha differs: {source_name} vs {target_name}: set alpha explicitly on both sides"
    if families == {"hard_sigmoid", "hard_sigmoid_0.2"}:
        return (f"hard sigmoid definitions differ: {source_name} vs {target_name}; Keras 3's hard_sigmoid and "
                f"nn.Hardsigmoid are relu6(x + 3) / 6, clip(0.2x + 0.5, 0, 1) is tf.keras 2's")
    return f"the source computes {source_name}, the target {target_name}"


def _range_text(low: float, high: float) -> str:
    return f"[{low:.3g}, {high:.3g}]"


def _probe_pair(source: Site, target: Site, atol: float, rtol: float) -> ActivationProbe:
    observed = (min(source.low, target.low), max(source.high, target.high))
    grid = probe_grid(observed)
    expected, actual = source.evaluate(grid), target.evaluate(grid)
    comparison = compare.compare_arrays(f"activation {source.label} / {target.label}", actual, expected,
                                        atol=atol, rtol=rtol)
    cause = None
    if not comparison.passed:
        with np.errstate(invalid="ignore"):
            outside = np.abs(actual.astype(np.float64) - expected) > atol + rtol * np.abs(expected.astype(np.float64))
        differing = grid[outside | ~np.isfinite(actual)]
        reached = bool(np.any((differing >= observed[0]) & (differing <= observed[1]))) if differing.size else True
        where = (f"they differ by up to {comparison.max_abs:.3g} (atol {atol:g} + rtol {rtol:g}) for x in "
                 f"{_range_text(float(differing.min()), float(differing.max()))}" if differing.size else
                 "they differ")
        reach = (f"partly inside the range the check's inputs reached ({_range_text(*observed)})" if reached else
                 f"a range the check's inputs never reached (pre-activations in {_range_text(*observed)}), so the "
                 f"outputs cannot show it")
        cause = (f"activation {source.label} / {target.label}: {where}, {reach}; likely cause: "
                 f"{_cause(identify(grid, expected), identify(grid, actual))}")
    return ActivationProbe(source=source.label, target=target.label, source_range=(source.low, source.high),
                           target_range=(target.low, target.high), comparison=comparison, cause=cause)


def _not_exercised(site: Site, side: str, atol: float, rtol: float) -> str | None:
    """A note when the range an unpaired activation received does not tell it from a variant a port confuses it
    with; None when it does, or when the function is not one with such a variant."""
    found = identify(probe_grid(), site.evaluate(probe_grid()))
    if found is None or found[0] not in TWINS:
        return None
    observed = np.linspace(site.low, site.high, 513)
    values = site.evaluate(observed.astype(np.float32)).astype(np.float64)
    told_apart = []
    for _name, twin in TWINS[found[0]]:
        other = twin(observed)
        told_apart.append(bool(np.any(np.abs(values - other) > atol + rtol * np.abs(values))))
    if all(told_apart):
        return None
    confused = " or ".join(name for (name, _), apart in zip(TWINS[found[0]], told_apart) if not apart)
    return (f"activation range not exercised: {site.label} on the {side} ({found[1]}) has no counterpart the other "
            f"side's recording can see, and its inputs stayed in {_range_text(site.low, site.high)}, where it agrees "
            f"with {confused}: a port computing that instead would pass. Make the other side's activation a module "
            f"or layer (nn.ReLU6, keras.layers.ReLU(...), an activation= argument) so it can be compared as a "
            f"function")


def probe(plan: TransferPlan, source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs,
          target_inputs: ModelInputs, device: str, atol: float, rtol: float) -> ActivationFigures:
    """Record both sides' activations, pair them, compare each pair as functions (see the module docstring)."""
    started = time.perf_counter()
    sides = (record_sites(source, inputs, device, plan, "source"),
             record_sites(target, target_inputs, device, plan, "target"))
    probes: list[ActivationProbe] = []
    notes: list[str] = []
    segments = sorted({site.segment for side in sides for site in side.sites})
    for segment in segments:
        ours = [site for site in sides[0].sites if site.segment == segment]
        theirs = [site for site in sides[1].sites if site.segment == segment]
        if len(ours) == len(theirs):
            probes.extend(_probe_pair(a, b, atol, rtol) for a, b in zip(ours, theirs))
            continue
        # A different count in one stretch is a missing or extra activation (the forward comparison's to find) or a
        # functional one side cannot see: nothing to pair by, so each is judged on its own range.
        for side, sites in (("source", ours), ("target", theirs)):
            notes.extend(note for note in (_not_exercised(site, side, atol, rtol) for site in sites) if note)
    return ActivationFigures(probes=probes, not_exercised=notes, probe_s=time.perf_counter() - started,
                             unseen=[text for text in (sides[0].unseen, sides[1].unseen) if text])
