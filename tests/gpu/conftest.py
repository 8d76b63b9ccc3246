"""GPU tests need PyTorch, onnx and onnx2torch, not TensorFlow: they also run on a GPU machine without TensorFlow."""

import pytest

pytest.importorskip("torch", reason="GPU tests need PyTorch: pip install -c constraints.txt '.[torch]'")
pytest.importorskip("onnx2torch", reason="GPU tests need onnx2torch: pip install -c constraints.txt '.[all]'")
