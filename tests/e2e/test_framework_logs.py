"""A failing test's output carries no TensorFlow start-up notices (issue 15), while real stderr lines still show.

TensorFlow writes absl's "All log messages before absl::InitializeLog()" line, oneDNN/CPU-feature notices and, on a
machine without a GPU, "failed call to cuInit" to file descriptor 2 when it starts; without care they land in the
"Captured stderr" of the first failing test that touches TensorFlow. See pytest_parity/frameworks/startup_logs.py.
"""

from __future__ import annotations

import pytest

from pytest_parity.frameworks.startup_logs import is_startup_notice

STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796174747.768631    8032 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796174751.075636    8032 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796174752.744353    8032 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "I0000 00:00:1796183170.853246   18405 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
]
REAL_LINES = [
    "E0000 00:00:1796174752.744353    8032 cuda_executor.cc:1228] out of memory allocating 17179869184 bytes",
    "W0000 00:00:1796174752.744353    8032 op_level_cost_estimator.cc:699] Error in PredictCost() for the op",
    "UserWarning: something the user should read",
]


def test_startup_notices_are_told_from_real_lines():
    assert all(is_startup_notice(line) for line in STARTUP_LINES)
    assert not any(is_startup_notice(line) for line in REAL_LINES)


@pytest.mark.parametrize("where", ["module", "body"])
def test_a_failing_keras_test_shows_no_startup_notices_but_its_own_stderr(pytester, monkeypatch, where):
    # Imported by the test module, or only inside the test body (as tests/coverage does): quiet either way.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)  # the user's default, not tox's
    module_import, body_import = ("import keras", "") if where == "module" else ("", "import keras")
    pytester.makepyfile(
        test_noise=f"""
        import os
        {module_import}
        import pytest

        @pytest.mark.parity(devices=("cpu",), atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
        def test_fails(parity):
            {body_import}
            os.write(2, b"the test's own stderr line\\n")
            model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
            parity.check(model, inputs=parity.randn(256, 2) * 1e4)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    output = result.stdout.str() + result.stderr.str()
    assert "test_fails" in output and "the test's own stderr line" in output
    captured = output.split("Captured stderr", 1)[-1]
    for notice in ("absl::InitializeLog", "failed call to cuInit", "oneDNN custom operations", "cpu_feature_guard"):
        assert notice not in captured, captured
