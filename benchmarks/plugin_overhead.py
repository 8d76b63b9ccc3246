"""Benchmark 1: what loading pytest-parity costs a session with no parity tests.

Runs pytest over 200 trivial tests in a fresh process, alternating "plugin loaded" and "-p no:parity", and reports the
median wall time of each and their ratio (goal <= 1.03).

    python benchmarks/plugin_overhead.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRIVIAL_TESTS = 200


def write_suite(directory: Path) -> None:
    body = "\n".join(f"def test_{i}():\n    assert {i} + 1 == {i + 1}\n" for i in range(TRIVIAL_TESTS))
    (directory / "test_trivial.py").write_text(body)
    (directory / "pytest.ini").write_text("[pytest]\n")


def run_once(directory: Path, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra], cwd=directory,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_suite(directory)
        run_once(directory)  # warm the file system cache and .pyc files
        with_plugin, without_plugin = [], []
        for _ in range(arguments.rounds):
            with_plugin.append(run_once(directory))
            without_plugin.append(run_once(directory, "-p", "no:parity"))
    loaded, unloaded = statistics.median(with_plugin), statistics.median(without_plugin)
    print(f"{TRIVIAL_TESTS} trivial tests, {arguments.rounds} interleaved rounds")
    print(f"  plugin loaded : median {loaded:.3f} s (min {min(with_plugin):.3f})")
    print(f"  -p no:parity  : median {unloaded:.3f} s (min {min(without_plugin):.3f})")
    print(f"  ratio loaded / not loaded: {loaded / unloaded:.3f} (goal <= 1.03)")


if __name__ == "__main__":
    main()
