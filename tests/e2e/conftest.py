from __future__ import annotations

import pytest

from pytest_parity.errors import FrameworkNotInstalled
from pytest_parity.frameworks.tensorflow import import_tensorflow

# End-to-end tests run the real frameworks; without them installed they are skipped with the extra to install.
# TensorFlow is started the plugin's way, its start-up notices (absl, oneDNN, "failed call to cuInit") filtered out of
# the session's output (frameworks/startup_logs.py): a plain import here printed them above the session header.
try:
    import_tensorflow()
except FrameworkNotInstalled:
    pytest.skip("end-to-end tests need TensorFlow: pip install -c constraints.txt '.[all]'", allow_module_level=True)
pytest.importorskip("onnx2torch",
                    reason="end-to-end tests need PyTorch, onnx2torch: pip install -c constraints.txt '.[all]'")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
