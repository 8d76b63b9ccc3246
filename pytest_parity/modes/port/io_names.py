"""The target's inputs and outputs under the source's names (input_names=, output_names=).

Two independent implementations of one architecture rarely name their inputs and outputs alike: Hugging Face's
BertModel takes ``input_ids``, ``token_type_ids`` and ``attention_mask`` and returns ``last_hidden_state`` and
``pooler_output``; keras-hub's BertBackbone takes ``token_ids``, ``segment_ids`` and ``padding_mask`` and returns
``sequence_output`` and ``pooled_output``. Port mode gives both models the same inputs and compares the same outputs,
so the user says which is which, once, by name (source name -> target name); no wrapper model is needed, and the
weights still pair by structure. The comparison is made in the source's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pytest_parity import trees
from pytest_parity.errors import ParityUsageError
from pytest_parity.frameworks import ModelInputs


def target_inputs(inputs: ModelInputs, input_names: tuple[tuple[str, str], ...] | None) -> ModelInputs:
    """The inputs as the target takes them: each source name in ``input_names`` replaced by the target's."""
    if not input_names:
        return inputs
    if inputs.kind != "named":
        raise ParityUsageError("input_names= renames inputs given by name, but the inputs are not a dict; pass "
                               "inputs={'source_name': array, ...} or drop input_names=")
    renamed = dict(input_names)
    unknown = [name for name in renamed if name not in inputs.names]
    if unknown:
        raise ParityUsageError(f"input_names= names {', '.join(map(repr, unknown))}, which the inputs do not have "
                               f"(they are {', '.join(map(repr, inputs.names))}); its keys are the source's input "
                               f"names, its values the target's")
    return ModelInputs(inputs.kind, tuple(renamed.get(name, name) for name in inputs.names), inputs.arrays,
                       inputs.cast_from_float64)


# The name of a model's output when it returns one tensor, as the reports name it (output 'output').
SINGLE = "output"


def outputs_by_name(tree: Any) -> Mapping[str, Any]:
    """A model's outputs by top-level name: a dict or ModelOutput as it is, anything else as its one output."""
    return tree if isinstance(tree, Mapping) else {SINGLE: tree}


class OutputNames:
    """Reads the target's outputs under the source's top-level output names. A model that returns one tensor (or one
    tuple) has one output, named 'output': output_names={'last_hidden_state': 'output'} pairs a transformers model
    with a keras-hub backbone that returns its sequence output alone."""

    def __init__(self, output_names: tuple[tuple[str, str | None], ...]) -> None:
        self.to_target = {key: target for key, target in output_names if target is not None}
        # Source outputs mapped to None: not compared (keras-hub's pooled_output against a BertModel built without
        # its pooler), so they get no cotangent either, and layers that only feed them count as unused.
        self.not_compared = tuple(key for key, target in output_names if target is None)

    def source_keys_compared(self, source_outputs: Any) -> list[str]:
        return [str(key) for key in outputs_by_name(source_outputs) if key not in self.not_compared]

    def compared_source(self, source_outputs: Any) -> Any:
        """The source's outputs without those mapped to None."""
        if not self.not_compared or not isinstance(source_outputs, Mapping):
            return source_outputs
        return {key: value for key, value in source_outputs.items() if key not in self.not_compared}

    def source_cotangents(self, source_outputs: Any, cotangents: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """The cotangents of the source's output leaves (in flatten order), None under an output not compared."""
        if not self.not_compared:
            return cotangents
        keep = [key not in self.not_compared for key, value in outputs_by_name(source_outputs).items()
                for _ in trees.flatten_tree(value, "")]
        return [cotangent if kept else None for cotangent, kept in zip(cotangents, keep)]

    def _keys(self, source_outputs: Any, target_outputs: Any) -> dict[str, str]:
        """source key -> target key, for every source output key the target has."""
        source_outputs, target_outputs = outputs_by_name(source_outputs), outputs_by_name(target_outputs)
        unknown = [key for key in [*self.to_target, *self.not_compared] if key not in source_outputs]
        missing = [target for target in self.to_target.values() if target not in target_outputs]
        if unknown or missing:
            raise ParityUsageError(
                "output_names= does not fit the outputs: "
                + "; ".join(part for part in (
                    f"the source returns no {', '.join(map(repr, unknown))} (it returns "
                    f"{', '.join(map(repr, source_outputs))})" if unknown else "",
                    f"the target returns no {', '.join(map(repr, missing))} (it returns "
                    f"{', '.join(map(repr, target_outputs))})" if missing else "") if part)
                + "; its keys are the source's output names, its values the target's")
        return {key: self.to_target.get(key, key) for key in source_outputs
                if key not in self.not_compared and self.to_target.get(key, key) in target_outputs}

    def left_out(self, source_outputs: Any, target_outputs: Any) -> list[str]:
        """The target's output keys that no source output reads (not compared)."""
        used = set(self._keys(source_outputs, target_outputs).values())
        return [str(key) for key in outputs_by_name(target_outputs) if key not in used]

    def as_source(self, source_outputs: Any, target_outputs: Any) -> Any:
        """The target's outputs keyed by the source's names (a source key the target lacks stays missing, for the
        comparison to name); the bare output where the source returns one."""
        named = outputs_by_name(target_outputs)
        renamed = {key: named[target] for key, target in self._keys(source_outputs, target_outputs).items()}
        return renamed if isinstance(source_outputs, Mapping) else renamed.get(SINGLE)

    def target_cotangents(self, source_outputs: Any, source_cotangents: list[np.ndarray | None],
                          target_outputs: Any) -> list[np.ndarray | None]:
        """The source's cotangents in the order of the target's output leaves (None for a leaf not compared)."""
        source_paths = [path for key, value in outputs_by_name(source_outputs).items()
                        for path, _ in trees.flatten_tree(value, f"output[{key!r}]")]
        by_path = dict(zip(source_paths, source_cotangents))
        from_target = {target: key for key, target in self._keys(source_outputs, target_outputs).items()}
        cotangents: list[np.ndarray | None] = []
        for key, value in outputs_by_name(target_outputs).items():
            source_key = from_target.get(key)
            # A leaf's path below its output is the same on both sides: only the top-level name differs.
            for path, _ in trees.flatten_tree(value, ""):
                cotangents.append(None if source_key is None else by_path.get(f"output[{source_key!r}]{path}"))
        return cotangents
