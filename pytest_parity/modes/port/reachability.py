"""Layers that run but do not reach the compared outputs: found on each side, left out of the pairing, named unused.

A model often computes more than its port is checked on: keras-hub's BertBackbone runs its pooler on every call, while
the output compared is the sequence output (a transformers BertModel built with add_pooling_layer=False has no pooler).
Such a layer has no counterpart to pair with and no influence to compare: refusing the port for it is a false failure,
and dropping it silently would claim more than was checked. So when the two models' layers do not pair, each side's
parametrised layers are perturbed one at a time (seeded noise larger than the layer's output added to it on a forward
run); a layer whose perturbation leaves every compared output bit-identical does not reach them on these inputs. Those
layers are taken out of the pairing on their side, and they and their weights are named as unused.

Forward perturbation, not the autograd graph: a layer that reaches the outputs only through a detach() or a no_grad
block still changes them, so it still pairs, and its missing gradient is for the comparison to catch. A model whose two
unperturbed runs differ (non-deterministic) tells nothing this way: nothing is left out.

A layer left out on one side whose counterpart is used on the other (a pooler in the compared output of one model only)
still leaves the layers unpaired: the refusal then names what was left out on each side, so the difference shows.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from pytest_parity import trees
from pytest_parity.frameworks import ModelAdapter, ModelInputs
from pytest_parity.modes.port.io_names import OutputNames, outputs_by_name
from pytest_parity.modes.port.ops import ModelStructure, ParamOp

# How ModelStructure.unused says why a layer that runs is left out (after "layer 'name' ").
NOT_REACHING = "runs, but its output does not reach the compared outputs"

# The compared output leaves of one forward run, with the named layers' outputs perturbed.
Probe = Callable[[frozenset[str]], list[np.ndarray]]


def noise_like(shape: tuple[int, ...], scale: float, layer: str) -> np.ndarray:
    """Seeded noise several times larger than the output it is added to: no downstream op (a ReLU, a clip) can absorb
    all of it, so a layer that reaches a compared output changes it."""
    rng = np.random.default_rng(zlib.crc32(layer.encode()))
    return (rng.standard_normal(shape) * 4.0 * (1.0 + scale)).astype(np.float32)


def _run_perturbed(adapter: ModelAdapter, inputs: ModelInputs, device: str, layers: frozenset[str]) -> Any:
    if adapter.framework == "tensorflow":
        from pytest_parity.modes.port import keras_layers

        return keras_layers.run_perturbed(adapter, inputs, device, layers, noise_like)
    from pytest_parity.modes.port import torch_layers

    return torch_layers.run_perturbed(adapter, inputs, device, layers, noise_like)


def compared_leaves(tree: Any, keys: Collection[str] | None) -> list[np.ndarray]:
    """The output leaves under the top-level outputs ``keys`` (None: all of them)."""
    named = outputs_by_name(tree)
    return [np.asarray(leaf) for key, value in named.items() if keys is None or key in keys
            for _, leaf in trees.flatten_tree(value, "")]


def _same(first: list[np.ndarray], second: list[np.ndarray]) -> bool:
    return len(first) == len(second) and all(a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                                             for a, b in zip(first, second))


def owner_of(op: ParamOp, structure: ModelStructure) -> str:
    """The recorded call (module, layer) an op belongs to: itself, or the module of "attn[query]", "lstm[layer 1]"."""
    return next((call.layer for call in structure.calls if call.layer is not None
                 and (op.layer == call.layer or op.layer.startswith(call.layer + "["))), op.layer)


def unreached_layers(structure: ModelStructure, probe: Probe, outputs: str) -> dict[str, str]:
    """The parametrised layers of ``structure`` whose perturbation changes none of the compared outputs (named in
    ``outputs`` for the reason), each with the reason."""
    owners = list(dict.fromkeys(owner_of(op, structure) for op in structure.ops))
    if not owners:
        return {}
    baseline = probe(frozenset())
    if not baseline or not _same(baseline, probe(frozenset())):
        return {}  # no compared output, or a model that is not deterministic: no perturbation can be told apart
    return {layer: (f"{NOT_REACHING} ({outputs}): perturbing it changed none of them on these inputs, so it takes "
                    f"no part in what is compared and has no counterpart to pair with")
            for layer in owners if _same(baseline, probe(frozenset({layer})))}


def find_unreached(source: ModelAdapter, target: ModelAdapter, inputs: ModelInputs, target_inputs: ModelInputs,
                   device: str, source_structure: ModelStructure, target_structure: ModelStructure,
                   output_names: OutputNames | None) -> tuple[dict[str, str], dict[str, str]]:
    """The layers of each side (source, target) that do not reach the outputs the check compares: all of the
    source's but those output_names= maps to None, and the target's that output_names= reads (all without it)."""
    def source_probe_tree(layers: frozenset[str]) -> Any:
        return _run_perturbed(source, inputs, device, layers)

    source_keys: list[str] | None = None
    target_keys: list[str] | None = None
    if output_names is not None:
        source_keys = output_names.source_keys_compared(source_probe_tree(frozenset()))
        target_keys = [output_names.to_target.get(key, key) for key in source_keys]
    source_unreached = unreached_layers(
        source_structure, lambda layers: compared_leaves(source_probe_tree(layers), source_keys),
        _outputs_text(source_keys))
    target_unreached = unreached_layers(
        target_structure,
        lambda layers: compared_leaves(_run_perturbed(target, target_inputs, device, layers), target_keys),
        _outputs_text(target_keys))
    return source_unreached, target_unreached


def _outputs_text(keys: list[str] | None) -> str:
    return "every output" if keys is None else ", ".join(keys) or "none"


def pruned(structure: ModelStructure, unreached: dict[str, str]) -> ModelStructure:
    """``structure`` without the ops of the ``unreached`` layers, which it names as unused with their reason."""
    ops = [op for op in structure.ops if owner_of(op, structure) not in unreached]
    return ModelStructure(ops, structure.calls, {**structure.unused, **unreached}, structure.part_calls)


def pruned_text(source_unreached: dict[str, str], target_unreached: dict[str, str]) -> str:
    """For a refusal after pruning: what was left out on each side, and what a one-sided left-out layer means."""
    sides = [f"{side}: {', '.join(map(repr, layers))}" for side, layers in (("source", source_unreached),
                                                                             ("target", target_unreached)) if layers]
    return ("\nLeft out of the pairing because their outputs do not reach the compared outputs (perturbing them "
            "changed none): " + "; ".join(sides) + ". A layer left out on one side whose counterpart above is used on "
            "the other is a real difference (used on one side only): the two models do not compute the compared "
            "outputs alike, or output_names= leaves out an output on one side only")
