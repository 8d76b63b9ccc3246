"""The plugin's behaviour seen from pytest: marker, options, parametrization, fixture, summary, report.

These tests run inner pytest sessions (pytester) on small test files; none of them needs a framework unless it says so.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

HEAVY_MODULES = ("tensorflow", "keras", "torch", "onnx", "onnxruntime", "tf2onnx", "onnx2torch", "numpy")


def test_importing_the_plugin_imports_no_framework():
    code = ("import sys, pytest_parity, pytest_parity.plugin; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_a_session_without_parity_tests_imports_no_framework_and_prints_no_summary(pytester, monkeypatch):
    pytester.makepyfile(
        f"""
        import sys

        def test_plain():
            assert 1 + 1 == 2

        def test_no_framework_was_imported():
            assert not [m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}]
        """
    )
    # Only this plugin is loaded: other installed plugins (pytest-benchmark, hypothesis, ...) import numpy themselves,
    # which is what a GPU machine's image with many plugins showed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_subprocess("-p", "pytest_parity.plugin")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*parity summary*")


def test_marker_is_registered_with_a_description(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.parity(target=None, devices=*atol=1e-5*"])


def test_marker_works_under_strict_markers(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_marked(parity):
            assert parity.device == "cpu"
        """
    )
    pytester.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_options_are_documented_with_defaults(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*framework parity checks (pytest-parity)*",
        "*--parity-devices=LIST*",
        "*--parity-seed=INT*",
        "*--parity-report=PATH*",
        "*--parity-speed=MODE*",
    ])
    text = result.stdout.str()
    assert "Default: cpu,cuda" in text and "Default: 0" in text and "Default: no report" in text
    assert "Default: gate" in text


def test_fixture_is_documented(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["parity*", "*Framework parity checks*"])


def test_tests_are_parametrized_over_devices_with_ids(pytester, monkeypatch):
    monkeypatch.setattr("pytest_parity.plugin.gpu_may_be_present", lambda: True)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity
        def test_both(parity):
            pass

        @pytest.mark.parity(devices=("cpu",))
        def test_cpu_only(parity):
            pass

        def test_without_marker(parity):
            pass
        """
    )
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([
        "*test_both[[]cpu[]]", "*test_both[[]cuda[]]", "*test_cpu_only[[]cpu[]]",
        "*test_without_marker[[]cpu[]]", "*test_without_marker[[]cuda[]]",
    ])
    result.stdout.no_fnmatch_line("*test_cpu_only[[]cuda[]]*")


CUDA_BY_DEFAULT_OR_BY_NAME = """
import pytest

@pytest.mark.parity
def test_default(parity):
    pass

@pytest.mark.parity(devices=("cpu", "cuda"))
def test_named(parity):
    pass
"""


def test_without_a_gpu_the_default_devices_are_cpu_only_and_cuda_named_stays(pytester, monkeypatch):
    monkeypatch.setattr("pytest_parity.plugin.gpu_may_be_present", lambda: False)
    pytester.makepyfile(CUDA_BY_DEFAULT_OR_BY_NAME)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_default[[]cpu[]]", "*test_named[[]cpu[]]", "*test_named[[]cuda[]]"])
    result.stdout.no_fnmatch_line("*test_default[[]cuda[]]*")
    header = pytester.runpytest("--collect-only")
    header.stdout.fnmatch_lines(["parity: no GPU on this machine*--parity-devices=cpu,cuda*"])
    # Asked for by name on the command line or in the ini: generated (and skipped at run time, with the reason).
    for asked in (["--parity-devices=cpu,cuda"], ["-o", "parity_devices=cpu,cuda"]):
        result = pytester.runpytest("--collect-only", "-q", *asked)
        result.stdout.fnmatch_lines(["*test_default[[]cpu[]]", "*test_default[[]cuda[]]"])


def test_devices_option_and_ini_restrict_parametrization(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity
        def test_both(parity):
            pass

        @pytest.mark.parity(devices=("cuda",))
        def test_cuda_only(parity):
            pass
        """
    )
    result = pytester.runpytest("--parity-devices=cpu", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*not selected by --parity-devices/parity_devices=cpu*"])

    pytester.makeini("[pytest]\nparity_devices = cpu\n")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_both[[]cpu[]]"])
    result.stdout.no_fnmatch_line("*test_both[[]cuda[]]*")


def test_bad_devices_option_is_a_usage_error(pytester):
    result = pytester.runpytest("--parity-devices=cpu,tpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--parity-devices*expected a comma-separated list of cpu, cuda*"])


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        ("tolerance=1e-3", "*@pytest.mark.parity got unknown argument(s) tolerance; allowed: target, devices, atol*"),
        ("atol=-1.0", "*parity argument atol=-1.0 must be a finite number >= 0*"),
        ("rtol='tight'", "*parity argument rtol='tight' must be a number >= 0*"),
        ("devices=('cpu', 'tpu')", "*unknown device 'tpu'; known devices are ('cpu', 'cuda')*"),
        ("speed=0", "*parity argument speed=0 must be None (not measured) or a number > 0*"),
        ("grad='yes'", "*parity argument grad='yes' must be True or False*"),
    ],
)
def test_bad_marker_arguments_fail_that_test_only_with_a_clear_message(pytester, marker, expected):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.parity({marker})
        def test_bad(parity):
            pass

        def test_unrelated():
            pass
        """
    )
    result = pytester.runpytest("--parity-devices=cpu")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1 and outcomes["passed"] == 1
    result.stdout.fnmatch_lines([expected])
    # The message is all the user sees: no traceback into the plugin.
    result.stdout.no_fnmatch_line("*pytest_parity/*.py:*")


def test_overrides_are_validated_like_marker_arguments(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_override(parity):
            parity.check(object(), inputs=parity.randn(2), atoll=1e-3)

        @pytest.mark.parity(devices=("cpu",))
        def test_devices_override(parity):
            parity.check(object(), inputs=parity.randn(2), devices=("cpu",))
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*parity.check() got unknown argument(s) atoll; allowed: target, atol*",
        "*parity.check() cannot override devices*",
    ])


def test_an_object_that_is_not_a_model_fails_with_a_clear_message(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_not_a_model(parity):
            parity.check("a string", inputs=parity.randn(2, 3))
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*parity.check() got builtins.str, which is not a model it knows: pass a Keras*"])
    result.stdout.no_fnmatch_line("*pytest_parity/*.py:*")


def test_inputs_that_are_not_arrays_fail_with_a_clear_message(pytester):
    pytester.makepyfile(
        """
        import pytest

        class Module:
            pass
        Module.__module__ = "torch.nn.modules.module"

        @pytest.mark.parity(devices=("cpu",))
        def test_not_arrays(parity):
            parity.check(Module(), inputs="pixels")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*inputs is a builtins.str; parity inputs must be numpy arrays*"])


def test_randn_is_seeded_per_test_and_same_across_sessions_and_devices(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity
        def test_values(parity):
            print("VALUES", parity.device, parity.randn(3).tolist(), parity.randn(2, 2).dtype)

        @pytest.mark.parity(seed=7, devices=("cpu",))
        def test_other_seed(parity):
            print("SEED7", parity.randn(3).tolist())
        """
    )

    def values() -> dict[str, str]:
        # cuda may be skipped here (no GPU); the cpu values and the seed-7 values are what we compare.
        out = pytester.runpytest("-s", "--parity-devices=cpu").stdout.lines
        return dict(match.groups() for line in out if (match := re.search(r"(VALUES|SEED7) (.*)", line)))

    first, second = values(), values()
    assert first == second
    assert "float32" in first["VALUES"]
    assert first["VALUES"].split("[", 1)[1] != first["SEED7"].split("[", 1)[1]


def test_seed_option_changes_randn(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_values(parity):
            print("VALUES", parity.randn(3).tolist())
        """
    )

    def values(*args: str) -> str:
        lines = pytester.runpytest("-s", *args).stdout.lines
        return next(line.split("VALUES", 1)[1] for line in lines if "VALUES" in line)

    assert values() == values("--parity-seed=0")
    assert values() != values("--parity-seed=1")


def test_randn_rejects_bad_shapes(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parity(devices=("cpu",))
        def test_shape(parity):
            assert parity.randn((2, 3)).shape == (2, 3)
            with pytest.raises(Exception, match="the shape must be non-negative integers"):
                parity.randn(2, -1)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(("option", "what"), [("--parity-report", "parity report"),
                                               ("--parity-html", "parity HTML report")])
def test_unwritable_report_path_is_reported_not_crashed(pytester, option, what):
    pytester.makepyfile("def test_x(): pass")
    blocker = pytester.path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    result = pytester.runpytest(f"{option}={blocker}/report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines([f"*pytest-parity: cannot write the {what} to*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_empty_session_still_writes_the_report_it_was_asked_for(pytester):
    pytester.makepyfile("def test_x(): pass")
    report = pytester.path / "out" / "report.json"
    pytester.runpytest(f"--parity-report={report}").assert_outcomes(passed=1)
    document = json.loads(report.read_text())
    assert document["version"] == 1 and document["results"] == []
    assert set(document) == {"version", "created", "environment", "results"}
    assert document["environment"]["python"].count(".") == 2


def test_bad_speed_option_and_ini_are_usage_errors(pytester):
    result = pytester.runpytest("--parity-speed=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--parity-speed*invalid choice: 'sometimes'*"])
    pytester.makeini("[pytest]\nparity_speed = loud\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini option parity_speed must be one of off, report, gate, force, got 'loud'*"])


def test_speed_gating_is_off_under_xdist_unless_forced(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    header = "parity: speed is reported, not gated, under pytest-xdist*--parity-speed=force gates anyway"
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([header])
    for args in (["-n", "2", "--parity-speed=force"], ["-n", "0"], []):
        result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
        assert "speed is reported, not gated" not in result.stdout.str()
