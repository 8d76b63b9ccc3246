"""The documentation site's checks (tox -e docs): they need the built site (mkdocs build), Playwright and Debian's
chromium, so they are collected only when selected with ``-m docs``; the default test run does not even import them."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _selected(config: pytest.Config) -> bool:
    return "docs" in (config.getoption("markexpr") or "")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if HERE in collection_path.resolve().parents and collection_path.name != "conftest.py" and not _selected(config):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: mark only this folder's.
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.docs)
