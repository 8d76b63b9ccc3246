"""Keras layer names in failure messages by their order of appearance within the model, not Keras' process-wide count.

Keras names an unnamed layer after its class and uniquifies the name with a counter over every layer the process built
(dense, dense_1, ... dense_9), so the same model gets other names in a session that built other models first, and a
failure message would read differently from run to run. The conversion cache keys on names normalised the same way
(``bridge.cache.canonical_names``). A message shows each automatically named layer (its name is its class in snake
case, with or without a numeric suffix) renumbered in the order the model holds its layers: the first Dense is
``dense``, the second ``dense_1``; a model's own name likewise. Names the user chose are kept. Where a renumbered name
would equal a name kept as it is, that class's layers keep their full names, so a message never names two layers
alike. The result and the reports (JSON, HTML) keep the full names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def _snake_case(class_name: str) -> str:
    """How Keras turns a class name into a layer's default name (keras.src.utils.naming.to_snake_case)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras_layers(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    try:
        return list(flatten(include_self=True, recursive=True))
    except Exception:  # a half-built or unusual model: its names stay as they are
        return []


def display_names(models: Iterable[Any]) -> dict[str, str]:
    """Full Keras name -> the name a message shows, for the automatically named layers (and models) of ``models``
    that Keras' counter renamed; names that stay as they are are left out."""
    renamed: dict[str, str] = {}
    for model in models:
        layers = _keras_layers(model)
        kept: set[str] = set()
        groups: dict[str, list[str]] = {}
        for layer in layers:
            name = getattr(layer, "name", None)
            if not isinstance(name, str) or name in kept or any(name in group for group in groups.values()):
                continue
            base = _snake_case(type(layer).__name__)
            if base and re.fullmatch(re.escape(base) + r"(_\d+)?", name):
                groups.setdefault(base, []).append(name)
            else:
                kept.add(name)
        for base, names in groups.items():
            shown = [base if index == 0 else f"{base}_{index}" for index in range(len(names))]
            if kept.intersection(shown):
                continue  # would read like a layer the user named: keep the full names
            renamed.update((full, short) for full, short in zip(names, shown) if full != short)
    return renamed


def stable_text(text: str, names: dict[str, str]) -> str:
    """``text`` with every full name of ``names`` (a whole name or a path segment: 'sequential_3/dense_6/kernel')
    replaced at once by the name a message shows."""
    if not names:
        return text
    pattern = re.compile(r"(?<![\w])(" + "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
                         + r")(?![\w])")
    return pattern.sub(lambda match: names[match.group(1)], text)


def with_stable_names(error: BaseException, models: Iterable[Any]) -> BaseException:
    """The same exception, its message showing layer names by order of appearance (attributes and type kept)."""
    names = display_names(models)
    if names and error.args and isinstance(error.args[0], str):
        error.args = (stable_text(error.args[0], names), *error.args[1:])
    return error
