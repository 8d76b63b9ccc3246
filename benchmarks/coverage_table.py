"""Issue 6: the README's coverage table, from one run of the coverage suite.

    pytest tests/coverage -m coverage --parity-report=coverage.json --junitxml=coverage.xml
    python benchmarks/coverage_table.py coverage.json coverage.xml
    python benchmarks/coverage_table.py coverage-reports/      # the chunks of benchmarks/coverage_sweep.py
    python benchmarks/coverage_table.py sweep/ rerun/          # rerun/'s rows replace sweep/'s for the same models

The JSON parity report gives the figures of every check that ran to a comparison; JUnit XML gives the outcome and the
failure message of every test, including those that stopped before a comparison (a converter that refused an op).
Prints a Markdown table: model, converts, outputs agree, gradients agree, worst errors, conversion time, cause.
"""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

FAMILIES = {"keras_application": "keras.applications", "torchvision_model": "torchvision.models",
            "keras_block": "Keras building block", "keras_block_with_token_ids": "Keras building block"}
TEST_NAME = re.compile(r"test_(\w+)\[cpu-(.+)\]")


def rows_from_directory(directory: Path) -> list[dict[str, str]]:
    """The rows of every chunkNNN.json / chunkNNN.xml pair in ``directory`` (benchmarks/coverage_sweep.py), plus a
    row for each test whose chunk did not finish (not_finished.json: node id -> why)."""
    table: list[dict[str, str]] = []
    for junit in sorted(directory.glob("*.xml")):
        table += rows(junit.with_suffix(".json"), junit)
    not_finished = directory / "not_finished.json"
    for node, reason in (json.loads(not_finished.read_text()) if not_finished.exists() else {}).items():
        match = TEST_NAME.search(node)
        if match:
            table.append({"family": FAMILIES.get(match.group(1), match.group(1)), "model": match.group(2),
                          "converts": "-", "outputs": "-", "gradients": "-", "worst": "-", "weights": "-",
                          "conversion_s": "-",
                          "cause": f"not run to the end: {reason}"})
    return table


def rows(report_path: Path, junit_path: Path) -> list[dict[str, str]]:
    results = json.loads(report_path.read_text())["results"] if report_path.exists() else []
    records = {entry["nodeid"].split("::")[-1]: entry for entry in results}
    table = []
    for case in ElementTree.parse(junit_path).getroot().iter("testcase"):
        name = case.get("name", "")
        match = TEST_NAME.match(name)
        if not match:
            continue
        family = FAMILIES.get(match.group(1), match.group(1))
        failure = case.find("failure")
        skipped = case.find("skipped")
        entry = records.get(name)
        row = {"family": family, "model": match.group(2), "converts": "-", "outputs": "-", "gradients": "-",
               "worst": "-", "weights": "-", "conversion_s": "-", "cause": ""}
        if skipped is not None:
            row["cause"] = "skipped: " + (skipped.get("message") or "")
        elif entry is None or entry.get("outputs") is None:
            # No record, or a REFUSED one (the check stopped before running: a conversion refused, memory, ...).
            row["converts"] = "no"
            row["cause"] = _first_line(failure)
        else:
            grads = entry["grads"] or {}
            worst_grad = max((c["max_abs"] for c in grads.values()), key=_sortable, default=None)
            row.update(converts="yes", outputs="yes" if entry["outputs"]["passed"] else "no",
                       gradients="yes" if all(c["passed"] for c in grads.values()) else "no",
                       worst=f"{_figure(entry['outputs']['max_abs'])} / {_figure(worst_grad)}",
                       weights=_weights(entry.get("weight_account")), conversion_s=f"{entry['conversion_s']:.1f}",
                       cause=_near_ties(grads) if entry["passed"] else _first_line(failure))
        table.append(row)
    return table


# Limitations that are upstream's, recognised in the failure text, with the upstream thread to follow.
UPSTREAM = {
    "StatefulPartitionedCall": "onnx/tensorflow-onnx#2099, #2347 (Keras runs grouped convolutions through an "
                               "XLA-compiled function, which tf2onnx does not inline)",
}
# The lines of a failure that say why, most telling first.
CAUSE_PREFIXES = ("hint (scale):", "hint (float32 rounding):", "near-tie re-check:", "hint:", "diagnosis:")


def _first_line(failure: ElementTree.Element | None) -> str:
    """The most telling line of a failure: a hint or diagnosis when the check ran, else its first line."""
    if failure is None:
        return ""
    text = (failure.text or failure.get("message") or "").strip()
    lines = [line.strip().removeprefix("E").strip() for line in text.splitlines()]
    cause = next((line for prefix in CAUSE_PREFIXES for line in lines if line.startswith(prefix)), None)
    cause = cause or (text.splitlines()[0] if text else "")
    upstream = next((link for pattern, link in UPSTREAM.items() if pattern in text), None)
    cause = cause[:300] + ("..." if len(cause) > 300 else "")
    return f"{cause} Upstream: {upstream}" if upstream else cause


def _weights(account: dict | None) -> str:
    """'compared k of n' from the weight account, with what was not compared ('1 unused')."""
    if not account:
        return "-"
    extra = [f"{len(account[key])} {label}" for key, label in (("uncompared", "not compared"), ("allowed", "allowed"),
                                                               ("unused", "unused")) if account.get(key)]
    return f"{account['compared']} of {account['total']}" + (f" ({', '.join(extra)})" if extra else "")


def _near_ties(grads: dict) -> str:
    """A passing check's near-ties (verdict.near_ties): elements that differed on the given inputs only."""
    tied = [c["near_ties"] for c in grads.values() if c.get("near_ties")]
    if not tied:
        return ""
    return (f"passed; {sum(tied)} element(s) of {len(tied)} gradient(s) differed on the given inputs only and agreed "
            f"on moved ones (near-ties or rounding at the tolerance's edge)")


def _figure(value: object) -> str:
    return "-" if value is None else value if isinstance(value, str) else f"{value:.1e}"


def _sortable(value: object) -> float:
    return float("inf") if isinstance(value, str) else float(value)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+",
                        help="report.json report.xml, or directories of chunks (a later directory's row for a model "
                             "replaces an earlier one's: a rerun of a few tests after a sweep)")
    args = parser.parse_args()
    if all(path.is_dir() for path in args.paths):
        print_table(merged([rows_from_directory(path) for path in args.paths]))
    else:
        print_table(rows(*args.paths))


def merged(tables: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """One row per (family, model), in first-seen order, each from the last table that has it."""
    latest: dict[tuple[str, str], dict[str, str]] = {}
    for table in tables:
        for row in table:
            latest[(row["family"], row["model"])] = row
    return list(latest.values())


def print_table(table: list[dict[str, str]]) -> None:
    print("| family | model | converts | outputs agree | gradients agree | worst output / gradient (max abs) | "
          "weights compared | conversion s | cause of failure, or note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['family']} | {row['model']} | {row['converts']} | {row['outputs']} | {row['gradients']} | "
              f"{row['worst']} | {row.get('weights', '-')} | {row['conversion_s']} | "
              f"{row['cause'].replace('|', '/')} |")
    ran = [row for row in table if not row["cause"].startswith(("skipped", "not run:"))]
    agreeing = sum(1 for row in ran if row["outputs"] == row["gradients"] == "yes")
    converting = sum(1 for row in ran if row["converts"] == "yes")
    every_weight = sum(1 for row in ran if _every_weight(row.get("weights", "-")))
    tied = sum(1 for row in ran if row["cause"].startswith("passed;"))
    print(f"\n{converting} of {len(ran)} convert, {agreeing} of {len(ran)} agree in outputs and gradients, "
          f"{every_weight} of {len(ran)} compare every trainable weight, {tied} of them pass with near-ties "
          f"confirmed on moved inputs ({len(table) - len(ran)} skipped or not run)")


def _every_weight(cell: str) -> bool:
    match = re.match(r"(\d+) of (\d+)", cell)
    return bool(match) and match.group(1) == match.group(2)


if __name__ == "__main__":
    main()
