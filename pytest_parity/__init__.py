"""pytest-parity: prove that a model and its port or conversion to another framework agree.

Public API: the ``parity`` fixture and ``@pytest.mark.parity`` (see the README), plus the names below.
Importing this package imports no framework; the names are loaded on first use (PEP 562), because pytest imports the
package for every session through the plugin and most sessions never need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC_NAMES = {
    "Comparison": "pytest_parity.result",
    "ConversionError": "pytest_parity.errors",
    "FrameworkNotInstalled": "pytest_parity.errors",
    "ParityError": "pytest_parity.errors",
    "ParityResult": "pytest_parity.result",
    "ParitySpeedWarning": "pytest_parity.errors",
    "ParitySettings": "pytest_parity.settings",
    "ParityUsageError": "pytest_parity.errors",
    "SpeedResult": "pytest_parity.result",
    "TreeComparison": "pytest_parity.result",
}

__all__ = [
    "Comparison",
    "ConversionError",
    "FrameworkNotInstalled",
    "ParityError",
    "ParityResult",
    "ParitySettings",
    "ParitySpeedWarning",
    "ParityUsageError",
    "SpeedResult",
    "TreeComparison",
    "__version__",
]

if TYPE_CHECKING:
    from pytest_parity.errors import (
        ConversionError,
        FrameworkNotInstalled,
        ParityError,
        ParitySpeedWarning,
        ParityUsageError,
    )
    from pytest_parity.result import Comparison, ParityResult, SpeedResult, TreeComparison
    from pytest_parity.settings import ParitySettings


def __getattr__(name: str) -> Any:
    if name in _PUBLIC_NAMES:
        return getattr(importlib.import_module(_PUBLIC_NAMES[name]), name)
    raise AttributeError(f"module 'pytest_parity' has no attribute {name!r}")
