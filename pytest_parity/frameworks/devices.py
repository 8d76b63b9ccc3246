"""Device availability and the GPU settings that make a parity check meaningful.

- TensorFlow grabs nearly all GPU memory on first use; memory growth is set before it touches the GPU, so PyTorch can
  still allocate in the same process.
- TensorFloat-32 (on by default in TensorFlow, for cuDNN convolutions in PyTorch, and in onnxruntime's CUDA provider)
  has a relative error of ~3e-4 on matmuls: far above float32 tolerances. It is switched off for the duration of a
  check on cuda and restored after, and the onnxruntime referee's CUDA provider is created with it off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

_tensorflow_configured = False


def tensorflow_configured() -> bool:
    return _tensorflow_configured


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
    with warnings.catch_warnings():
        # Without a driver, and once TensorFlow has loaded its CUDA stubs, the CUDA build of torch warns "CUDA
        # initialization: ... Error 302" here; the answer (no GPU) is what matters, and a suite that turns warnings
        # into errors would otherwise error instead of skipping.
        warnings.filterwarnings("ignore", message="CUDA initialization", category=UserWarning)
        available = torch.cuda.is_available()
    if not available:
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

        restore.append(_torch_exact_float32(torch.backends))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _torch_exact_float32(backends: Any) -> Any:
    """Switch TF32 off in PyTorch's matmuls and cuDNN; returns the function that puts the previous settings back.

    torch >= 2.9 has per-backend ``fp32_precision`` and keeps the legacy ``allow_tf32`` flags, and torch checks that
    they agree: a read of ``cudnn.allow_tf32`` (torch.export does one) raises "cuDNN conv and cuDNN RNN have different
    TF32 flags ... a mix of the legacy and new APIs" unless cuDNN conv, cuDNN RNN and the legacy flag all say the same
    (seen on an H100 with torch 2.11 when only conv was set). So the legacy flag is set first (it resets conv and RNN),
    then the precise ones; restoring goes in the same order, so the user's precise settings win.
    """
    exact_settings: list[tuple[Any, str, Any]]
    if hasattr(backends.cuda.matmul, "fp32_precision"):
        exact_settings = [(backends.cudnn, "allow_tf32", False), (backends.cuda.matmul, "fp32_precision", "ieee"),
                          (backends.cudnn.conv, "fp32_precision", "ieee"),
                          (backends.cudnn.rnn, "fp32_precision", "ieee")]
    else:
        exact_settings = [(backends.cuda.matmul, "allow_tf32", False), (backends.cudnn, "allow_tf32", False)]
    previous: list[tuple[Any, str, Any]] = []
    for owner, attribute, _ in exact_settings:
        try:
            previous.append((owner, attribute, getattr(owner, attribute)))
        except RuntimeError:
            # The user's own flags disagree (legacy vs fp32_precision); the precise settings restored after it
            # bring their state back.
            pass
    for owner, attribute, value in exact_settings:
        setattr(owner, attribute, value)

    def restore() -> None:
        for owner, attribute, value in previous:
            setattr(owner, attribute, value)

    return restore


CUDA_EXECUTION_PROVIDER = "CUDAExecutionProvider"
CPU_EXECUTION_PROVIDER = "CPUExecutionProvider"
# The CUDA execution provider computes float32 matmuls and convolutions in TF32 unless told not to, like TensorFlow:
# a referee ~3e-4 off would blame whichever side it disagrees with.
ONNXRUNTIME_CUDA_OPTIONS = {"use_tf32": "0"}


def onnxruntime_providers(device: str, available: Sequence[str]) -> list[str | tuple[str, dict[str, str]]]:
    """The execution providers an onnxruntime session for ``device`` asks for, in order of preference.

    ``available`` is ``onnxruntime.get_available_providers()``. On cuda: the CUDA provider with TF32 off when the
    installed onnxruntime has one (``onnxruntime-gpu``; the PyPI ``onnxruntime`` wheel is CPU-only), with the CPU
    provider behind it for the nodes it has no kernel for. Otherwise the CPU provider alone.
    """
    if device == "cuda" and CUDA_EXECUTION_PROVIDER in available:
        return [(CUDA_EXECUTION_PROVIDER, dict(ONNXRUNTIME_CUDA_OPTIONS)), CPU_EXECUTION_PROVIDER]
    return [CPU_EXECUTION_PROVIDER]


def onnxruntime_fallback_reason(device: str, available: Sequence[str], used: Sequence[str],
                                version: str = "?") -> str | None:
    """Why a session asked for on ``device`` does not run on it (``used``: ``session.get_providers()``), or None."""
    if device != "cuda" or (used and used[0] == CUDA_EXECUTION_PROVIDER):
        return None
    if CUDA_EXECUTION_PROVIDER not in available:
        return (f"onnxruntime {version} has no {CUDA_EXECUTION_PROVIDER} (the PyPI 'onnxruntime' wheel is CPU-only; "
                f"install 'onnxruntime-gpu' instead of it), so the referee ran on {CPU_EXECUTION_PROVIDER}")
    return (f"onnxruntime {version} offers {CUDA_EXECUTION_PROVIDER} but could not create it (are the CUDA and cuDNN "
            f"libraries onnxruntime-gpu was built against installed?), so the referee ran on "
            f"{', '.join(used) or CPU_EXECUTION_PROVIDER}")
