"""Issue 17: does noise decide the speed gate? The gate run many times, idle and under a background load that comes and
goes, on a fair pair and on a target made 4x slower, with the gate of before (median of wall-clock rounds, one 2 s
budget) and the sequential gate of now deciding by process CPU time or by wall time (the one it uses).

The pair: the demo CIFAR-10 CNN, Keras (source) and its hand-written PyTorch port (target), forward passes, batch 32,
CPU, prepared once with the adapters' own speed calls (the calls a check times). The slow target runs the PyTorch
forward 4 times per call: real work, so every clock sees it (a sleep would be invisible to CPU time). Each "run" is one
call of the gate, as one check makes it; the load changes between and during runs.

The load: ``--load-processes`` busy Python processes (default 2, one per core here), each alternating busy and idle
for random times in [0.2, 1.5] s (seeded), started and stopped by this script; bounded by --max-load-s.

    python benchmarks/speed_gate_noise.py [--runs 20] [--allowed 2.0] [--gates before,cpu,wall] [--loads idle,loaded]

Prints one line per (pair, load, gate) and the table of the closing note: false failures, inconclusive share,
detections, and the seconds the gate took per check (median, max).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _busy_then_idle(seed: int, stop_at: float) -> None:
    generator = random.Random(seed)
    while time.time() < stop_at:
        busy_until = min(stop_at, time.time() + generator.uniform(0.2, 1.5))
        while time.time() < busy_until:
            pass
        time.sleep(max(0.0, min(stop_at - time.time(), generator.uniform(0.2, 1.5))))


class BackgroundLoad:
    """Processes that come and go on the cores, for at most ``max_s`` seconds."""

    def __init__(self, processes: int, max_s: float, seed: int) -> None:
        self.processes, self.max_s, self.seed = processes, max_s, seed
        self.workers: list[multiprocessing.Process] = []

    def __enter__(self) -> BackgroundLoad:
        stop_at = time.time() + self.max_s
        context = multiprocessing.get_context("spawn")  # no fork of a process holding TensorFlow's threads
        self.workers = [context.Process(target=_busy_then_idle, args=(self.seed + index, stop_at), daemon=True)
                        for index in range(self.processes)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.join()


def _old_timing():
    """timing.py as it was before the sequential gate (from git), for the 'before' figures."""
    source = subprocess.run(["git", "show", "3020adf:pytest_parity/timing.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "timing_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("timing_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _calls(target_framework: str, repeat_target: int):
    import numpy as np

    from fixtures.ports import GOOD_PORTS
    from pytest_parity.frameworks import flatten_inputs
    from pytest_parity.frameworks.adapters import load_adapter

    case = next(c for c in GOOD_PORTS if c.name == "cifar_cnn")
    x = np.random.default_rng(0).standard_normal((32, 32, 32, 3)).astype(np.float32)
    source = load_adapter("tensorflow", case.build_keras())
    source_call = source.speed_call(flatten_inputs(x), "cpu", "forward")
    if target_framework == "tensorflow":  # the same model on both sides: a ratio of 1 by construction
        target_once = load_adapter("tensorflow", case.build_keras()).speed_call(flatten_inputs(x), "cpu", "forward")
    else:
        target = load_adapter("torch", case.build_torch())
        target_once = target.speed_call(flatten_inputs(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), "cpu",
                                        "forward")

    def target_call() -> None:
        for _ in range(repeat_target):
            target_once()

    return source_call, target_call


def _gate(name: str, source_call, target_call, allowed: float, old_timing):
    from pytest_parity.verdict import timing

    started = time.perf_counter()
    if name == "before":
        speed = old_timing.measure_speed(source_call, target_call, allowed)
        verdict = "pass" if speed.passed else "fail"
    else:
        clocks = timing.clocks_for("cpu")
        clocks = {timing.WALL: clocks[timing.WALL]} if name == "wall" else {timing.CPU: clocks[timing.CPU]}
        speed = timing.measure_speed(source_call, target_call, allowed, clocks=clocks)
        verdict = speed.verdict
    return {"verdict": verdict, "ratio": speed.ratio, "low": getattr(speed, "ratio_low", None),
            "high": getattr(speed, "ratio_high", None),
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--allowed", type=float, default=2.0)
    parser.add_argument("--gates", default="before,cpu,wall")
    parser.add_argument("--loads", default="idle,loaded")
    parser.add_argument("--pairs", default="same,slow-same,port,slow-port")
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument("--max-load-s", type=float, default=1800.0)
    parser.add_argument("--json", default=None, help="also write every run's figures here")
    args = parser.parse_args()

    from pytest_parity import import_guard

    import_guard.install_guard()
    old_timing = _old_timing()
    # same: the Keras CIFAR CNN against itself (ratio 1); port: against its PyTorch port, whose idle ratio (measured
    # here first, by the CPU clock) sets the limit at args.allowed times it. slow-*: the target's forward 4 times.
    pairs = {"same": _calls("tensorflow", 1), "slow-same": _calls("tensorflow", 4),
             "port": _calls("torch", 1), "slow-port": _calls("torch", 4)}
    from pytest_parity.verdict import timing

    # The port's idle ratio differs by clock (PyTorch keeps more threads busy per wall second than TensorFlow), so
    # each gate gets the limit at args.allowed times the idle ratio by its own clock.
    idle = timing.measure_speed(*pairs["port"], None)  # wall time decides, CPU time is the cross-check
    port_ratio = {"cpu": idle.cross_check_ratio, "wall": idle.ratio, "before": idle.ratio}

    def limit(pair: str, gate: str) -> float:
        return args.allowed * (port_ratio[gate] if pair.endswith("port") else 1.0)

    print(f"cifar_cnn Keras source; target the same Keras model (same) or its PyTorch port (port, idle ratio "
          f"{idle.cross_check_ratio:.2f} by CPU time, {idle.ratio:.2f} by wall time); forward, batch 32, cpu, "
          f"{os.cpu_count()} cores; limit {args.allowed} x the idle ratio; {args.runs} runs per cell; load: "
          f"{args.load_processes} processes busy/idle U(0.2, 1.5) s")
    rows = []
    for load in args.loads.split(","):
        for pair in args.pairs.split(","):
            for gate in args.gates.split(","):
                source_call, target_call = pairs[pair]
                runs = []
                if load == "loaded":
                    with BackgroundLoad(args.load_processes, args.max_load_s, seed=len(rows)):
                        runs = [_gate(gate, source_call, target_call, limit(pair, gate), old_timing)
                                for _ in range(args.runs)]
                else:
                    runs = [_gate(gate, source_call, target_call, limit(pair, gate), old_timing)
                            for _ in range(args.runs)]
                counts = {verdict: sum(1 for r in runs if r["verdict"] == verdict)
                          for verdict in ("pass", "fail", "inconclusive")}
                ratios = [r["ratio"] for r in runs]
                seconds = [r["seconds"] for r in runs]
                row = {"load": load, "pair": pair, "gate": gate, **counts,
                       "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                       "seconds_median": statistics.median(seconds), "seconds_max": max(seconds), "runs": runs}
                rows.append(row)
                wrong = counts["pass"] if pair.startswith("slow") else counts["fail"]
                print(f"{load:>6} {pair:>9} {gate:>6}: pass {counts['pass']:>2}  fail {counts['fail']:>2}  "
                      f"inconclusive {counts['inconclusive']:>2}  wrong {wrong:>2}  ratio median "
                      f"{row['ratio_median']:.2f} ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})  gate s median "
                      f"{row['seconds_median']:.1f} max {row['seconds_max']:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
