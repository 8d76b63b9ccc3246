"""Run the bad-input battery (tests/e2e/test_bad_input_battery.py) and print its figures.

    python benchmarks/bad_input_battery.py [-n 2]

Prints: cases tried, per category; how many end with a clear message (the case passes: the session ends normally,
the message names the cause and the fix, no internal frame, nothing handed in is changed); the defects by kind (the
strict xfails, by the kind their reason names), with their ids; and the wall time.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATTERY = ROOT / "tests" / "e2e" / "test_bad_input_battery.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", default="2", help="pytest-xdist workers (default 2)")
    options = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(BATTERY.parent)]
    import test_bad_input_battery as battery

    category = {case.id: case.category for case in battery.CASES}
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch, "battery.xml")
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "pytest", str(BATTERY), "-n", options.n, "-q",
                                    "-p", "no:cacheprovider", f"--junitxml={junit}"], cwd=ROOT,
                                   capture_output=True, text=True)
        wall = time.perf_counter() - started
        cases = ElementTree.parse(junit).getroot().iter("testcase")
        outcome: dict[str, tuple[str, str]] = {}
        for testcase in cases:
            case_id = testcase.get("name", "").split("[", 1)[-1].rstrip("]")
            skipped = testcase.find("skipped")
            failed = testcase.find("failure") if testcase.find("failure") is not None else testcase.find("error")
            if skipped is not None and skipped.get("type") == "pytest.xfail":
                outcome[case_id] = ("xfailed", skipped.get("message", "").removeprefix("xfail-reason: "))
            elif skipped is not None:
                outcome[case_id] = ("skipped", skipped.get("message", ""))
            elif failed is not None:
                outcome[case_id] = ("failed", (failed.get("message") or "").splitlines()[0][:160])
            else:
                outcome[case_id] = ("passed", "")
    per_category = collections.Counter(category.get(case_id, "?") for case_id in outcome)
    print(f"cases tried: {len(outcome)}  ({', '.join(f'{k} {v}' for k, v in per_category.items())})")
    clear = sum(1 for state, _ in outcome.values() if state == "passed")
    print(f"clear message (case passes): {clear} of {len(outcome)}")
    kinds: dict[str, list[str]] = collections.defaultdict(list)
    for case_id, (state, reason) in sorted(outcome.items()):
        if state == "xfailed":
            kinds[reason.split(":", 1)[0]].append(f"{case_id}: {reason.split(':', 1)[-1].strip()}")
    print(f"defects by kind (xfailed): {sum(len(v) for v in kinds.values())}")
    for kind, rows in sorted(kinds.items()):
        print(f"  {kind}: {len(rows)}")
        for row in rows:
            print(f"    {row}")
    others = {i: o for i, o in outcome.items() if o[0] in ("failed", "skipped")}
    for case_id, (state, text) in sorted(others.items()):
        print(f"  {state.upper()} {case_id}: {text}")
    print(f"wall time with -n {options.n}: {wall:.0f} s; pytest: {completed.stdout.strip().splitlines()[-1]}")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
