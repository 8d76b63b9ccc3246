"""Baselines: compare each check's figures with a stored parity report, so numerical drift fails CI.

A baseline is a parity JSON report (``--parity-report`` writes one; ``--parity-baseline-update`` writes or updates
one). Entries are keyed by test id and device. A check that still passes its tolerances fails against the baseline when
its worst output or gradient error grew by more than ``factor`` (differences below ``FLOOR`` count as ``FLOOR``, so an
exact 0 does not make every rounding difference infinite growth), or when its speed ratio worsened by more than
``speed_tolerance``. The baseline's environment block says which framework versions it was taken with, so a tox matrix
keeps one baseline per cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_parity.reports import records as report

FLOOR = 1e-7
DEFAULT_FACTOR = 10.0
DEFAULT_SPEED_TOLERANCE = 0.25


class BaselineError(Exception):
    """The baseline file cannot be used; the message says why and what to do."""


@dataclass
class Baseline:
    path: str
    entries: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    # Entries whose speed ratio was taken on another kind of machine than this one: their speed is not compared (the
    # entry's "machine", else the environment block's; see records.machine).
    speed_other_machine: int = 0


def machine_of(entry: dict[str, Any], environment: dict[str, Any]) -> str | None:
    """The machine an entry's speed figures were taken on: its own "machine" key (a combined report's entry from a
    shard on another kind of machine), else its report's environment block; None when not recorded (older files)."""
    return entry.get("machine") or environment.get("machine")


def load(path: str, this_machine: str | None = None) -> Baseline:
    """The baseline at ``path``. Speed ratios stay keyed by machine: an entry taken on another kind of machine than
    ``this_machine`` (default: this one) keeps its output and gradient figures but not its speed, which is not compared
    across machine kinds."""
    baseline = _load(path)
    here = report.machine() if this_machine is None else this_machine
    for entry in baseline.entries.values():
        taken_on = machine_of(entry, baseline.environment)
        if entry.get("speed") and taken_on is not None and taken_on != here:
            entry["speed"] = None
            baseline.speed_other_machine += 1
    return baseline


def _load(path: str) -> Baseline:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"parity baseline {path} does not exist; create it with --parity-baseline-update") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BaselineError(f"parity baseline {path} cannot be read ({type(error).__name__}: {error}); regenerate it "
                            f"with --parity-baseline-update") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise BaselineError(f"parity baseline {path} is not a parity report (no 'results' list); regenerate it with "
                            f"--parity-baseline-update")
    if document.get("version") != report.REPORT_VERSION:
        raise BaselineError(f"parity baseline {path} has report version {document.get('version')!r}; this "
                            f"pytest-parity reads version {report.REPORT_VERSION}: regenerate it with "
                            f"--parity-baseline-update")
    entries = {}
    for entry in document["results"]:
        if not isinstance(entry, dict) or "nodeid" not in entry or "device" not in entry:
            raise BaselineError(f"parity baseline {path} has a result without nodeid/device: {str(entry)[:200]}; "
                                f"regenerate it with --parity-baseline-update")
        problem = _entry_problem(entry)
        if problem:
            raise BaselineError(f"parity baseline {path}: the entry of {entry['nodeid']} [{entry['device']}] "
                                f"{problem}, so drift cannot be measured against it. Regenerate the baseline with "
                                f"--parity-baseline-update, or restore the file from version control")
        entries[(entry["nodeid"], entry["device"])] = entry
    return Baseline(path, entries, document.get("environment") or {})


def _is_figure(value: Any) -> bool:
    # Reports store non-finite figures as the strings "inf" and "nan".
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value in ("inf", "nan", "-inf")


def _entry_problem(entry: dict[str, Any]) -> str | None:
    """What makes a baseline entry unusable for drift(), or None. Checked at load, so a bad file is one clear
    session-level error instead of a failure inside some test."""
    outputs = entry.get("outputs")
    if not isinstance(outputs, dict):
        return "has no 'outputs' figures"
    if not _is_figure(outputs.get("max_abs")):
        return f"has outputs.max_abs = {outputs.get('max_abs')!r}, not a number"
    grads = entry.get("grads")
    if grads is not None:
        if not isinstance(grads, dict):
            return f"has 'grads' = {str(grads)[:80]}, not a mapping of gradient figures"
        for name, figures in grads.items():
            if not isinstance(figures, dict) or not _is_figure(figures.get("max_abs")):
                return f"has grads[{name!r}] without a numeric max_abs"
    speed = entry.get("speed")
    if speed is not None and (not isinstance(speed, dict) or not _is_figure(speed.get("ratio"))):
        return "has a 'speed' entry without a numeric ratio"
    return None


def refuse_to_overwrite_unreadable(path: str) -> None:
    """--parity-baseline-update keeps the entries of tests that do not run; over a file it cannot read it would lose
    them all. Raises BaselineError when the file exists but is not a usable baseline."""
    if not Path(path).exists():
        return
    try:
        _load(path)
    except BaselineError as error:
        raise BaselineError(f"{error}\n--parity-baseline-update refuses to replace it: the entries of tests that do "
                            f"not run this time would be lost. The file is left as it is; fix it (resolve merge "
                            f"conflicts) or move it away, then run again.") from None


def _worst_grad(entry: dict[str, Any]) -> float | None:
    grads = entry.get("grads") or {}
    # Near-ties confirmed on moved inputs (verdict.near_ties) differ by chance amounts that say nothing of drift.
    values = [_number(c.get("max_abs_without_near_ties", c["max_abs"])) for c in grads.values()]
    return max(values) if values else None


def _number(value: Any) -> float:
    return float("inf") if isinstance(value, str) else float(value)


def drift(new: dict[str, Any], old: dict[str, Any], factor: float = DEFAULT_FACTOR,
          speed_tolerance: float = DEFAULT_SPEED_TOLERANCE) -> list[str]:
    """What got worse than the baseline allows, one sentence each naming the old and new figure."""
    problems = []
    for label, now, before in (("worst output difference", _number(new["outputs"]["max_abs"]),
                                _number(old["outputs"]["max_abs"])),
                               ("worst gradient difference", _worst_grad(new), _worst_grad(old))):
        if now is None or before is None:
            continue
        if now > factor * max(before, FLOOR):
            problems.append(f"{label} grew from {before:.3g} to {now:.3g} (more than {factor:g}x the baseline)")
    if new.get("speed") and old.get("speed"):
        now, before = new["speed"]["ratio"], old["speed"]["ratio"]
        if now > before * (1 + speed_tolerance):
            problems.append(f"speed ratio worsened from {before:.2f}x to {now:.2f}x (more than "
                            f"{speed_tolerance:.0%} over the baseline)")
    return problems


def update(path: str, records: list[dict[str, Any]], environment: dict[str, Any] | None = None) -> tuple[int, int]:
    """Write the session's records as the baseline, keeping entries of tests that did not run this time (a shard
    never prunes or rewrites the entries of tests it did not run); returns (entries from this session, entries kept).
    ``environment``: the block the records were taken in when not this process's (``combine --update-baseline``)."""
    kept: list[dict[str, Any]] = []
    # A refused check has no figures to gate on: its old entry, if any, stays until the check runs again.
    records = [entry for entry in records if not entry.get("refused")]
    new_environment = report.environment() if environment is None else environment
    if Path(path).exists():
        # An unreadable file raises: it was refused at session start, and must not be replaced by a partial one now.
        old = _load(path)
        ran = {(r["nodeid"], r["device"]) for r in records}
        kept = [entry for key, entry in old.entries.items() if key not in ran]
        # A kept entry's speed stays keyed by the machine it was taken on, when the new block names another.
        for entry in kept:
            taken_on = machine_of(entry, old.environment)
            if taken_on and "machine" not in entry and taken_on != new_environment.get("machine"):
                entry["machine"] = taken_on
    report.write_json(path, kept + list(records), environment_block=new_environment)
    return len(records), len(kept)


def written_line(path: str, written: int, kept: int, refused: int) -> str:
    """The summary's line for a session that wrote the baseline."""
    line = f"parity baseline: wrote {written + kept} {_entries(written + kept)} to {path}"
    if kept:
        line += f" ({written} from this session, {kept} kept from tests that did not run)"
    if refused:
        line += f"; {refused} refused check(s) have no figures and were left out"
    return line


def compared_line(baseline: Baseline, records: list[dict[str, Any]]) -> str:
    """The summary's line for a session compared with a baseline: how many checks were compared, how many drifted,
    and the checks the baseline could not judge (no entry; or failed their tolerances, so never compared)."""
    checked = [entry for entry in records if not entry.get("refused")]
    with_entry = [entry for entry in checked if (entry["nodeid"], entry["device"]) in baseline.entries]
    # A check is compared with its entry once it passed its tolerances; a drift failure is one that was.
    compared = [entry for entry in with_entry if entry["passed"] or entry.get("drift")]
    drifted = sum(1 for entry in compared if entry.get("drift"))
    line = (f"parity baseline: compared {len(compared)} {_entries(len(compared))} from {baseline.path}, {drifted} "
            f"drifted")
    if len(with_entry) > len(compared):
        line += f"; {len(with_entry) - len(compared)} not compared (failed their tolerances first)"
    if len(checked) > len(with_entry):
        line += (f"; {len(checked) - len(with_entry)} check(s) without an entry (--parity-baseline-update adds "
                 f"them)")
    if baseline.speed_other_machine:
        line += (f"; speed not compared for {baseline.speed_other_machine} {_entries(baseline.speed_other_machine)} "
                 f"taken on another kind of machine")
    return line


def _entries(count: int) -> str:
    return "entry" if count == 1 else "entries"
