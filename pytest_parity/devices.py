"""Device availability and the GPU settings that make a parity check meaningful.

- TensorFlow grabs nearly all GPU memory on first use; memory growth is set before it touches the GPU, so PyTorch can
  still allocate in the same process.
- TensorFloat-32 (on by default in TensorFlow, and for cuDNN convolutions in PyTorch) has a relative error of ~3e-4 on
  matmuls: far above float32 tolerances. It is switched off for the duration of a check on cuda and restored after.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

_tensorflow_configured = False


def configure_tensorflow(tf: Any) -> None:
    """Once per process, before TensorFlow initialises a GPU."""
    global _tensorflow_configured
    if _tensorflow_configured:
        return
    _tensorflow_configured = True
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # The GPU was initialised already (by user code); memory growth can no longer be changed.
            pass


def cuda_skip_reason_torch() -> str | None:
    """Why PyTorch cannot run on cuda here, or None when it can. Imports torch only if it is installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    from pytest_parity.frameworks.torch import import_torch

    torch = import_torch()
    if torch.version.cuda is None:
        return f"cuda: PyTorch {torch.__version__} is built without CUDA; install a CUDA build of torch"
    if not torch.cuda.is_available():
        return "cuda: no GPU visible to PyTorch (torch.cuda.is_available() is False)"
    return None


def cuda_skip_reason_tensorflow(tf: Any) -> str | None:
    if not tf.test.is_built_with_cuda():
        return f"cuda: TensorFlow {tf.__version__} is built without CUDA; install 'tensorflow[and-cuda]'"
    if not tf.config.list_physical_devices("GPU"):
        return "cuda: no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"
    return None


@contextlib.contextmanager
def exact_float32(frameworks: set[str], device: str) -> Iterator[None]:
    """TF32 off in the given frameworks while the block runs on cuda; previous settings restored afterwards."""
    if device != "cuda":
        yield
        return
    restore: list[Any] = []
    if "tensorflow" in frameworks:
        import tensorflow as tf

        previous = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        restore.append(lambda: tf.config.experimental.enable_tensor_float_32_execution(previous))
    if "torch" in frameworks:
        import torch

        settings: list[tuple[Any, str]]
        exact: Any
        backends: Any = torch.backends
        if hasattr(backends.cuda.matmul, "fp32_precision"):
            # torch >= 2.9: the allow_tf32 flags are deprecated in favour of per-backend fp32_precision.
            settings = [(backends.cuda.matmul, "fp32_precision"), (backends.cudnn.conv, "fp32_precision")]
            exact = "ieee"
        else:
            settings = [(backends.cuda.matmul, "allow_tf32"), (backends.cudnn, "allow_tf32")]
            exact = False
        previous_torch = [getattr(owner, attribute) for owner, attribute in settings]
        for owner, attribute in settings:
            setattr(owner, attribute, exact)

        def restore_torch() -> None:
            for (owner, attribute), value in zip(settings, previous_torch):
                setattr(owner, attribute, value)

        restore.append(restore_torch)
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
