from __future__ import annotations

import pytest

# End-to-end tests run the real frameworks; without them installed they are skipped with the extra to install.
pytest.importorskip("tensorflow", reason="end-to-end tests need TensorFlow: pip install -c constraints.txt '.[all]'")
pytest.importorskip("onnx2torch",
                    reason="end-to-end tests need PyTorch, onnx2torch: pip install -c constraints.txt '.[all]'")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
