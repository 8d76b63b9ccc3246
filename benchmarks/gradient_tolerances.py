"""How large are honest output and gradient differences? The measurements behind the default tolerances.

Runs convert mode (TF -> ONNX -> torch) on every reference model for several seeds and batch sizes, with tolerances
wide open, and prints the worst absolute and relative differences seen for outputs and for gradients (inputs and
weights). A default tolerance should sit well above these (a faithful conversion must pass on any seed) and far below
what a real bug produces (a weight off by 1e-3 moves gradients by ~1e-3).

    python benchmarks/gradient_tolerances.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pytest_parity import import_guard

import_guard.install_guard()

import numpy as np  # noqa: E402

from fixtures.keras_models import BUILDERS, INPUT_SHAPES  # noqa: E402
from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402

WIDE_OPEN = ParitySettings(atol=1.0, rtol=1.0, grad_atol=1.0, grad_rtol=1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    arguments = parser.parse_args()
    print(f"{'model':<18} {'batch':>5} {'out abs':>9} {'grad abs':>9}  worst gradient")
    overall = {"out": 0.0, "grad_abs": 0.0}
    for name, build in BUILDERS.items():
        for batch in (8, 32):
            worst_out = worst_abs = 0.0
            worst_name = ""
            for seed in range(arguments.seeds):
                model = build()
                x = np.random.default_rng(seed).standard_normal((batch, *INPUT_SHAPES[name])).astype(np.float32)
                result = run_check(model, None, x, WIDE_OPEN, "cpu", f"tolerances-{seed}")
                worst_out = max(worst_out, result.outputs.max_abs)
                for grad_name, comparison in (result.grads or {}).items():
                    if comparison.max_abs > worst_abs:
                        worst_abs, worst_name = comparison.max_abs, grad_name
            overall["out"] = max(overall["out"], worst_out)
            overall["grad_abs"] = max(overall["grad_abs"], worst_abs)
            print(f"{name:<18} {batch:>5} {worst_out:9.2e} {worst_abs:9.2e}  {worst_name}")
    print(f"worst over all: outputs {overall['out']:.2e} abs; gradients {overall['grad_abs']:.2e} abs")
    print(f"defaults: outputs atol {ParitySettings().atol:g} rtol {ParitySettings().rtol:g}; gradients atol "
          f"{ParitySettings().grad_atol:g} rtol {ParitySettings().grad_rtol:g}")


if __name__ == "__main__":
    main()
