"""Model inputs and outputs as trees (dicts, lists, tuples, named tuples of tensors): flattened to named leaves and
rebuilt, in one order every step agrees on (dicts in insertion order)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def flatten_tree(tree: Any, path: str) -> list[tuple[str, Any]]:
    """(path, leaf) pairs of a nested tuple/list/dict, e.g. ``output[0]``, ``output['logits']``."""
    if isinstance(tree, Mapping):
        pairs: list[tuple[str, Any]] = []
        for key, value in tree.items():
            pairs.extend(flatten_tree(value, f"{path}[{key!r}]"))
        return pairs
    if isinstance(tree, Sequence) and not isinstance(tree, (str, bytes)):
        pairs = []
        for index, value in enumerate(tree):
            pairs.extend(flatten_tree(value, f"{path}[{index}]"))
        return pairs
    return [(path, tree)]


def unflatten_like(structure: Any, leaves: Sequence[Any]) -> Any:
    """Put a flat list of leaves back into the nesting of ``structure`` (inverse of ``flatten_tree``'s order)."""
    iterator = iter(leaves)

    def build(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {key: build(value) for key, value in node.items()}
        if isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            return rebuild_sequence(node, [build(value) for value in node])
        return next(iterator)

    return build(structure)


def rebuild_sequence(like: Sequence[Any], values: list[Any]) -> Any:
    """A sequence of ``like``'s kind holding ``values``: tuples (named ones too) stay tuples, the rest become lists."""
    if isinstance(like, tuple):
        return type(like)(*values) if hasattr(like, "_fields") else tuple(values)
    return values
