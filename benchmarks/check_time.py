"""What the verdict work of issue 13 costs: the demo suite's convert checks timed against another checkout.

Each round runs ``tests/demo/test_reference_models.py`` (the five reference Keras models, convert mode) in a fresh
pytest process, once per checkout, alternating, with the package taken from that checkout (PYTHONPATH) and the tests
from this tree; the conversion cache is off (-p no:cacheprovider). Per round: the session's wall time and the sum over
checks of the check's own time (conversion_s + run_s from the JSON report). Medians over the rounds, and their ratio.

    python benchmarks/check_time.py --versions before=/tmp/before,after=. --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/demo/test_reference_models.py"


def one_round(checkout: Path) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout.resolve()), str(ROOT)]),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SUITE,
                               f"--parity-report={report}"], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        checks = json.loads(report.read_text())["results"] if report.exists() else []
        own = sum((entry.get("conversion_s") or 0) + (entry.get("run_s") or 0) for entry in checks)
        outcome = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"exit {done.returncode}"
        return wall, own, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default="after=.")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    versions = [(label, Path(path)) for label, path in (part.split("=", 1) for part in args.versions.split(","))]
    walls: dict[str, list[float]] = {label: [] for label, _ in versions}
    owns: dict[str, list[float]] = {label: [] for label, _ in versions}
    for index in range(args.rounds):
        for label, checkout in versions:
            wall, own, outcome = one_round(checkout)
            walls[label].append(wall)
            owns[label].append(own)
            print(f"round {index + 1} {label:<8} wall {wall:6.2f} s  checks {own:6.2f} s  ({outcome})", flush=True)
    first = versions[0][0]
    for label, _ in versions:
        wall, own = statistics.median(walls[label]), statistics.median(owns[label])
        ratio = "" if label == first else (f"  ratio to {first}: wall {wall / statistics.median(walls[first]):.2f}, "
                                           f"checks {own / statistics.median(owns[first]):.2f}")
        print(f"median {label:<8} wall {wall:6.2f} s  checks {own:6.2f} s{ratio}")


if __name__ == "__main__":
    main()
