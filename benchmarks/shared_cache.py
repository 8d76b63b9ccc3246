"""Issue 25, item 4: a coverage-suite subset on 1 vs 4 shards, each shard with its own conversion cache vs one shared
cache (a local directory, and an S3 bucket on moto's server), cold vs warm; wall times and cache hit rates.

Every shard is its own pytest process started at the same time as the others (as CI matrix jobs would be, here on one
machine), split by pytest-split (--splits 4 --group i) with the durations the serial cold run stored. Scenarios, in
the order they run:

    serial-cold           1 process, empty cache                      (the reference; stores the durations)
    serial-warm           1 process, the cache it filled
    shards-own-cold       4 shards, each its own empty cache dir       (CI machines without a shared cache: every run)
    shards-dir-cold/warm  4 shards, one shared directory, empty / filled by the cold round
    shards-s3-cold/warm   4 shards, one shared s3:// bucket (moto), empty / filled by the cold round

Only the export (tf2onnx / torch.onnx) is cached; imports, the ONNX -> torch import, runs and gradients are not, so a
warm run is faster by the export time only. On a 2-core machine 4 concurrent shards share the 2 cores: the 4-shard
wall time shows the shards' overlap on this machine, not what 4 CI machines would give (there, each shard's own wall
time, also recorded, is the figure).

    python benchmarks/shared_cache.py [--rounds 1] [--models MobileNet,resnet18,...]   -> benchmarks/shared_cache.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Ten architectures from tests/coverage whose conversion takes a few seconds each: three keras.applications (the
# tf2onnx export, the costly one) and seven torchvision models (torch.onnx).
MODELS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "resnet18", "squeezenet1_1", "mobilenet_v3_small",
          "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_y_400mf", "efficientnet_b0")
SHARDS = 4


def pytest_command(models: tuple[str, ...], cache: str, report: Path, *extra: str) -> list[str]:
    # keras.applications builders are capitalised, torchvision's names are not.
    functions = {True: "test_keras_application", False: "test_torchvision_model"}
    tests = [f"tests/coverage/test_architectures.py::{functions[name[0].isupper()]}[cpu-{name}]" for name in models]
    return [sys.executable, "-m", "pytest", *tests, "-m", "coverage", "-q",
            "-p", "no:cacheprovider", "-p", "no:randomly", f"--parity-cache={cache}", f"--parity-report={report}",
            *extra]


def run_round(name: str, commands: list[list[str]], reports: list[Path], env: dict[str, str]) -> dict[str, Any]:
    """Start every command at once, wait for all; wall time of the round and of each process, cache outcomes."""
    started = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for command in commands]
    # Each shard's own finish time: read the outputs on threads, so a shard that ends early is not timed when the
    # loop gets to it.
    with ThreadPoolExecutor(len(processes)) as pool:
        finished = list(pool.map(lambda process: (process.communicate()[0], time.perf_counter()), processes))
    shard_walls = [at - started for _, at in finished]
    for process, (output, _) in zip(processes, finished):
        if process.returncode != 0:
            raise SystemExit(f"{name}: a shard failed (exit {process.returncode}):\n{output[-4000:]}")
        if "ParityCacheWarning" in output:
            raise SystemExit(f"{name}: the cache warned:\n{output[-4000:]}")
    wall = time.perf_counter() - started
    outcomes: dict[str, int] = {}
    checks = 0
    for report in reports:
        for entry in json.loads(report.read_text())["results"]:
            checks += 1
            outcome = entry["conversion_cache"] or "none"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    row = {"scenario": name, "processes": len(commands), "checks": checks, "wall_s": round(wall, 1),
           "shard_wall_s": [round(t, 1) for t in shard_walls], "outcomes": outcomes,
           "hit_rate": round(outcomes.get("hit", 0) / checks, 3) if checks else None}
    print(json.dumps(row), flush=True)
    return row


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="repetitions of every scenario (medians over them)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "shared_cache.json"))
    args = parser.parse_args()
    models = tuple(args.models.split(","))

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    endpoint = f"http://127.0.0.1:{free_port()}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(endpoint.rsplit(":", 1)[1]), verbose=False)
    server.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}
    s3 = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, key="testing", secret="testing")
    rows: list[dict[str, Any]] = []
    try:
        for repetition in range(args.rounds):
            with tempfile.TemporaryDirectory() as scratch_name:
                scratch = Path(scratch_name)
                durations = scratch / "durations.json"

                def reports(name: str, count: int, scratch: Path = scratch) -> list[Path]:
                    return [scratch / f"{name}-{i}.json" for i in range(count)]

                def sharded(name: str, caches: list[str], scratch: Path = scratch,
                            durations: Path = durations) -> dict[str, Any]:
                    paths = reports(name, SHARDS)
                    commands = [pytest_command(models, caches[i], paths[i], f"--splits={SHARDS}", f"--group={i + 1}",
                                               f"--durations-path={durations}") for i in range(SHARDS)]
                    return run_round(name, commands, paths, env)

                serial_cache = str(scratch / "serial-cache")
                (path,) = reports("serial-cold", 1)
                rows.append(run_round("serial-cold", [pytest_command(
                    models, serial_cache, path, "--store-durations", f"--durations-path={durations}")], [path], env))
                (path,) = reports("serial-warm", 1)
                rows.append(run_round("serial-warm", [pytest_command(models, serial_cache, path)], [path], env))
                rows.append(sharded("shards-own-cold", [str(scratch / f"own-{i}") for i in range(SHARDS)]))
                shared = str(scratch / "shared")
                rows.append(sharded("shards-dir-cold", [shared] * SHARDS))
                rows.append(sharded("shards-dir-warm", [shared] * SHARDS))
                bucket = f"parity-bench-{repetition}"
                s3.mkdir(bucket)
                url = f"s3://{bucket}/conversions"
                rows.append(sharded("shards-s3-cold", [url] * SHARDS))
                rows.append(sharded("shards-s3-warm", [url] * SHARDS))
                for row in rows[-7:]:
                    row["round"] = repetition
    finally:
        server.stop()
    summary = summarize(rows)
    result = {
        "about": __doc__.splitlines()[0],
        "command": "python benchmarks/shared_cache.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "models": list(models), "shards": SHARDS, "rounds": args.rounds, "rows": rows, "summary": summary,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median wall time per scenario over the rounds, and the ratios the documentation quotes."""
    medians: dict[str, float] = {}
    for name in dict.fromkeys(row["scenario"] for row in rows):
        medians[name] = statistics.median(row["wall_s"] for row in rows if row["scenario"] == name)
    shard_medians = {name: statistics.median(t for row in rows if row["scenario"] == name
                                             for t in row["shard_wall_s"]) for name in medians}

    def ratio(a: str, b: str) -> float:
        return round(medians[a] / medians[b], 2)

    return {
        "median_wall_s": medians,
        "median_shard_wall_s": shard_medians,
        "warm_over_cold_serial": ratio("serial-warm", "serial-cold"),
        "four_own_caches_over_serial_cold": ratio("shards-own-cold", "serial-cold"),
        "four_shared_dir_warm_over_own_caches": ratio("shards-dir-warm", "shards-own-cold"),
        "four_shared_s3_warm_over_own_caches": ratio("shards-s3-warm", "shards-own-cold"),
        "four_shared_s3_warm_over_serial_cold": ratio("shards-s3-warm", "serial-cold"),
        "hit_rates": {row["scenario"]: row["hit_rate"] for row in rows},
    }


if __name__ == "__main__":
    main()
