"""The training check against the zoo of training bugs (fixtures/training_mutants.py), side by side with the
ecosystem's outputs-only method.

For each mutant (one training bug in a correct port, in one direction):
- caught: parity.check_training's machinery (run_training_check, 3 steps, default tolerances) raises ParityError;
- cause named: the failure message contains the mutant's cause (its ``expect`` substring);
- cause first: that substring is in the first divergence's "likely cause" (the single cause the check puts first);
- outputs-only: copy the source's weights into the port (port mode's carrying) and compare inference outputs with
  np.allclose semantics (atol=1e-5, rtol=1e-5), no gradients: what a test comparing model(x) after a weight copy sees.

Writes benchmarks/training_mutants.json and prints a markdown table.

    PYTHONPATH=. TF_CPP_MIN_LOG_LEVEL=2 .tox/py311/bin/python benchmarks/training_mutants.py
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import torch  # noqa: F401  (torch before TensorFlow: docs/pitfalls.md, import order)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from fixtures.training_mutants import BASES, MUTANTS
from pytest_parity import ParityError
from pytest_parity.check import run_check, run_training_check
from pytest_parity.settings import ParitySettings

OUTPUT = pathlib.Path(__file__).with_name("training_mutants.json")
STEPS = 3


def batches_for(case, seed: int = 0):
    rng = np.random.default_rng(seed)
    return case.make_batches(lambda *shape: rng.standard_normal(shape).astype(np.float32),
                             lambda low, high, shape: rng.integers(low, high, shape), STEPS)


def training_check(case, seed: int = 0) -> dict:
    source, target, arguments = case.arguments(batches_for(case, seed))
    layouts = arguments.pop("layouts")
    started = time.perf_counter()
    try:
        run_training_check(source, target, **arguments, steps=None, settings=ParitySettings(layouts=layouts, seed=seed),
                           device="cpu", seed_key=f"{case.name} {seed}")
        return {"caught": False, "message": "", "likely_cause": "", "seconds": time.perf_counter() - started}
    except ParityError as error:
        figures = error.result.training if error.result is not None else None
        first = (figures.first_divergence or "") if figures is not None else ""
        return {"caught": True, "message": str(error), "first_divergence": first,
                "likely_cause": first.split("likely cause:", 1)[1].strip() if "likely cause:" in first else "",
                "configuration": list(figures.configuration) if figures is not None else [],
                "seconds": time.perf_counter() - started}


def outputs_only(case, seed: int = 0) -> dict:
    """Inference outputs after carrying the weights: np.allclose(atol=1e-5, rtol=1e-5), no gradients."""
    inputs = batches_for(case, seed)[0][0]
    source, target, arguments = case.arguments(batches_for(case, seed))
    settings = ParitySettings(atol=1e-5, rtol=1e-5, grad=False, layouts=arguments["layouts"], seed=seed,
                              near_tie_retry=False)
    try:
        result = run_check(source, target, inputs, settings, "cpu", f"{case.name} outputs {seed}")
        return {"caught": not result.passed, "max_abs": result.outputs.max_abs if result.outputs else None}
    except ParityError as error:
        result = error.result
        return {"caught": True, "max_abs": getattr(getattr(result, "outputs", None), "max_abs", None)}


def main() -> None:
    rows = []
    false_failures = []
    for case in BASES:
        for seed in (0, 1, 2):
            found = training_check(case, seed)
            if found["caught"]:
                false_failures.append({"base": case.name, "seed": seed, "message": found["message"][:2000]})
    for mutant in MUTANTS:
        found = training_check(mutant.case)
        expect = mutant.expect.lower()
        outputs = outputs_only(mutant.case)
        rows.append({
            "mutant": mutant.name, "direction": mutant.direction, "category": mutant.category,
            "description": mutant.description, "expect": mutant.expect, "caught": found["caught"],
            "cause_named": found["caught"] and expect in found["message"].lower(),
            "cause_first": found["caught"] and expect in found["likely_cause"].lower(),
            "likely_cause": found.get("likely_cause", ""), "configuration": found.get("configuration", []),
            "caught_by_outputs_only": outputs["caught"], "outputs_max_abs": outputs["max_abs"],
            "seconds": round(found["seconds"], 3),
        })
    summary = {
        "mutants": len(rows), "distinct_bugs": len({r["mutant"] for r in rows}),
        "caught": sum(r["caught"] for r in rows), "cause_named": sum(r["cause_named"] for r in rows),
        "cause_first": sum(r["cause_first"] for r in rows),
        "caught_by_outputs_only": sum(r["caught_by_outputs_only"] for r in rows),
        "correct_ports": len(BASES), "seeds": 3, "false_failures": len(false_failures),
    }
    OUTPUT.write_text(json.dumps({"summary": summary, "mutants": rows, "false_failures": false_failures,
                                  "steps": STEPS, "tolerances": {"atol": 1e-5, "rtol": 1e-4, "update_rtol": 1e-3},
                                  "outputs_only": {"atol": 1e-5, "rtol": 1e-5}}, indent=1) + "\n")
    yes = {True: "y", False: "n"}
    print("| mutant | direction | caught | cause named | cause first | caught by outputs-only allclose |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mutant']} | {r['direction']} | {yes[r['caught']]} | {yes[r['cause_named']]} | "
              f"{yes[r['cause_first']]} | {yes[r['caught_by_outputs_only']]} |")
    print()
    print(f"{summary['caught']}/{summary['mutants']} caught ({summary['distinct_bugs']} distinct bugs), cause named "
          f"{summary['cause_named']}, cause first {summary['cause_first']}, outputs-only catches "
          f"{summary['caught_by_outputs_only']}; false failures of {summary['correct_ports']} correct ports x 3 seeds: "
          f"{summary['false_failures']}")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
