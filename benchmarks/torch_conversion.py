"""Convert-mode conversion time for PyTorch sources: torch.onnx.export -> ONNX -> onnx2torch -> weight matching.

Per model of fixtures/torch_convert_models.CASES, median of ROUNDS: the export (torch.onnx.export with dynamo=True,
optimize=False, opset 18 -> 17 down-conversion, the onnx2torch rewrites, ONNX checker), the import (onnx2torch), and
the weight matching; their sum is what a check reports as ``conversion_s``. Constant weights are randomized first, as
a check does. Also the first export of the process (it pays the exporter's one-time set-up) and how many source
weights were matched. CPU, one process; no arguments.

    python benchmarks/torch_conversion.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from fixtures.torch_convert_models import CASES
from pytest_parity.bridge import pipeline as bridge
from pytest_parity.bridge.torch_export import EXPORTER_CHOICE
from pytest_parity.bridge.weight_matching import match_weights
from pytest_parity.frameworks import flatten_inputs
from pytest_parity.frameworks.torch import TorchModel
from pytest_parity.modes.steps import randomize_constant_weights

ROUNDS = 5


def convert_once(source: TorchModel, inputs) -> tuple[float, float, float, int]:
    started = time.perf_counter()
    model_proto = bridge.export_torch(source, inputs)
    exported = time.perf_counter()
    target = bridge.import_into_torch(model_proto)
    imported = time.perf_counter()
    matching = match_weights(source.weights(), target.weights())
    matched = time.perf_counter()
    return exported - started, imported - exported, matched - imported, len(matching.matches)


def main() -> None:
    print(f"torch {torch.__version__}, {EXPORTER_CHOICE}, opset {bridge.OPSET}, {os.cpu_count()} cores, "
          f"median of {ROUNDS}")
    header = f"{'model':<18} {'export ms':>10} {'import ms':>10} {'match ms':>9} {'total ms':>9} {'matched':>8}"
    print(header)
    print("-" * len(header))
    first_export_s = None
    for name, (build, make_inputs) in CASES.items():
        source = TorchModel(build())
        randomize_constant_weights(source, np.random.default_rng(0))
        inputs = flatten_inputs(make_inputs(np.random.default_rng(1)))
        rounds = [convert_once(source, inputs) for _ in range(ROUNDS + (1 if first_export_s is None else 0))]
        if first_export_s is None:
            first_export_s = rounds.pop(0)[0]
        export_s, import_s, match_s = (statistics.median(r[i] for r in rounds) for i in range(3))
        total_s = statistics.median(sum(r[:3]) for r in rounds)
        weights = len(source.weights())
        print(f"{name:<18} {export_s * 1e3:10.0f} {import_s * 1e3:10.1f} {match_s * 1e3:9.1f} {total_s * 1e3:9.0f} "
              f"{rounds[0][3]:>4}/{weights:<3}")
    print(f"first export of the process (one-time exporter set-up included): {first_export_s * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
