"""Issue 5, measurement 1: the demo suite run cold (conversion cache emptied) and warm (cache filled by the run before).

``--suite torch`` runs a suite of PyTorch -> ONNX -> PyTorch checks over fixtures/torch_convert_models.py instead,
where the export (torch.export + the ONNX translation, 2.5 s for the first in a process) is a larger share.

Each run is a fresh pytest process, as in CI; cold and warm runs alternate, medians are reported. Besides the wall
time of the whole process, the JSON report gives each check's conversion_s (export + import + weight matching), so the
step the cache acts on is measured on its own too.

    python benchmarks/conversion_cache.py [--runs 3]
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


TORCH_SUITE = """
import numpy as np
import pytest
from fixtures.torch_convert_models import CASES

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_model_round_trip(parity, name):
    build, make_inputs = CASES[name]
    assert parity.check(build(), inputs=make_inputs(np.random.default_rng(0))).passed
"""


def timed_run(tests: str, cache_dir: str, report: Path, *extra: str) -> tuple[float, float, list[str]]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", tests, "-q", "-p", "no:randomly", "-o", f"cache_dir={cache_dir}",
                    f"--rootdir={ROOT}", f"--parity-report={report}", *extra], cwd=ROOT, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    checks = json.loads(report.read_text())["results"]
    conversion = sum(entry["conversion_s"] for entry in checks if entry["conversion_cache"])
    return wall, conversion, [entry["conversion_cache"] for entry in checks if entry["conversion_cache"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--suite", choices=("demo", "torch"), default="demo")
    args = parser.parse_args()
    cold_walls, warm_walls, cold_conversions, warm_conversions = [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        cache_dir, report = str(Path(scratch) / "cache"), Path(scratch) / "report.json"
        tests = "tests/demo"
        if args.suite == "torch":
            tests = str(Path(scratch) / "test_torch_models.py")
            Path(tests).write_text(TORCH_SUITE)
        for _ in range(args.runs):
            wall, conversion, outcomes = timed_run(tests, cache_dir, report, "--parity-cache-clear")
            assert set(outcomes) == {"miss"}, outcomes
            cold_walls.append(wall)
            cold_conversions.append(conversion)
            wall, conversion, outcomes = timed_run(tests, cache_dir, report)
            assert set(outcomes) == {"hit"}, outcomes
            warm_walls.append(wall)
            warm_conversions.append(conversion)
    print(f"convert-mode checks per run: {len(outcomes)}")
    for label, cold, warm in (("whole run, wall s", cold_walls, warm_walls),
                              ("conversion step, s summed over checks", cold_conversions, warm_conversions)):
        print(f"{label}: cold {', '.join(f'{t:.2f}' for t in cold)} (median {statistics.median(cold):.2f}); "
              f"warm {', '.join(f'{t:.2f}' for t in warm)} (median {statistics.median(warm):.2f}); "
              f"warm / cold {statistics.median(warm) / statistics.median(cold):.2f}")


if __name__ == "__main__":
    main()
