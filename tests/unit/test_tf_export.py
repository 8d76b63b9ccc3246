"""The TensorFlow export's guards that need no TensorFlow: the memory estimate that refuses an export the machine
cannot hold (instead of the out-of-memory killer ending the session)."""

from __future__ import annotations

import pytest

from pytest_parity.bridge import tf_export
from pytest_parity.errors import ConversionError

GIB = 2**30


def test_an_export_needing_more_memory_than_available_is_refused_with_the_figures_and_what_to_do(monkeypatch):
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: 22 * GIB)
    with pytest.raises(ConversionError) as failure:
        tf_export.refuse_if_memory_is_short(int(1.4 * GIB), "Keras Functional 'convnext_xlarge'")
    message = str(failure.value)
    assert message.startswith("TensorFlow -> ONNX (tf2onnx): not started for Keras Functional 'convnext_xlarge': its "
                              "1.40 GiB of weights need about 28 GiB of memory to export")
    assert "this machine has 22.0 GiB available" in message
    assert "What you can do: run this check on a machine with more memory" in message
    assert failure.value.step == "TensorFlow -> ONNX (tf2onnx)"


def test_an_export_that_fits_or_a_machine_without_meminfo_goes_ahead(monkeypatch):
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: 22 * GIB)
    tf_export.refuse_if_memory_is_short(int(0.79 * GIB), "ConvNeXtLarge")  # 16 GiB: fits
    monkeypatch.setattr(tf_export, "_available_memory_bytes", lambda: None)
    tf_export.refuse_if_memory_is_short(100 * GIB, "anything")


def test_available_memory_is_read_from_proc_meminfo_on_linux():
    available = tf_export._available_memory_bytes()
    if available is None:
        pytest.skip("no /proc/meminfo (not Linux)")
    assert 0 < available < 2**50
