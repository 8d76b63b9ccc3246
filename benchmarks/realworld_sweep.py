"""Run the real-world suite (tests/realworld) one model per process and write benchmarks/realworld_table.md.

Each model runs in its own pytest process with a timeout, so a crash, an out-of-memory kill or a hang costs that row
only. xfail marks are ignored (--runxfail) so that the table shows the real message of an upstream failure, next to
the upstream thread the xfail names. The model list is tests/realworld/test_models.py's CASES:

    python benchmarks/realworld_sweep.py                      # everything, ~40 min on 2 cores
    python benchmarks/realworld_sweep.py --only timm,transformers:bert --timeout 600   # rerun these rows only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "realworld"))
sys.path.insert(0, str(ROOT))

import test_models as suite  # noqa: E402

from pytest_parity.reports.records import result_cell  # noqa: E402

MODULE = "tests/realworld/test_models.py"
URL = re.compile(r"https?://\S+?(?=\)?$|\)\s|\s|$)")


def run_one(library: str, name: str, timeout: float, scratch: Path) -> dict[str, str]:
    """One model in a fresh pytest process -> its table row."""
    stem = scratch / f"{library}-{name}"
    node = f"{MODULE}::test_{library}[cpu-{name}]"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "realworld", "--runxfail",
               f"--parity-report={stem}.json", f"--junitxml={stem}.xml", node]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, start_new_session=True)
    try:
        code: int | str = process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        code = f"timed out after {timeout:.0f} s"
    case = suite.CASES[library][name]
    row = {"library": library, "model": name + (f" ({case.note})" if case.note else ""), "converts": "-",
           "outputs": "-", "gradients": "-", "weights": "-", "conversion_s": "-", "result": "-", "cause": "",
           "wall_s": f"{time.perf_counter() - started:.0f}"}
    report = stem.with_suffix(".json")
    entries = json.loads(report.read_text())["results"] if report.exists() else []
    failure = _failure(stem.with_suffix(".xml"))
    if isinstance(code, str) or code not in (0, 1):  # 0: passed, 1: failed; else the run did not finish
        row.update(result="CRASH", cause=code if isinstance(code, str) else f"pytest exited with {code} (killed?)")
        return row
    if not entries:  # failed before a check was recorded (the builder, or an exception the plugin does not wrap)
        row.update(converts="no", result="ERROR" if failure else "SKIP", cause=failure or _skipped(stem))
    else:
        entry = entries[-1]
        account = entry.get("weight_account") or {}
        grads = (entry.get("grads") or {}).values()
        notes = entry.get("notes") or []  # what the check did that a user should know, e.g. an output left out
        row.update(result=result_cell(entry), cause=failure or ("note: " + notes[0][:200] if notes else ""))
        if not entry.get("refused"):
            row.update(converts="yes", outputs=f"{entry['outputs']['max_abs']:.1e}",
                       gradients=f"{max((g['max_abs'] for g in grads), default=0.0):.1e}",
                       weights=f"{account.get('compared', '-')} of {account.get('total', '-')}",
                       conversion_s=f"{entry['conversion_s']:.1f}")
        else:
            row["converts"] = "no"
    if case.xfail and row["result"] != "PASS":
        row["cause"] += f" (xfail, upstream: {', '.join(URL.findall(case.xfail)) or case.xfail})"
    elif case.xfail:
        row["cause"] = "XPASS: the xfail is stale, remove it"
    return row


def _failure(junit: Path) -> str:
    """The first line of the test's failure message ('' when it passed or did not run)."""
    if not junit.exists():
        return ""
    for element in ElementTree.parse(junit).getroot().iter():
        if element.tag in ("failure", "error"):
            text = (element.get("message") or element.text or "").strip()
            return text.splitlines()[0][:300] if text else element.tag
    return ""


def _skipped(stem: Path) -> str:
    junit = stem.with_suffix(".xml")
    skipped = ElementTree.parse(junit).getroot().find(".//skipped") if junit.exists() else None
    return "" if skipped is None else "skipped: " + (skipped.get("message") or "")


COLUMNS = {"library": "library", "model": "model", "converts": "converts", "outputs": "outputs (max abs)",
           "gradients": "gradients (worst max abs)", "weights": "weights compared", "conversion_s": "conversion s",
           "result": "result", "cause": "cause of failure", "wall_s": "wall s"}


def read_table(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The rows of a table this script wrote, keyed by (library, model name without its note)."""
    lines = path.read_text().splitlines()[2:] if path.exists() else []
    rows = [dict(zip(COLUMNS, line.strip("| ").split(" | "))) for line in lines if line.startswith("| ")]
    return {(row["library"], row["model"].split(" (")[0]): {**dict.fromkeys(COLUMNS, "-"), **row} for row in rows}


def write_table(rows: list[dict[str, str]], path: Path, kept: int) -> None:
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[key].replace("|", "/") for key in COLUMNS) + " |" for row in rows]
    full = sum(1 for row in rows if row["weights"] != "-" and len(set(row["weights"].split(" of "))) == 1)
    wall = sum(float(row["wall_s"]) for row in rows if row["wall_s"] != "-")
    summary = (f"{sum(row['converts'] == 'yes' for row in rows)} of {len(rows)} convert, "
               f"{sum(row['result'].startswith('PASS') for row in rows)} agree (PASS), "
               f"{full} compare every trainable weight's gradient; sweep wall time {wall / 60:.1f} min (sum of the "
               f"rows' wall s)" + (f"; {kept} row(s) kept from the previous table (--only)." if kept else "."))
    path.write_text("\n".join([*lines, "", summary, ""]))
    print(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated libraries or library:model; their rows replace "
                                                   "those of the existing table (default: all, a new table)")
    parser.add_argument("--timeout", type=float, default=480, help="seconds per model (default 480)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "realworld_table.md")
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    previous = read_table(args.out) if wanted else {}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for library, table in suite.CASES.items():
            for name in table:
                if wanted and library not in wanted and f"{library}:{name}" not in wanted:
                    if (library, name) in previous:
                        rows.append(previous[(library, name)])
                    continue
                rows.append(run_one(library, name, args.timeout, Path(scratch)))
                print(f"{library}:{name} {rows[-1]['result']} ({rows[-1]['wall_s']} s) {rows[-1]['cause'][:150]}",
                      file=sys.stderr, flush=True)
    write_table(rows, args.out, sum(row in previous.values() for row in rows))


if __name__ == "__main__":
    main()
