"""Seed the frameworks for each parity test, including those the test imports only after the fixture ran.

A model built in a test must start from the same weights on every run and machine: a parity gate must not pass or
fail by the luck of initialisation (about 2% of random inits of a correct CIFAR port meet a max-pool near-tie), and the
conversion cache keys on weight values. The frameworks already imported are seeded at once. Importing the others here
would make every parity test pay for both, yet a test module often imports its framework lazily (a builder function
with ``import keras`` inside), after the fixture ran: the first such test of a session used to build unseeded. So while
a parity test runs, a meta-path hook seeds keras / tensorflow / torch right after their first import completes.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

SEEDED_ON_IMPORT = ("tensorflow", "keras", "torch")


def seed_imported_frameworks(value: int) -> None:
    # sys.modules.get(...) is None also for a module blocked with sys.modules[name] = None.
    if sys.modules.get("keras") is not None:
        _seed("keras", value)  # Python's random, numpy's global RNG and the backend (TensorFlow)
    elif sys.modules.get("tensorflow") is not None:
        _seed("tensorflow", value)
    if sys.modules.get("torch") is not None:
        _seed("torch", value)


def _seed(framework: str, value: int) -> None:
    if framework == "keras":
        import keras

        keras.utils.set_random_seed(value)
    elif framework == "tensorflow":
        import tensorflow as tf

        tf.random.set_seed(value)
    else:
        import torch

        torch.manual_seed(value)


class _SeedAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders give for a framework, to seed it once loaded."""

    def __init__(self) -> None:
        self.value: int | None = None

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if self.value is None or fullname not in SEEDED_ON_IMPORT:
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _SeedingLoader(spec.loader, fullname, self)
        return spec


class _SeedingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any, framework: str, hook: _SeedAfterImport) -> None:
        self._loader = loader
        self._framework = framework
        self._hook = hook

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            # The module keeps the real loader: nothing after the import sees this wrapper.
            module.__loader__ = self._loader
            if module.__spec__ is not None:
                module.__spec__.loader = self._loader
        if self._hook.value is not None:
            _seed(self._framework, self._hook.value)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ... asked for during the import
        return getattr(self._loader, name)


_hook = _SeedAfterImport()


def seed_frameworks(value: int) -> None:
    """Seed the imported frameworks now, and the others when the test imports them (until ``stop_seeding``)."""
    seed_imported_frameworks(value)
    _hook.value = value
    if _hook not in sys.meta_path:
        # First: the path finders behind it would load the framework without asking it.
        sys.meta_path.insert(0, _hook)


def stop_seeding() -> None:
    _hook.value = None
    if _hook in sys.meta_path:
        sys.meta_path.remove(_hook)


def seeded_generator(seed_key: str, seed: int, purpose: str) -> np.random.Generator:
    """The same stream for the same test, seed and purpose on every machine (no process-salted hash())."""
    digest = hashlib.sha256(f"{seed_key}|{seed}|{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
