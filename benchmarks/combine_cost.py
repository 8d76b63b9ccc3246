"""The cost of ``python -m pytest_parity combine`` on a large sharded run: N parity checks in S shard reports.

Each record is a real one (a ParityResult's record: outputs with a histogram, two gradients, weight accounting, speed)
with its own test id and figures; the shards' reports carry their shard blocks (collected: every test id). Times each
step in-process (read + union, JSON, HTML, JUnit) and the whole command as a fresh process (imports included, as a CI
step runs it). Medians of the runs.

    python benchmarks/combine_cost.py [--records 10000] [--shards 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pytest_parity.reports import combine  # noqa: E402
from pytest_parity.reports import records as report  # noqa: E402
from pytest_parity.result import ParityResult, SpeedResult, WeightAccount  # noqa: E402
from pytest_parity.verdict.compare import compare_arrays, compare_trees  # noqa: E402


def _record(index: int, rng: np.random.Generator) -> dict:
    expected = rng.standard_normal(64).astype(np.float32)
    actual = expected + rng.standard_normal(64).astype(np.float32) * 1e-7
    outputs = compare_trees({"logits": actual}, {"logits": expected}, atol=1e-5, rtol=1e-4)
    grads = {name: compare_arrays(name, actual * 2, expected * 2, atol=1e-4, rtol=1e-3) for name in ("0.weight",
                                                                                                     "0.bias")}
    speed = SpeedResult(ratio=1.1, source_s=0.01, target_s=0.011, rounds=7, ratio_min=1.0, ratio_max=1.2,
                        allowed=None, passed=True)
    account = WeightAccount(total=2, compared=2)
    result = ParityResult(route="torch -> onnx -> torch", device="cpu", outputs=outputs, grads=grads, speed=speed,
                          weight_account=account, conversion_s=0.2, run_s=0.01)
    return report.record(f"tests/test_models.py::test_model[cpu-{index:05d}]", result)


def write_shards(directory: Path, records: int, shards: int) -> None:
    rng = np.random.default_rng(0)
    entries = [_record(index, rng) for index in range(records)]
    collected = [entry["nodeid"] for entry in entries]
    for group in range(1, shards + 1):
        part = entries[group - 1::shards]
        block = combine.shard_block({"name": f"group-{group}-of-{shards}", "group": group, "splits": shards,
                                     "collected": collected, "selected": [entry["nodeid"] for entry in part],
                                     "ran": {entry["nodeid"]: "passed" for entry in part}})
        report.write_atomically(str(directory / f"parity-group-{group}-of-{shards}.json"),
                                json.dumps(report.document(part, shard=block), indent=2) + "\n")


def timed(step) -> tuple[float, object]:
    started = time.perf_counter()
    value = step()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        shards, out = directory / "shards", directory / "out"
        shards.mkdir()
        write_shards(shards, args.records, args.shards)
        size = sum(path.stat().st_size for path in shards.glob("*.json"))
        steps: dict[str, list[float]] = {"read + union": [], "JSON": [], "HTML": [], "JUnit": [], "command": []}
        for _ in range(args.runs):
            seconds, combined = timed(lambda: combine.combine(combine.load_reports(combine.report_paths([shards]))))
            steps["read + union"].append(seconds)
            for name, write, suffix in (("JSON", combine.write_json, "json"), ("HTML", combine.write_html, "html"),
                                        ("JUnit", combine.write_junit, "xml")):
                steps[name].append(timed(functools.partial(write, str(out / f"combined.{suffix}"), combined))[0])
            steps["command"].append(timed(lambda: subprocess.run(
                [sys.executable, "-m", "pytest_parity", "combine", str(shards), "--json", str(out / "c.json"),
                 "--html", str(out / "c.html"), "--junit", str(out / "c.xml")], cwd=ROOT, check=True,
                capture_output=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}))[0])
        assert len(combined.results) == args.records and not combined.failed()  # type: ignore[attr-defined]
        sizes = {suffix: (out / f"combined.{suffix}").stat().st_size for suffix in ("json", "html", "xml")}
    print(f"{args.records} records in {args.shards} shard reports ({size / 1e6:.1f} MB), median of {args.runs}:")
    for name, seconds in steps.items():
        print(f"  {name:<13} {statistics.median(seconds):6.2f} s")
    print("  outputs: " + ", ".join(f"{suffix} {bytes_ / 1e6:.1f} MB" for suffix, bytes_ in sizes.items()))


if __name__ == "__main__":
    main()
