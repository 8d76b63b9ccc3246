"""Issue 24, items 6 and 4: the hand-port bugs of fixtures/port_mutants.py (activation range, gradient-side
divergence), each in both directions, through port mode and through an outputs-only comparison; the correct ports
beside them, plus every fixture port (fixtures/ports.py GOOD_PORTS, fixtures/transformer_ports.py CASES), over 3
seeds for false failures; and the activation probe's cost in seconds.

    python benchmarks/port_cause_mutants.py [--kind activation|gradient] [--out benchmarks/port_cause_mutants.json]

Per mutant: caught (the check fails), cause named (the failure names the Keras layer, the torch module and the cause
phrase), outputs-only (the outputs differ at the check's atol/rtol with the check's own weight transfer: what
np.allclose(source(x), target(x)) on a correctly converted port shows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402 - imported before TensorFlow runs anything (PITFALLS: import order)

from fixtures import port_mutants, ports, transformer_ports  # noqa: E402
from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.errors import ParityError  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402

DIRECTIONS = ("keras->torch", "torch->keras")
SEEDS = (0, 1, 2)


def _oriented(pair: Any, direction: str) -> tuple[Any, Any]:
    keras_model, torch_model = pair.build_keras(), pair.build_torch()
    return (keras_model, torch_model) if direction == "keras->torch" else (torch_model, keras_model)


def _settings(layouts: tuple[str, str] | None, direction: str, seed: int = 0) -> ParitySettings:
    if layouts is None:
        return ParitySettings(devices=("cpu",), seed=seed)
    oriented = layouts if direction == "keras->torch" else (layouts[1], layouts[0])
    return ParitySettings(devices=("cpu",), layouts=oriented, seed=seed)


def _inputs_in_source_layout(inputs: Any, layouts: tuple[str, str] | None, direction: str) -> Any:
    if layouts is None or direction == "keras->torch":
        return inputs
    return inputs.transpose(0, 3, 1, 2).copy()  # NHWC -> NCHW: the torch source takes its own layout


def run_one(source: Any, target: Any, inputs: Any, settings: ParitySettings, name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = run_check(source, target, inputs, settings, "cpu", name)
        message, passed = "", True
    except ParityError as failure:
        result, message, passed = failure.result, str(failure), False
    except Exception as error:  # a refusal: no result to read
        return {"passed": False, "refused": f"{type(error).__name__}: {str(error)[:300]}",
                "seconds": time.perf_counter() - started}
    activations = result.activations
    return {"passed": passed, "message": message, "outputs_passed": result.outputs.passed,
            "seconds": time.perf_counter() - started, "notes": list(result.notes),
            "probe_s": activations.probe_s if activations is not None else None,
            "probes": len(activations.probes) if activations is not None else None,
            "partial": bool(activations and activations.partial),
            # The largest difference of a paired activation's two functions on the probe grid: float32 rounding on
            # correct ports, against the atol/rtol the probe holds them to (the tolerance's defence).
            "probe_max_abs": max((p.comparison.max_abs for p in activations.probes), default=None)
            if activations is not None else None,
            "probe_max_rel": max((p.comparison.max_rel for p in activations.probes), default=None)
            if activations is not None else None}


def mutants(kind: str) -> list[dict[str, Any]]:
    rows = []
    for name, pair in port_mutants.MUTANTS.items():
        if pair.kind != kind:
            continue
        for direction in DIRECTIONS:
            source, target = _oriented(pair, direction)
            inputs = _inputs_in_source_layout(port_mutants.make_inputs(pair.inputs, 3), pair.layouts, direction)
            row = run_one(source, target, inputs, _settings(pair.layouts, direction), name)
            message = row.pop("message", "")
            # Named: one line of the failure says the cause and names the Keras layer and the torch module.
            named = not row["passed"] and any(pair.keras_layer in line and pair.torch_module in line
                                              and pair.cause in line for line in message.splitlines())
            rows.append({"mutant": name, "direction": direction, "caught": not row["passed"],
                         "cause_named": named, "outputs_only_caught": row.get("outputs_passed") is False,
                         **{k: v for k, v in row.items() if k not in ("passed", "outputs_passed")},
                         **({} if named else {"message": message[-1500:]})})
            print(json.dumps({k: rows[-1][k] for k in ("mutant", "direction", "caught", "cause_named",
                                                       "outputs_only_caught")}), flush=True)
    return rows


def correct_ports(kind: str) -> list[dict[str, Any]]:
    rows = []
    cases: list[tuple[str, Any, Any, Any, ParitySettings, str]] = []
    for seed in SEEDS:
        for name, pair in port_mutants.CORRECT.items():
            if pair.kind != kind:
                continue
            for direction in DIRECTIONS:
                inputs = _inputs_in_source_layout(port_mutants.make_inputs(pair.inputs, seed), pair.layouts,
                                                  direction)
                cases.append((f"{name}[{direction}, seed {seed}]", pair, direction, inputs,
                              _settings(pair.layouts, direction, seed), name))
    for label, pair, direction, inputs, settings, name in cases:
        source, target = _oriented(pair, direction)
        row = run_one(source, target, inputs, settings, name)
        rows.append({"port": label, **{k: v for k, v in row.items() if k != "message"},
                     **({} if row["passed"] else {"message": row.get("message", "")[-1500:]})})
        print(json.dumps({"port": label, "passed": row["passed"]}), flush=True)
    return rows


def fixture_ports() -> list[dict[str, Any]]:
    """Every correct fixture port (both registries) over 3 seeds: the activation probe must not fail any."""
    import numpy as np

    rows = []
    for seed in SEEDS:
        for case in ports.GOOD_PORTS:
            rng = np.random.default_rng(seed)
            shape = (2, *case.keras_input_shape)
            if case.input_dtype == "int64":
                inputs = rng.integers(0, case.vocab_size or 2, shape).astype(np.int64)
            else:
                inputs = rng.standard_normal(shape).astype(np.float32)
            keras_model, torch_model = case.build_keras(), case.build_torch()
            if case.source == "keras":
                source, target, layouts = keras_model, torch_model, case.layouts
            else:
                source, target = torch_model, keras_model
                layouts = None if case.layouts is None else (case.layouts[1], case.layouts[0])
                inputs = ports.keras_to_torch_input(case, inputs)
            settings = ParitySettings(devices=("cpu",), layouts=layouts, seed=seed)
            row = run_one(source, target, inputs, settings, case.name)
            rows.append({"port": f"{case.name}[seed {seed}]", **{k: v for k, v in row.items() if k != "message"},
                         **({} if row["passed"] else {"message": row.get("message", "")[-1500:]})})
            print(json.dumps({"port": rows[-1]["port"], "passed": row["passed"], "notes": row.get("notes")}),
                  flush=True)
        for name, (build_keras, build_torch) in transformer_ports.CASES.items():
            for direction in DIRECTIONS:
                keras_model, torch_model = build_keras(), build_torch()
                source, target = ((keras_model, torch_model) if direction == "keras->torch"
                                  else (torch_model, keras_model))
                kind = transformer_ports.INPUTS[name]
                inputs = (port_mutants.make_inputs("tokens", seed, 3) if kind == "tokens" else
                          np.random.default_rng(seed).standard_normal(
                              (3, transformer_ports.SEQUENCE, transformer_ports.HIDDEN)).astype(np.float32))
                row = run_one(source, target, inputs, ParitySettings(devices=("cpu",), seed=seed), name)
                rows.append({"port": f"{name}[{direction}, seed {seed}]",
                             **{k: v for k, v in row.items() if k != "message"},
                             **({} if row["passed"] else {"message": row.get("message", "")[-1500:]})})
                print(json.dumps({"port": rows[-1]["port"], "passed": row["passed"]}), flush=True)
    return rows


def _summary(mutant_rows: list[dict[str, Any]], correct_rows: list[dict[str, Any]],
             fixture_rows: list[dict[str, Any]]) -> dict[str, Any]:
    probe = [row["probe_s"] for row in correct_rows + fixture_rows if row.get("probe_s") is not None]
    check = [row["seconds"] for row in correct_rows + fixture_rows if row.get("probe_s") is not None]
    return {
        "mutants": len(mutant_rows),
        "caught": sum(row["caught"] for row in mutant_rows),
        "cause_named": sum(row["cause_named"] for row in mutant_rows),
        "outputs_only_caught": sum(row["outputs_only_caught"] for row in mutant_rows),
        "correct_checks": len(correct_rows) + len(fixture_rows),
        "false_failures": sum(not row["passed"] for row in correct_rows + fixture_rows),
        "partial_passes": sum(bool(row.get("partial")) for row in correct_rows + fixture_rows),
        "correct_probe_max_abs": max((row["probe_max_abs"] for row in correct_rows + fixture_rows
                                      if row.get("probe_max_abs") is not None), default=None),
        "correct_probe_max_rel": max((row["probe_max_rel"] for row in correct_rows + fixture_rows
                                      if row.get("probe_max_rel") is not None), default=None),
        "smallest_mutant_probe_max_abs": min((row["probe_max_abs"] for row in mutant_rows
                                              if row.get("probe_max_abs")), default=None),
        "probe_s_median": statistics.median(probe) if probe else None,
        "probe_s_max": max(probe) if probe else None,
        "check_s_median": statistics.median(check) if check else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("activation", "gradient"), default="activation")
    parser.add_argument("--skip-fixtures", action="store_true", help="leave out the fixture ports' 3-seed sweep")
    parser.add_argument("--out", type=Path)
    arguments = parser.parse_args()
    out = arguments.out or ROOT / "benchmarks" / f"port_{arguments.kind}_mutants.json"
    mutant_rows = mutants(arguments.kind)
    correct_rows = correct_ports(arguments.kind)
    fixture_rows = [] if arguments.skip_fixtures else fixture_ports()
    report = {"kind": arguments.kind, "summary": _summary(mutant_rows, correct_rows, fixture_rows),
              "mutants": mutant_rows, "correct": correct_rows, "fixture_ports": fixture_rows,
              "torch": torch.__version__}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
