"""Whole pytest sessions with real frameworks, each in a fresh process (pytester subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

LINEAR_MODEL = """
import keras

def build():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="linear")
"""


def test_summary_and_json_report_of_a_real_session(pytester):
    pytester.makepyfile(linear_model=LINEAR_MODEL)
    pytester.makepyfile(
        test_session="""
        import pytest
        from linear_model import build

        @pytest.mark.parity(devices=("cpu",))
        def test_passes(parity):
            parity.check(build(), inputs=parity.randn(4, 2))

        @pytest.mark.parity(devices=("cpu",), atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
        def test_fails(parity):
            parity.check(build(), inputs=parity.randn(256, 2) * 1e4)
        """
    )
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(f"--parity-report={report}", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1
    # Two lines per check (test id and result, then its figures), so that no line passes 120 columns.
    result.stdout.fnmatch_lines([
        "*= parity summary =*",
        "test  result  (figures under each*",
        "  device*route*outputs*grads*weights*speed",
        "test_session.py::test_passes[[]cpu[]]  PASS",
        "  cpu*tensorflow -> onnx -> torch*",
        "parity report written to*",
    ])
    assert f"parity report written to {report}" in " ".join(line.strip() for line in result.stdout.lines)
    document = json.loads(report.read_text())
    assert set(document) == {"version", "created", "environment", "results"}
    assert document["environment"]["tensorflow"] and document["environment"]["torch"]
    passing = document["results"][0]
    assert passing["nodeid"] == "test_session.py::test_passes[cpu]"
    assert passing["device"] == "cpu" and passing["route"] == "tensorflow -> onnx -> torch" and passing["passed"]
    assert {"max_abs", "max_rel", "mismatched", "total", "atol", "rtol", "passed"} <= set(passing["outputs"])
    assert set(passing["grads"]) == {"input", "linear/dense/kernel", "linear/dense/bias"}
    assert passing["speed"] is None
    # With zero tolerances float32 round-off over 256 large inputs fails: then the row, report and message say so.
    if outcomes.get("failed"):
        result.stdout.fnmatch_lines(["*Mismatched elements:*", "*test_fails[[]cpu[]]  FAIL"])
        assert document["results"][1]["passed"] is False


def test_a_test_module_importing_tensorflow_at_top_level_runs_a_check_without_crashing(pytester):
    # `import tensorflow` and then the first `import triton` (via onnx2torch -> torchvision) used to segfault.
    pytester.makepyfile(
        """
        import tensorflow as tf
        import keras
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_after_tensorflow(parity):
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            assert parity.check(model, inputs=parity.randn(2, 3)).passed
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()[-2000:]
    result.assert_outcomes(passed=1)


def test_late_guard_keeps_the_process_alive_when_tensorflow_came_first():
    code = (
        "import warnings, tensorflow\n"
        "from pytest_parity import import_guard\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import_guard.before_torch_import()\n"
        "import torchvision, onnx2torch\n"
        "print('alive', any('triton is disabled' in str(w.message) for w in caught))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "alive True" in completed.stdout


def test_bad_input_fails_one_test_with_a_message_and_the_session_goes_on(pytester):
    pytester.makepyfile(linear_model=LINEAR_MODEL)
    pytester.makepyfile(
        test_session="""
        import pytest
        from linear_model import build

        @pytest.mark.parity(devices=("cpu",))
        def test_wrong_shape(parity):
            parity.check(build(), inputs=parity.randn(4, 3))

        @pytest.mark.parity(devices=("cpu",))
        def test_right_shape(parity):
            parity.check(build(), inputs=parity.randn(4, 2))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Running the source model (Keras Sequential 'linear') on the given inputs "
                                 "(input: float32[[]4, 3[]]) failed*"])
    result.stdout.no_fnmatch_line("*pytest_parity/*.py:*")


@pytest.mark.parametrize(
    ("blocked", "extra"),
    [("torch", "torch"), ("onnx2torch", "torch"), ("tf2onnx", "tensorflow")],
)
def test_a_missing_framework_skips_with_the_extra_to_install(pytester, blocked, extra):
    pytester.makeconftest(f"import sys\nsys.modules[{blocked!r}] = None  # as if it were not installed\n")
    pytester.makepyfile(linear_model=LINEAR_MODEL)
    pytester.makepyfile(
        test_session="""
        import pytest
        from linear_model import build

        @pytest.mark.parity(devices=("cpu",))
        def test_needs_it(parity):
            parity.check(build(), inputs=parity.randn(4, 2))
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.re_match_lines([f".*'{blocked}' cannot be imported.*" + re.escape(f"pip install {blocked} ")
                                  + ".*" + re.escape(f"with its '{extra}' extra")])


def test_a_missing_tensorflow_skips_with_the_extra_to_install(pytester):
    pytester.makeconftest("import sys\nsys.modules['tensorflow'] = None  # as if it were not installed\n")
    pytester.makepyfile(
        """
        import pytest

        class SavedKerasModel:  # what a test gets when it loads a Keras model object without TensorFlow around
            pass
        SavedKerasModel.__module__ = "keras.src.models.sequential"

        @pytest.mark.parity(devices=("cpu",))
        def test_needs_tensorflow(parity):
            parity.check(SavedKerasModel(), inputs=parity.randn(4, 2))
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.re_match_lines([".*tensorflow is needed.*'tensorflow' cannot be imported.*"
                                  + re.escape("pip install tensorflow ") + ".*" + re.escape("'tensorflow' extra")])


def test_port_mode_session_with_layouts_in_the_marker(pytester):
    """The README's port-mode example through the plugin: layouts as a marker argument, a bad one failing alone."""
    pytester.makepyfile(
        test_port="""
        import pytest
        import torch
        import keras

        def build_keras():
            return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                                     keras.layers.Flatten(), keras.layers.Dense(5)])

        class TorchPort(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3)
                self.fc = torch.nn.Linear(4 * 6 * 6, 5)

            def forward(self, x):
                return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

        @pytest.mark.parity(devices=("cpu",), layouts=("NHWC", "NCHW"))
        def test_port(parity):
            result = parity.check(build_keras(), TorchPort(), inputs=parity.randn(4, 8, 8, 3))
            assert result.route == "port: tensorflow -> torch"
            assert "flattened feature map" in result.notes[0]

        @pytest.mark.parity(devices=("cpu",), layouts=("NHWC", "NCHX"))
        def test_bad_layouts(parity):
            parity.check(build_keras(), TorchPort(), inputs=parity.randn(4, 8, 8, 3))
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)  # a bad marker argument fails that test's setup, as for any other
    result.stdout.fnmatch_lines(["*layouts=('NHWC', 'NCHX'): 'NHWC' and 'NCHX' do not name the same axes*",
                                 "*test_port[[]cpu[]]*PASS",
                                 # The port's note is under the summary too (issue 23).
                                 "port notes (what the weight transfer changed*",
                                 "*test_port[[]cpu[]]:",
                                 "*the input is a flattened feature map*"])
    assert "Traceback" not in result.stdout.str()


def test_models_built_in_a_parity_test_start_from_the_same_weights_in_every_session(pytester):
    """The fixture seeds the imported frameworks per test: a gate must not pass or fail by the luck of init."""
    pytester.makepyfile(
        test_seeded="""
        import pytest
        import torch
        import keras

        @pytest.mark.parity(devices=("cpu",))
        def test_first(parity):
            dense = keras.layers.Dense(3)
            dense.build((None, 2))
            print("KERAS", float(dense.kernel.numpy()[0, 0]), "TORCH", float(torch.nn.Linear(2, 3).weight[0, 0]))

        @pytest.mark.parity(devices=("cpu",))
        def test_second(parity):
            print("OTHER", float(torch.nn.Linear(2, 3).weight[0, 0]))
        """
    )

    def printed() -> list[str]:
        text = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider").stdout.str()
        return re.findall(r"(?:KERAS|TORCH|OTHER) -?[0-9.e-]+", text)

    first, second = printed(), printed()
    assert len(first) == 3 and first == second
    # Each test gets its own seed, derived from its id.
    assert first[1].split()[1] != first[2].split()[1]
