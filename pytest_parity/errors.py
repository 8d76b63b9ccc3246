"""The exceptions a parity check raises, split by who has to act on them.

- ``ParityError``: the two models disagree. It is an ``AssertionError`` so that pytest reports it as a test failure.
- ``ParityUsageError``: the check could not be run as asked (bad marker argument, inputs that do not fit the model,
  an op a converter cannot handle, a model returning NaN). The plugin turns it into a failure with just the message.
- ``FrameworkNotInstalled``, ``DeviceUnavailable``: a framework or device the check needs is missing. The plugin
  turns them into skips.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_parity.result import ParityResult


class ParityError(AssertionError):
    """Outputs, gradients, transferred weights or speed of the two models do not agree."""

    def __init__(self, message: str, result: ParityResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class ParityUsageError(Exception):
    """The parity check cannot run as asked; the message names the cause and the fix."""


class ConversionError(ParityUsageError):
    """A converter (tf2onnx, torch.onnx.export, onnx2torch) could not carry the model across."""

    def __init__(self, message: str, *, step: str, op: str | None = None, opset: int | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.op = op
        self.opset = opset


# Framework name -> the pip extra that installs what the plugin needs for it.
EXTRA_FOR_FRAMEWORK = {
    "tensorflow": "tensorflow",
    "torch": "torch",
    "onnx": "all",
}


class FrameworkNotInstalled(Exception):
    """A framework (or converter) that this check needs cannot be imported."""

    def __init__(self, framework: str, module: str, cause: BaseException | None = None) -> None:
        extra = EXTRA_FOR_FRAMEWORK.get(framework, "all")
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(
            f"{framework} is needed for this parity check but '{module}' cannot be imported{detail}; "
            f"install it with: pip install {module} (constraints.txt in pytest-parity's repository pins the tested "
            f"versions), or install pytest-parity with its '{extra}' extra: pip install '<pytest-parity clone or "
            f"wheel>[{extra}]'"
        )
        self.framework = framework
        self.module = module


class DeviceUnavailable(Exception):
    """The requested device cannot be used by a framework this check needs; the message says why."""


class WeightTransferError(ParityUsageError):
    """Port mode: the source's weights cannot be carried into the target, because the two structures differ."""


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def error_summary(error: BaseException) -> str:
    """A framework's error in one line for a usage message: its type and the first lines of its text, bounded."""
    # Keras colours its error texts; quoted in a message (or a JUnit file) the escape codes are noise.
    text = " ".join(ANSI_ESCAPE.sub("", str(error)).strip().splitlines()[:3])[:600]
    return f"{type(error).__name__}: {text}"


class ParityCacheWarning(UserWarning):
    """The conversion cache could not be used (read-only cache dir); the session goes on without it."""


class ParitySpeedWarning(UserWarning):
    """A gated speed= check whose measurement could not separate the ratio from the allowed one (inconclusive), with
    speed_inconclusive="warn": the test passes, and this warning carries the figures. Filter it by this category."""
