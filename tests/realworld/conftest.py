"""The real-world suite: models of the libraries people convert (transformers, timm, keras-hub), built from small
configs with random weights, through convert mode. Slow (tens of seconds per model), so it runs only when selected
with ``-m realworld``; the default test run skips it with that hint (as tests/coverage does for ``-m coverage``)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realworld: the real-world model suite (transformers, timm, keras-hub; slow; "
                                       "runs only with -m realworld, see benchmarks/realworld_sweep.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only this folder's.
    ours = [item for item in items if HERE in Path(item.path).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.realworld)
    if "realworld" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="real-world suite: select it with -m realworld (see benchmarks/realworld_sweep.py)")
    for item in ours:
        item.add_marker(skip)
