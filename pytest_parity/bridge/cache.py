"""The conversion cache: exported ONNX graphs kept between sessions (and shared between CI shards), so a re-run skips
the export step.

What is cached, and why only that: the export (tf2onnx, torch.onnx) is the costly, deterministic part of a convert-mode
check; the ONNX -> PyTorch import must run anyway to give a live torch model, and it cannot be stored without pickling.

- Where: --parity-cache=on keeps entries under pytest's cache dir (.pytest_cache/d/parity-conversions); a directory
  path or any fsspec URL (s3://bucket/prefix, ...) names a place several sessions and machines share. The storage
  itself is ``cache_store.py``; this module decides what goes in and what a failure does.
- Key: sha256 over the model's structure, its weight values, the input signature, the versions of everything that
  shapes the export (framework, converter, onnx, this plugin) and the opset. Structure means: each layer's class and
  configuration (Keras layer names, which depend on how many layers a process built before, are replaced by their
  order of appearance), ``repr`` of a torch module tree, and the source code of every user-defined class in the model.
  Code outside those classes that ``call``/``forward`` reaches (a helper function) is not in the key: after changing
  such code, run once with ``--parity-cache-clear``. A model whose class source cannot be read is not cached.
- Entries are written create-only and never half-visible (see cache_store.py), so concurrent writers (xdist workers,
  CI shards) and a killed run never leave a partial entry under the final name. Each entry carries a magic line, its
  length and its sha256, checked on every read: an entry that fails the check is deleted and rebuilt, so a shared
  store is never trusted with the content.
- Nothing is unpickled: an entry's payload is a serialized ONNX ModelProto, read back with protobuf.
- A cache that cannot be reached, read or written never fails a check: the session warns once and converts.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_parity.bridge.cache_store import DirectoryStore, EntryStore, StoreUnavailable

if TYPE_CHECKING:  # the plugin imports this module at start-up: no numpy, no frameworks here
    import numpy as np

    from pytest_parity.frameworks import ModelInputs

# Bump when what is stored, or how the export is post-processed, changes: old entries then stop matching.
CACHE_FORMAT = 1
MAGIC = b"pytest-parity conversion cache 1\n"
CACHE_DIR_NAME = "parity-conversions"
# Distributions whose versions decide what the export produces.
EXPORT_PACKAGES = ("tensorflow", "keras", "tf2onnx", "torch", "onnxscript", "onnx", "pytest-parity")
_FRAMEWORK_PACKAGES = ("keras", "tensorflow", "tf_keras", "torch", "builtins")

# Outcome of one lookup, recorded per check (ParityResult.conversion_cache).
HIT, MISS, REBUILT, UNCACHEABLE = "hit", "miss", "rebuilt", "uncacheable"


def frame(payload: bytes) -> bytes:
    """An entry as stored: magic line, sha256 and length of the payload, then the payload."""
    digest = hashlib.sha256(payload).hexdigest().encode()
    return MAGIC + digest + b"\n" + str(len(payload)).encode() + b"\n" + payload


def unframe(data: bytes) -> bytes | None:
    """The payload of a stored entry, or None if the entry is truncated, corrupt or of another format."""
    if not data.startswith(MAGIC):
        return None
    header_end = data.find(b"\n", len(MAGIC) + 65)
    if header_end < 0:
        return None
    digest, length_text = data[len(MAGIC):len(MAGIC) + 64], data[len(MAGIC) + 65:header_end]
    payload = data[header_end + 1:]
    if not length_text.isdigit() or int(length_text) != len(payload):
        return None
    return payload if hashlib.sha256(payload).hexdigest().encode() == digest else None


class ConversionCache:
    """The cache's policy over one store (``bridge/cache_store.py``): framing and verification, what a failure does.

    A store failure never fails a check: the first one is reported once through ``on_warning`` (the session's
    warnings summary), naming the location, the cause and the fix; a failed read turns the cache off for the rest of
    the session, a failed write turns writing off (reads go on). ``readonly`` (--parity-cache-readonly): entries are
    read and verified, nothing is ever written or removed, for jobs whose code is not trusted to fill a shared cache.
    """

    def __init__(self, location: Path | EntryStore, on_warning: Callable[[str], None] | None = None,
                 readonly: bool = False) -> None:
        self.backend: EntryStore = DirectoryStore(location) if isinstance(location, Path) else location
        self.on_warning = on_warning
        self.readonly = readonly
        self.disabled_reason: str | None = None  # no reads, no writes
        self.write_disabled_reason: str | None = None  # reads only
        self._checked = False
        self._warned = False
        self._looked_for_entries = False

    @property
    def location(self) -> str:
        return self.backend.location

    def _usable(self) -> bool:
        if not self._checked:
            self._checked = True
            try:
                self.backend.check()
            except StoreUnavailable as error:
                self._disable(f"is unavailable: {error}")
            except Exception as error:
                self._disable(f"cannot be reached ({_cause(error)}). Check the URL, the endpoint (AWS_ENDPOINT_URL_S3 "
                              f"for an S3-compatible server) and the credentials")
        return self.disabled_reason is None

    def _disable(self, problem: str) -> None:
        self.disabled_reason = (f"the parity conversion cache at {self.location} {problem}; conversions run uncached "
                                f"for the rest of this session. Or turn the cache off with --parity-cache=off.")
        self._warn(self.disabled_reason)

    def _warn(self, message: str) -> None:
        if not self._warned and self.on_warning is not None:
            self._warned = True
            self.on_warning(message)

    def load(self, key: str) -> tuple[bytes | None, str]:
        """(payload, outcome): the payload on a hit; None with MISS, or with REBUILT when a bad entry was removed."""
        if not self._usable():
            return None, MISS
        try:
            data = self.backend.read(key)
        except Exception as error:
            self._disable(f"cannot be read ({_cause(error)})")
            return None, MISS
        if data is None:
            self._note_empty_readonly_cache()
            return None, MISS
        payload = unframe(data)
        if payload is not None:
            return payload, HIT
        # Create-only writes never replace an entry: a damaged one must go before a good one can take its name.
        self.discard(key)
        return None, REBUILT

    def _note_empty_readonly_cache(self) -> None:
        """A read-only session that finds its cache empty was most likely pointed at the wrong place, or runs before
        the job that fills it: worth one warning, since it can never fill the cache itself."""
        if not self.readonly or self._looked_for_entries:
            return
        self._looked_for_entries = True
        try:
            empty = not self.backend.holds_entries()
        except Exception:
            return
        if empty:
            self._warn(f"the read-only parity conversion cache at {self.location} holds no entries: conversions run "
                       f"uncached and, with --parity-cache-readonly, nothing is written. Fill it from a trusted job "
                       f"(the same --parity-cache without --parity-cache-readonly), or check the location.")

    def discard(self, key: str) -> None:
        """Remove an entry that failed verification, or whose payload is not a model (written by something else)."""
        if self.readonly or self.disabled_reason is not None:
            return
        try:
            self.backend.remove(key)
        except Exception:
            pass  # another writer removed or replaced it already, or removal is not allowed: it stays a miss

    def store(self, key: str, payload: bytes) -> None:
        """Write the entry unless one is there (create-only); a failure turns writing off for the session."""
        if self.readonly or self.write_disabled_reason is not None or not self._usable():
            return
        try:
            self.backend.create(key, frame(payload))
        except Exception as error:
            fix = ("Make it writable, or give a job that should only read --parity-cache-readonly; "
                   "--parity-cache=off turns the cache off.")
            self.write_disabled_reason = (f"the parity conversion cache at {self.location} cannot be written "
                                          f"({_cause(error)}); reads go on, nothing more is written this session. "
                                          f"{fix}")
            self._warn(self.write_disabled_reason)

    def clear(self) -> None:
        """Remove this cache's entries (--parity-cache-clear); anything else at the location stays."""
        try:
            self.backend.clear()
        except Exception as error:
            self._warn(f"the parity conversion cache at {self.location} could not be cleared ({_cause(error)}); "
                       f"its entries stay. Remove them by hand, or check the location.")


def _cause(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- the key --------------------------------------------------------------------------------------------------------

def conversion_key(framework: str, model: Any, weights: dict[str, np.ndarray], inputs: ModelInputs,
                   opset: int, variant: str = "") -> str | None:
    """The cache key of exporting ``model`` (with these current weight values) for ``inputs``; None: do not cache."""
    structure = keras_structure(model) if framework == "tensorflow" else torch_structure(model)
    if structure is None:
        return None
    digest = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT,
        "framework": framework,
        "opset": opset,
        **({"variant": variant} if variant else {}),
        "versions": {name: _version(name) for name in EXPORT_PACKAGES},
        "inputs": {"kind": inputs.kind, "names": list(inputs.names),
                   "arrays": [[list(a.shape), str(a.dtype)] for a in inputs.arrays]},
        "structure": structure,
        "weights": [[list(value.shape), str(value.dtype)] for value in weights.values()],
    }
    digest.update(json.dumps(header, sort_keys=True, default=repr).encode())
    import numpy as np

    for value in weights.values():
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def keras_structure(model: Any) -> Any:
    """Keras: each layer's class and configuration with names canonicalised, plus the user classes' source.
    tf.Module: its classes' source and its submodules' classes."""
    layers = _keras_layers(model)
    if layers is not None:
        configs = []
        for layer in layers:
            try:
                config = layer.get_config()
            except Exception:  # subclassed layers and models may not implement it; their source is in the key
                config = None
            configs.append([_class_name(type(layer)), config])
        described = canonical_names(configs)
        classes: Iterable[type] = (type(layer) for layer in layers)
    else:
        submodules = [model, *getattr(model, "submodules", ())]
        described = [_class_name(type(module)) for module in submodules]
        classes = (type(module) for module in submodules)
    sources = user_class_sources(classes)
    return None if sources is None else {"layers": described, "sources": sources}


def torch_structure(module: Any) -> Any:
    """PyTorch: ``repr`` of the module tree (classes and hyper-parameters) and the user classes' source."""
    sources = user_class_sources(type(m) for m in module.modules())
    return None if sources is None else {"repr": repr(module), "training": module.training, "sources": sources}


def _keras_layers(model: Any) -> list[Any] | None:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return None
    return list(flatten(include_self=True, recursive=True))


def canonical_names(tree: Any) -> Any:
    """Replace every value of a "name" key, and every other string equal to one, by "#i" in order of appearance.

    Keras names layers by a per-process counter (dense, dense_1, ...); the same model built after other models gets
    other names, and functional configs refer to layers by name.
    """
    names: dict[str, str] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "name" and isinstance(value, str) and value not in names:
                    names[value] = f"#{len(names)}"
                collect(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                collect(value)

    def rename(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: rename(value) for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return [rename(value) for value in node]
        if isinstance(node, str):
            return names.get(node, node)
        return node

    collect(tree)
    return rename(tree)


def user_class_sources(classes: Iterable[type]) -> dict[str, str] | None:
    """Source of every class (and its user-defined bases) not from a framework; None if one cannot be read."""
    sources: dict[str, str] = {}
    for cls in classes:
        for base in cls.__mro__:
            if base.__module__.split(".")[0] in _FRAMEWORK_PACKAGES or _class_name(base) in sources:
                continue
            try:
                sources[_class_name(base)] = inspect.getsource(base)
            except (OSError, TypeError):
                return None
    return dict(sorted(sources.items()))


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
