"""pytest-parity: prove that a model and its port or conversion to another framework agree.

Public API: the ``parity`` fixture and ``@pytest.mark.parity`` (see the README), plus the names below.
Importing this package imports no framework.
"""

from __future__ import annotations

from pytest_parity.errors import ConversionError, FrameworkNotInstalled, ParityError, ParityUsageError
from pytest_parity.result import Comparison, ParityResult, SpeedResult, TreeComparison
from pytest_parity.settings import ParitySettings

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "ConversionError",
    "FrameworkNotInstalled",
    "ParityError",
    "ParityResult",
    "ParitySettings",
    "ParityUsageError",
    "SpeedResult",
    "TreeComparison",
    "__version__",
]
