"""The coverage suite (issue 6): real architectures through convert mode. Slow (minutes per family), so it runs only
when selected with ``-m coverage``; the default test run skips it with that hint."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "coverage" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="coverage suite: select it with -m coverage (see benchmarks/coverage_table.py)")
    for item in items:
        if item.get_closest_marker("coverage"):
            item.add_marker(skip)
