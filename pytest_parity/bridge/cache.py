"""The conversion cache: exported ONNX graphs kept under pytest's cache dir, so a re-run skips the export step.

What is cached, and why only that: the export (tf2onnx, torch.onnx) is the costly, deterministic part of a convert-mode
check; the ONNX -> PyTorch import must run anyway to give a live torch model, and it cannot be stored without pickling.

- Key: sha256 over the model's structure, its weight values, the input signature, the versions of everything that
  shapes the export (framework, converter, onnx, this plugin) and the opset. Structure means: each layer's class and
  configuration (Keras layer names, which depend on how many layers a process built before, are replaced by their
  order of appearance), ``repr`` of a torch module tree, and the source code of every user-defined class in the model.
  Code outside those classes that ``call``/``forward`` reaches (a helper function) is not in the key: after changing
  such code, run once with ``--parity-cache-clear``. A model whose class source cannot be read is not cached.
- Entries are written to a temporary file and renamed into place (atomic on POSIX), so concurrent writers (pytest-xdist
  workers) and a killed run never leave a half-written entry under the final name. Each entry carries a magic line,
  its length and its sha256; an entry that fails the check is deleted and rebuilt.
- Nothing is unpickled: an entry's payload is a serialized ONNX ModelProto, read back with protobuf.
- A cache dir that cannot be written disables the cache for the session; the plugin warns once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """Entries in one directory; ``on_disabled`` is called once, with the reason, if the directory cannot be written."""

    def __init__(self, directory: Path, on_disabled: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.on_disabled = on_disabled
        self.disabled_reason: str | None = None

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.onnx-entry"

    def load(self, key: str) -> tuple[bytes | None, str]:
        """(payload, outcome): the payload on a hit; None with MISS, or with REBUILT when a bad entry was removed."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None, MISS
        payload = unframe(data)
        if payload is not None:
            return payload, HIT
        try:
            path.unlink()
        except OSError:
            pass  # another worker removed or replaced it already
        return None, REBUILT

    def discard(self, key: str) -> None:
        """Remove an entry whose payload passed the checksum but is not a model (written by something else)."""
        try:
            self._path(key).unlink()
        except OSError:
            pass

    def store(self, key: str, payload: bytes) -> None:
        if self.disabled_reason is not None:
            return
        temporary = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{key[:16]}-", suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(frame(payload))
            os.replace(temporary, self._path(key))
            temporary = None
        except IsADirectoryError:
            # Something else sits where this one entry goes (os.replace cannot put a file over a directory): the cache
            # as a whole is fine, only this model goes uncached. Nothing of the user's is removed.
            return
        except OSError as error:
            self.disabled_reason = (f"the parity conversion cache at {self.directory} cannot be written "
                                    f"({type(error).__name__}: {error}); conversions run uncached for the rest of this "
                                    f"session. Make the directory writable, point pytest's cache_dir elsewhere, or "
                                    f"turn the cache off with --parity-cache=off.")
            if self.on_disabled is not None:
                self.on_disabled(self.disabled_reason)
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


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
