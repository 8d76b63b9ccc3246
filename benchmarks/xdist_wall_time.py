"""Issue 5, measurement 2: wall time of the demo suite with pytest-xdist -n 2 against a serial run.

Each run is a fresh pytest process (imports included, as in CI); runs alternate serial / -n 2, and medians are
reported. Speed gating is off under xdist anyway; the demo suite sets no speed=.

    python benchmarks/xdist_wall_time.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "tests/demo", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                   check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    serial, parallel = [], []
    for _ in range(args.runs):
        serial.append(timed_run("-p", "no:xdist"))
        parallel.append(timed_run("-n", "2"))
    print("serial s: " + ", ".join(f"{t:.1f}" for t in serial) + f"  median {statistics.median(serial):.1f}")
    print("-n 2   s: " + ", ".join(f"{t:.1f}" for t in parallel) + f"  median {statistics.median(parallel):.1f}")
    print(f"ratio -n 2 / serial: {statistics.median(parallel) / statistics.median(serial):.2f}")


if __name__ == "__main__":
    main()
