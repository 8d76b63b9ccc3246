"""Session-wide parity state, kept in ``config.stash`` (not on a private attribute).

Imported by the plugin at start-up, so it imports nothing: every pytest session pays for this module.
"""

from __future__ import annotations

from typing import Any

KNOWN_DEVICES = ("cpu", "cuda")


def parse_devices_option(text: str) -> tuple[str, ...]:
    """``--parity-devices=cpu,cuda`` -> ('cpu', 'cuda'); ValueError on unknown names."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in KNOWN_DEVICES]
    if not names or unknown:
        raise ValueError(f"expected a comma-separated list of {', '.join(KNOWN_DEVICES)}, got {text!r}")
    return names


class ParitySession:
    """Options from the command line and ini, and the records of the checks that ran (plain dicts)."""

    def __init__(self, seed: int, devices: tuple[str, ...], report_path: str | None) -> None:
        self.seed = seed
        self.devices = devices
        self.report_path = report_path
        self.records: list[dict[str, Any]] = []
