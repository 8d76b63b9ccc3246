"""Port mode over every fixture port, both directions: pass/fail and weight-transfer time.

Weight-transfer time is the check's ``conversion_s``: one recording forward pass of each model (which layers run, in
which order, on which shapes), pairing, and writing the carried weights into the target. For a tf.Module model it
includes its tf2onnx export (its structure is read from the ONNX graph). Median over ``--rounds`` checks per case and
direction; batch 3 on CPU. Good ports must pass; known-bad ports must fail (their failure's first line is shown).

    python benchmarks/port_transfer.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pytest_parity import import_guard

import_guard.install_guard()

import numpy as np  # noqa: E402
import torch  # noqa: E402, F401  (torch before TensorFlow: see PITFALLS.md)

from fixtures.ports import BAD_PORTS, GOOD_PORTS, PortCase  # noqa: E402
from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.errors import ParityError, ParityUsageError  # noqa: E402
from pytest_parity.layouts import parse_layouts  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402


def oriented(case: PortCase, direction: str, keras_inputs: np.ndarray):
    keras_model, torch_model = case.build_keras(), case.build_torch()
    if direction == "keras->torch":
        return keras_model, torch_model, keras_inputs, case.layouts
    if case.layouts is None:
        return torch_model, keras_model, keras_inputs, None
    return (torch_model, keras_model, parse_layouts(case.layouts).source_to_target(keras_inputs),
            (case.layouts[1], case.layouts[0]))


def run_case(case: PortCase, direction: str, rounds: int) -> tuple[str, float | None, str]:
    rng = np.random.default_rng(0)
    shape = (3, *case.keras_input_shape)
    keras_inputs = (rng.integers(0, case.vocab_size, shape).astype(np.int64) if case.input_dtype == "int64"
                    else rng.standard_normal(shape).astype(np.float32))
    source, target, inputs, layouts = oriented(case, direction, keras_inputs)
    settings = ParitySettings(devices=("cpu",), layouts=layouts)
    times = []
    for _ in range(rounds):
        try:
            result = run_check(source, target, inputs, settings, "cpu", case.name)
        except ParityError as failure:
            assert failure.result is not None
            times.append(failure.result.conversion_s)
            verdict, detail = "FAIL", (failure.result.diagnosis or str(failure)).splitlines()[0]
            continue
        except ParityUsageError as error:
            return "REFUSED", None, str(error).splitlines()[1].strip()
        times.append(result.conversion_s)
        verdict, detail = "pass", f"outputs {result.outputs.max_abs:.1e}, worst grad " \
                                  f"{result.worst_grad.max_abs if result.worst_grad else 0:.1e}"
    return verdict, statistics.median(times), detail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'case':<36} {'direction':<13} {'result':<8} {'transfer ms':>11}  detail")
    for case in GOOD_PORTS + BAD_PORTS:
        for direction in ("keras->torch", "torch->keras"):
            verdict, seconds, detail = run_case(case, direction, args.rounds)
            expected = "pass" if case.defect is None else "FAIL/REFUSED"
            flag = "" if (verdict == "pass") == (case.defect is None) else f"  <-- expected {expected}"
            transfer = "-" if seconds is None else f"{seconds * 1000:.0f}"
            print(f"{case.name:<36} {direction:<13} {verdict:<8} {transfer:>11}  {detail[:110]}{flag}")


if __name__ == "__main__":
    main()
