"""Issue 6: run the whole coverage suite in chunks, each in a fresh pytest process, and write the README table.

One process for all 133 checks does not fit in 24 GB (it was killed at ConvNeXtLarge): TensorFlow, tf2onnx and Keras
keep what each model allocated, and a Keras export holds the weights several times over. So the suite runs in chunks
of up to 8 tests, the largest models alone, each chunk writing its own JSON report and JUnit XML; a chunk killed by the
OOM killer is recorded as such. Then the table is printed (benchmarks/coverage_table.py):

    python benchmarks/coverage_sweep.py --out coverage-reports > coverage.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "coverage"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import coverage_table  # noqa: E402
import test_architectures as suite  # noqa: E402

MODULE = "tests/coverage/test_architectures.py"
# Keras models over ~50 M parameters and PyTorch ones over ~150 M run alone, so one that runs out of memory takes
# nothing else with it (PyTorch frees a model's memory when it goes; TensorFlow and tf2onnx keep much of it).
LARGE = {"ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetB7", "EfficientNetV2M", "EfficientNetV2L",
         "InceptionResNetV2", "NASNetLarge", "ResNet152", "ResNet152V2", "convnext_large", "vit_l_16", "vit_l_32"}
CHUNK = 8


def test_ids() -> list[tuple[str, str]]:
    """(model name, pytest node id) for every coverage test, in the suite's order."""
    ids = [(name, f"{MODULE}::test_keras_application[cpu-{name}]") for name in sorted(suite.KERAS_APPLICATIONS)]
    ids += [(name, f"{MODULE}::test_torchvision_model[cpu-{name}]") for name in suite.TORCHVISION_MODELS]
    ids += [(name, f"{MODULE}::test_keras_block[cpu-{name}]") for name in sorted(suite.KERAS_BLOCK_INPUTS)]
    ids.append(("embedding_lstm", f"{MODULE}::test_keras_block_with_token_ids[cpu-embedding_lstm]"))
    return ids


def chunks(ids: list[tuple[str, str]]) -> list[list[str]]:
    groups: list[list[str]] = []
    current: list[str] = []
    for name, node in ids:
        if name in LARGE:
            groups.append([node])
            continue
        current.append(node)
        if len(current) == CHUNK:
            groups.append(current)
            current = []
    return groups + ([current] if current else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("coverage-reports"))
    parser.add_argument("--only", default="", help="comma-separated test functions to run, e.g. "
                                                   "test_torchvision_model,test_keras_block (default: all)")
    args = parser.parse_args()
    wanted = [name for name in args.only.split(",") if name]
    args.out.mkdir(parents=True, exist_ok=True)
    killed: dict[str, str] = {}
    started = time.perf_counter()
    ids = [(name, node) for name, node in test_ids() if not wanted or any(f"::{w}[" in node for w in wanted)]
    for index, group in enumerate(chunks(ids)):
        stem = args.out / f"chunk{index:03d}"
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "coverage",
                              f"--parity-report={stem}.json", f"--junitxml={stem}.xml", *group], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if run.returncode not in (0, 1):  # 0: all passed, 1: some failed; anything else: the run did not finish
            reason = ("killed by the out-of-memory killer of this 24 GB machine" if run.returncode in (-9, 137)
                      else f"pytest exited with {run.returncode}")
            killed.update({node: reason for node in group})
        print(f"chunk {index}: {len(group)} test(s), exit {run.returncode}, "
              f"{time.perf_counter() - started:.0f} s so far", file=sys.stderr)
    (args.out / "not_finished.json").write_text(json.dumps(killed, indent=2))
    coverage_table.print_table(coverage_table.rows_from_directory(args.out))


if __name__ == "__main__":
    main()
