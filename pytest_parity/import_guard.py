"""Guard against the TensorFlow-then-triton segfault.

``import tensorflow`` followed by the first ``import triton`` (which torchvision, onnx2torch and torch._inductor pull
in) kills the process with SIGSEGV: the two bring their own LLVM copies. Importing triton *before* TensorFlow is safe.
Users meet this whenever a test module imports tensorflow at top level, so the plugin:

1. installs a meta-path hook (at plugin start, before conftests and test modules are imported) that imports triton
   just before the first ``import tensorflow`` - about 0.2 s, paid only by sessions that import TensorFlow at all;
2. when TensorFlow was imported before the hook could act (e.g. by code that ran before pytest started) and triton is
   not loaded yet, marks triton as unavailable for this process before the plugin imports PyTorch. torch and
   torchvision treat a missing triton as "no triton" (only torch.compile's GPU kernels need it), instead of crashing.

Nothing here imports TensorFlow or PyTorch.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any


def _triton_installed() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


class _ImportTritonBeforeTensorFlow(importlib.abc.MetaPathFinder):
    """Finds nothing itself; on the first ``import tensorflow`` it imports triton, then steps aside."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname == "tensorflow":
            remove_guard()
            if "tensorflow" not in sys.modules and "triton" not in sys.modules and _triton_installed():
                try:
                    import triton  # noqa: F401  (the import itself is the point)
                except Exception:
                    pass
        return None


_guard = _ImportTritonBeforeTensorFlow()


def install_guard() -> None:
    """Idempotent; a no-op when TensorFlow is already imported (then ``before_torch_import`` protects)."""
    if "tensorflow" in sys.modules or _guard in sys.meta_path:
        return
    sys.meta_path.insert(0, _guard)


def remove_guard() -> None:
    if _guard in sys.meta_path:
        sys.meta_path.remove(_guard)


def before_torch_import() -> None:
    """Call before importing torch/torchvision/onnx2torch: makes a late triton import impossible after TensorFlow."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules and _triton_installed():
        # A None entry makes ``import triton`` raise ImportError, which torch handles as "triton not installed".
        sys.modules["triton"] = None  # type: ignore[assignment]
        warnings.warn(
            "pytest-parity: TensorFlow was imported before triton, and importing triton now would crash the process "
            "(two LLVM copies); triton is disabled for this session. Import torch before tensorflow, or let the "
            "pytest-parity plugin load first, to keep it.",
            RuntimeWarning,
            stacklevel=2,
        )
