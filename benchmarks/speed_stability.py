"""Issue 4, measurement 1: how stable is the speed ratio of one fixed model pair across separate runs?

The pair: the CIFAR-10 CNN in Keras (source) and its hand-written PyTorch port (target), port mode, forward passes,
batch 32, CPU. Each run is a fresh process (so imports, thread pools and allocator state start over, as in separate CI
jobs) doing one check with speed= measured; the figure per run is the check's median ratio. Goal: max/min over the
runs <= 1.10 on this noisy 2-core machine.

    python benchmarks/speed_stability.py [--runs 5] [--timed forward|forward_backward]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_RUN = """
import json, os, sys
sys.path.insert(0, {root!r})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pytest_parity import import_guard
import_guard.install_guard()
import numpy as np
import torch
from fixtures.ports import GOOD_PORTS
from pytest_parity.check import run_check
from pytest_parity.settings import ParitySettings
from pytest_parity.verdict import timing
timing.SETTLE_S = {settle_s!r}
case = next(c for c in GOOD_PORTS if c.name == "cifar_cnn")
x = np.random.default_rng(0).standard_normal((32, 32, 32, 3)).astype(np.float32)
settings = ParitySettings(devices=("cpu",), layouts=case.layouts, speed=1e3, timed={timed!r}, grad=False)
speed = run_check(case.build_keras(), case.build_torch(), x, settings, "cpu", "stability").speed
print(json.dumps({{"ratio": speed.ratio, "min": speed.ratio_min, "max": speed.ratio_max, "rounds": speed.rounds,
                  "iterations": speed.iterations, "source_ms": speed.source_s * 1e3,
                  "target_ms": speed.target_s * 1e3}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timed", default="forward", choices=("forward", "forward_backward"))
    parser.add_argument("--settle-ms", type=float, default=None, help="override timing.SETTLE_S (for A/B runs)")
    args = parser.parse_args()
    from pytest_parity.verdict import timing

    settle_s = timing.SETTLE_S if args.settle_ms is None else args.settle_ms / 1e3
    code = ONE_RUN.format(root=str(ROOT), timed=args.timed, settle_s=settle_s)
    ratios = []
    print(f"cifar_cnn Keras -> PyTorch port, batch 32, cpu, timed={args.timed}, settle {settle_s * 1e3:.0f} ms, "
          f"{os.cpu_count()} cores")
    print(f"{'run':>3}  {'ratio':>6}  {'spread':>11}  {'rounds':>6}  {'iter':>4}  {'source ms':>9}  {'target ms':>9}")
    for run in range(1, args.runs + 1):
        output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        ratios.append(figures["ratio"])
        print(f"{run:>3}  {figures['ratio']:>6.3f}  {figures['min']:>5.2f}-{figures['max']:<5.2f}  "
              f"{figures['rounds']:>6}  {figures['iterations']:>4}  {figures['source_ms']:>9.2f}  "
              f"{figures['target_ms']:>9.2f}")
    print(f"max/min of the per-run median ratios: {max(ratios) / min(ratios):.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
