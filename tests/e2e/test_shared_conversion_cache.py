"""The conversion cache shared through S3 (--parity-cache=s3://...), against a real S3-compatible server: moto's, run by
these tests on a free port. Several pytest sessions convert the same models at once: no entry is ever corrupt, and
every session after the first writers hits. Bad settings (an unreachable endpoint, a bucket that does not exist, s3fs
missing, a read-only cache that is empty, a mistyped value) each end in one warning or usage error that names the
cause and the fix, never a traceback and never a failed check."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("s3fs", reason="the shared-cache tests need s3fs (pip install pytest-parity[s3])")
moto_server = pytest.importorskip("moto.server", reason="the shared-cache tests need moto[server]")

# Three small models, one Keras (the tf2onnx export) and two torch (torch.onnx), each cached under its own key.
SUITE = """
import pytest
import torch

def torch_model(width):
    torch.manual_seed(width)
    return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("width", [4, 8])
def test_torch(parity, width):
    parity.check(torch_model(width), inputs=parity.randn(5, 6))

@pytest.mark.parity(devices=("cpu",))
def test_keras(parity):
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(2)])
    parity.check(model, inputs=parity.randn(4, 6))
"""
MODELS = 3
TORCH_ONLY = ("-k", "torch and 4")  # one check, no TensorFlow import: the cheap session for the bad-input cases


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _s3_environment(endpoint: str) -> dict[str, str]:
    # moto accepts any credentials; AWS_ENDPOINT_URL_S3 is how botocore (so s3fs) is pointed at another server.
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint}


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """An s3fs filesystem on the server, the sessions' environment pointing at it, and a fresh bucket's name."""
    import s3fs

    for name, value in _s3_environment(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    filesystem = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    bucket = f"parity-{uuid.uuid4().hex[:12]}"
    filesystem.mkdir(bucket)
    return filesystem, bucket


def _session(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A pytest session as its own process (as a CI shard would be), started now, not waited for."""
    report = directory / f"report-{uuid.uuid4().hex[:8]}.json"
    command = [sys.executable, "-m", "pytest", "test_suite.py", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               f"--parity-report={report}", *args]
    process = subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    process.report = report  # type: ignore[attr-defined]
    return process


def _finish(process: subprocess.Popen[str]) -> tuple[str, list[str | None]]:
    """(output, the conversion cache outcome of each check in node id order); asserts that the session passed."""
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    results = sorted(json.loads(process.report.read_text())["results"],  # type: ignore[attr-defined]
                     key=lambda entry: entry["nodeid"])
    return output, [entry["conversion_cache"] for entry in results]


def _verify_entries(filesystem, prefix: str) -> list[str]:
    """Every object under the prefix is a complete entry holding an ONNX model; no temporary key is left."""
    import onnx

    from pytest_parity.bridge.cache import unframe

    filesystem.invalidate_cache()
    names = filesystem.ls(prefix, detail=False)
    assert all(name.endswith(".onnx-entry") for name in names), names
    for name in names:
        payload = unframe(filesystem.cat_file(name))
        assert payload is not None, f"{name} is corrupt"
        assert len(onnx.load_model_from_string(payload).graph.node) > 0
    return names


def test_concurrent_sessions_share_one_s3_cache_without_a_corrupt_entry(pytester, s3):
    filesystem, bucket = s3
    pytester.makepyfile(test_suite=SUITE)
    url = f"s3://{bucket}/conversions"
    # Cold: four sessions convert the same three models at once, racing to write each key.
    cold = [_session(pytester.path, f"--parity-cache={url}") for _ in range(4)]
    cold_outcomes = []
    for process in cold:
        output, outcomes = _finish(process)
        assert "ParityCacheWarning" not in output, output
        assert set(outcomes) <= {"miss", "hit"}
        cold_outcomes.append(outcomes)
    assert len(_verify_entries(filesystem, f"{bucket}/conversions")) == MODELS
    # Warm: every session that starts after the first writers hits, for every model.
    warm = [_session(pytester.path, f"--parity-cache={url}") for _ in range(4)]
    for process in warm:
        output, outcomes = _finish(process)
        assert outcomes == ["hit"] * MODELS, output
        assert f"conversion cache: {MODELS} hit" in output
    assert len(_verify_entries(filesystem, f"{bucket}/conversions")) == MODELS
    print("cold outcomes per session:", cold_outcomes)


def test_a_damaged_shared_entry_is_rebuilt_and_read_only_sessions_never_write(pytester, s3):
    filesystem, bucket = s3
    pytester.makepyfile(test_suite=SUITE)
    url = f"s3://{bucket}/conversions"
    _, outcomes = _finish(_session(pytester.path, f"--parity-cache={url}", *TORCH_ONLY))
    assert outcomes == ["miss"]
    (name,) = _verify_entries(filesystem, f"{bucket}/conversions")
    data = filesystem.cat_file(name)
    filesystem.pipe_file(name, data[: len(data) // 2])  # as a foreign, broken writer would leave it
    # Read-only: the damaged entry is noticed, converted around, and left alone; nothing new is written.
    output, outcomes = _finish(_session(pytester.path, f"--parity-cache={url}", "--parity-cache-readonly", "-k",
                                        "torch"))
    assert outcomes == ["rebuilt", "miss"] and "ParityCacheWarning" not in output
    filesystem.invalidate_cache()
    assert filesystem.ls(f"{bucket}/conversions", detail=False) == [name]
    assert filesystem.cat_file(name) == data[: len(data) // 2]
    # A writing session replaces it; then read-only sessions hit.
    _, outcomes = _finish(_session(pytester.path, f"--parity-cache={url}", *TORCH_ONLY))
    assert outcomes == ["rebuilt"]
    _verify_entries(filesystem, f"{bucket}/conversions")
    _, outcomes = _finish(_session(pytester.path, f"--parity-cache={url}", "--parity-cache-readonly", *TORCH_ONLY))
    assert outcomes == ["hit"]


def _one_warning(output: str) -> str:
    lines = [line for line in output.splitlines() if "ParityCacheWarning" in line]
    assert len(lines) == 1, output
    return lines[0]


def test_a_bucket_that_does_not_exist_warns_once_and_the_checks_pass(pytester, s3):
    pytester.makepyfile(test_suite=SUITE)
    output, outcomes = _finish(_session(pytester.path, "--parity-cache=s3://no-such-bucket-here/conversions", "-k",
                                        "torch", "-W", "error"))
    assert outcomes == ["miss", "miss"] and "2 passed" in output
    warning = _one_warning(output)
    assert "s3://no-such-bucket-here/conversions" in warning and "'no-such-bucket-here' does not exist" in warning
    assert "Create it, or fix the bucket in the URL" in warning


def test_an_unreachable_endpoint_warns_once_and_the_checks_pass(pytester, s3):
    _, bucket = s3
    pytester.makepyfile(test_suite=SUITE)
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    output, outcomes = _finish(_session(pytester.path, f"--parity-cache=s3://{bucket}/c", "-k", "torch",
                                        env={"AWS_ENDPOINT_URL_S3": closed}))
    assert outcomes == ["miss", "miss"] and "2 passed" in output
    warning = _one_warning(output)
    assert f"s3://{bucket}/c" in warning and "cannot be reached" in warning and closed in warning
    assert "AWS_ENDPOINT_URL_S3" in warning


def test_missing_s3fs_names_the_extra_to_install(pytester, s3):
    _, bucket = s3
    pytester.makepyfile(test_suite=SUITE)
    # As on a machine without s3fs: importing it fails (a None entry in sys.modules makes `import s3fs` raise).
    pytester.makeconftest("import sys\nsys.modules['s3fs'] = None\n")
    output, outcomes = _finish(_session(pytester.path, f"--parity-cache=s3://{bucket}/c", *TORCH_ONLY))
    assert outcomes == ["miss"] and "1 passed" in output
    assert "pip install pytest-parity[s3]" in _one_warning(output)


def test_read_only_over_an_empty_cache_warns_and_writes_nothing(pytester, s3):
    filesystem, bucket = s3
    pytester.makepyfile(test_suite=SUITE)
    output, outcomes = _finish(_session(pytester.path, f"--parity-cache=s3://{bucket}/empty",
                                        "--parity-cache-readonly", "-k", "torch"))
    assert outcomes == ["miss", "miss"]
    warning = _one_warning(output)
    assert "read-only" in warning and "holds no entries" in warning and "without --parity-cache-readonly" in warning
    filesystem.invalidate_cache()
    assert filesystem.ls(bucket, detail=False) == []


@pytest.mark.parametrize(("args", "expected"), [
    (("--parity-cache=s4://bucket/c",), "unknown URL protocol 's4'"),
    (("--parity-cache=maybe",), "invalid choice: 'maybe'"),
    (("--parity-cache=./c", "--parity-cache-readonly", "--parity-cache-clear"), "drop one of the two"),
])
def test_a_mistyped_cache_setting_is_a_usage_error(pytester, args, expected):
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str() and "Traceback" not in result.stderr.str()


def test_a_shared_directory_is_shared_by_sessions(pytester):
    pytester.makepyfile(test_suite=SUITE)
    _, outcomes = _finish(_session(pytester.path, "--parity-cache=./shared", *TORCH_ONLY))
    assert outcomes == ["miss"]
    assert len(list((pytester.path / "shared").glob("*.onnx-entry"))) == 1
    _, outcomes = _finish(_session(pytester.path, f"--parity-cache={pytester.path / 'shared'}", *TORCH_ONLY))
    assert outcomes == ["hit"]
