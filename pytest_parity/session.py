"""Session-wide parity state, kept in ``config.stash`` (not on a private attribute). Imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_parity.settings import ParitySettings


@dataclass
class ParitySession:
    """Settings from the command line and ini, and the records of the checks that ran (plain dicts)."""

    base_settings: ParitySettings
    devices: tuple[str, ...]
    report_path: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
