"""Sharded runs: each shard's report says which shard it is and what it collected and ran; ``combine`` unions them.

A shard (pytest-split's ``--splits N --group i``, ``--parity-shard=NAME``, or ``--parity-report=DIR/``) writes the
single-run JSON report plus a ``shard`` block: its name, group and splits, the parity tests it collected (before a
splitting plugin deselected the other shards' tests), those it selected, and how each that ran ended. ``python -m
pytest_parity combine`` (``__main__.py``) reads the shards' reports and writes one report in the single-run formats
(JSON, HTML) plus JUnit XML, after checking that they fit together:

- results are unioned by test id; a test id that ran in several shards with different outcomes is a conflict;
- a parity test some shard collected but no shard ran is listed (a shard that never reported, a crash, ``-x``);
- each result keeps the machine it ran on when the shards ran on different kinds of machine: speed figures stay keyed
  by machine (baseline.load compares a speed ratio only on the machine kind it was taken on).

``combine --update-baseline PATH`` writes the baseline from the combined result (baseline.update: the entries of tests
that did not run are kept, conflicting test ids keep their old entry). See docs/sharding.md.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from pytest_parity.reports import baseline as baselines
from pytest_parity.reports import records as report

# The keys a result must have for the reports to be drawn from it (refused_record's are the fewest a check has).
RESULT_KEYS = ("nodeid", "device", "route", "passed", "outputs", "grads", "speed")
# How bad an outcome is, for picking the result a conflicting test id shows (the worst) and for the exit status.
SEVERITY = {"pass": 0, "skipped": 1, "drift": 2, "fail": 3, "refused": 3, "error": 4}
# pytest's outcomes of a test, as a shard records them, mapped to the words above.
TEST_OUTCOMES = {"passed": "pass", "failed": "fail", "skipped": "skipped", "error": "error"}


class CombineError(Exception):
    """The input cannot be combined; the message names the cause and the fix."""


# --------------------------------------------------------------------------------------------------------------------
# The shard side (plugin.py): the shard's name, its report's file name, the block its report carries
# --------------------------------------------------------------------------------------------------------------------


def shard_name(explicit: str | None, group: int | None, splits: int | None, host: str | None = None,
               pid: int | None = None) -> str:
    """--parity-shard when given, else pytest-split's group ("group-2-of-4"), else host name and process id."""
    if explicit:
        return explicit
    if group and splits:
        return f"group-{group}-of-{splits}"
    return f"{host or socket.gethostname()}-{os.getpid() if pid is None else pid}"


def shard_report_name(name: str) -> str:
    """The file a shard writes under --parity-report=DIR/: parity-NAME.json, NAME made safe for a file name."""
    return f"parity-{re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('.') or 'shard'}.json"


def shard_block(shard: dict[str, Any]) -> dict[str, Any]:
    """The ``shard`` key of a shard's JSON report: name, group, splits, the parity tests collected and selected (in
    collection order) and each selected test's outcome as pytest reported it (passed, failed, skipped, error)."""
    parity_tests = set(shard["selected"]) | set(shard["collected"])  # the outcomes of other tests are not kept
    return {"name": shard["name"], "group": shard.get("group"), "splits": shard.get("splits"),
            "collected": list(shard["collected"]), "selected": list(shard["selected"]),
            "ran": {nodeid: outcome for nodeid, outcome in shard["ran"].items() if nodeid in parity_tests}}


# --------------------------------------------------------------------------------------------------------------------
# Reading the shards' reports
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ShardReport:
    path: str
    name: str
    document: dict[str, Any]

    @property
    def shard(self) -> dict[str, Any] | None:
        return self.document.get("shard")


def report_paths(arguments: Iterable[str], outputs: Iterable[str] = ()) -> list[str]:
    """The report files named: each file as given; each directory's *.json files at any depth (a CI artifact download
    puts each shard's in a folder of its own), without the files combine writes and earlier combined reports."""
    skip = {os.path.realpath(path) for path in outputs if path}
    found: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            inside = sorted(str(candidate) for candidate in path.rglob("*.json") if candidate.is_file()
                            and os.path.realpath(candidate) not in skip and _is_shard_candidate(candidate))
            if not inside:
                raise CombineError(f"{argument} holds no parity report (no *.json file with a 'results' list at any "
                                   f"depth). Name the folder the shards wrote with --parity-report=DIR/, or the "
                                   f"report files themselves.")
            found.extend(inside)
        elif path.exists():
            found.append(argument)
        else:
            raise CombineError(f"{argument} does not exist. Name the shards' report files or the folder holding them "
                               f"(the shards' --parity-report=DIR/, or where the CI artifacts were downloaded).")
    if not found:
        raise CombineError("no reports to combine: name the shards' report files or the folder holding them, e.g. "
                           "python -m pytest_parity combine parity-reports/ --html parity.html")
    return list(dict.fromkeys(found))


def _is_shard_candidate(path: Path) -> bool:
    """A directory's JSON file that is a parity report and not a combined one (combine's own output left in the
    folder, which would count every test twice). Other JSON files (pytest-split's durations) are passed over."""
    try:
        with path.open(encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, UnicodeDecodeError, ValueError):
        return True  # named in the error load_report gives, rather than silently left out
    return isinstance(document, dict) and "results" in document and "combined" not in document


def load_report(path: str) -> ShardReport:
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except (OSError, UnicodeDecodeError) as error:
        raise CombineError(f"{path} cannot be read ({type(error).__name__}: {error}). Check the path and that the "
                           f"shard finished writing it.") from None
    except ValueError as error:
        raise CombineError(f"{path} is not valid JSON ({error}): a shard that was killed while writing, or a "
                           f"different file. Re-run that shard, or leave the file out.") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), list) or "version" not in document:
        raise CombineError(f"{path} is not a parity report (no 'version' and 'results' list): write the shards' "
                           f"reports with --parity-report, and name only those.")
    for index, entry in enumerate(document["results"]):
        missing = [key for key in RESULT_KEYS if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise CombineError(f"{path}: result {index} lacks {', '.join(missing)}, so it is not a parity check's "
                               f"record: regenerate the report with --parity-report, or leave the file out.")
    shard = document.get("shard")
    if shard is not None and not (isinstance(shard, dict) and isinstance(shard.get("name"), str)):
        raise CombineError(f"{path}: its 'shard' block has no name: regenerate it with --parity-report.")
    name = shard["name"] if shard else Path(path).stem
    return ShardReport(path, name, document)


def load_reports(paths: list[str]) -> list[ShardReport]:
    loaded = [load_report(path) for path in paths]
    versions: dict[Any, list[str]] = {}
    for shard in loaded:
        versions.setdefault(shard.document["version"], []).append(shard.path)
    if len(versions) > 1:
        listing = "; ".join(f"version {version!r}: {', '.join(paths)}" for version, paths in versions.items())
        raise CombineError(f"the reports have conflicting versions ({listing}): they were written by different "
                           f"pytest-parity releases. Run every shard with the same pytest-parity, then combine.")
    version = next(iter(versions))
    if version != report.REPORT_VERSION:
        raise CombineError(f"the reports have version {version!r}; this pytest-parity reads version "
                           f"{report.REPORT_VERSION}. Combine them with the pytest-parity that wrote them.")
    names: dict[str, str] = {}
    for shard in loaded:
        if shard.name in names:
            raise CombineError(f"{names[shard.name]} and {shard.path} both come from shard {shard.name!r}: a re-run "
                               f"of a shard, or two sessions given one --parity-shard name. Keep one of the two "
                               f"files, or give each session its own --parity-shard.")
        names[shard.name] = shard.path
    return loaded


# --------------------------------------------------------------------------------------------------------------------
# Combining
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Combined:
    """The combined report (``document``: the single-run format, with a ``combined`` block) and its findings."""

    document: dict[str, Any]
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.document["results"]

    @property
    def tests(self) -> dict[str, str]:
        return self.document["combined"]["tests"]

    def failed(self) -> bool:
        """Whether the combined run is a failure: a check that did not pass, a parity test that failed before its
        check recorded anything, a conflict, or a collected test no shard ran."""
        return (any(not entry["passed"] for entry in self.results) or bool(self.conflicts or self.not_run)
                or any(outcome in ("fail", "error") for outcome in self.tests.values()))


def combine(shards: list[ShardReport]) -> Combined:
    """Union the shards' results by test id (sorted by test id, as an xdist run's), checking that they agree."""
    shards = sorted(shards, key=lambda shard: _shard_order(shard))
    per_test: dict[str, dict[str, list[dict[str, Any]]]] = {}
    test_outcomes: dict[str, dict[str, str]] = {}
    collected: dict[str, None] = {}
    for shard in shards:
        for entry in shard.document["results"]:
            per_test.setdefault(entry["nodeid"], {}).setdefault(shard.name, []).append(entry)
        block = shard.shard or {}
        collected.update(dict.fromkeys(block.get("collected") or ()))
        for nodeid, outcome in (block.get("ran") or {}).items():
            test_outcomes.setdefault(nodeid, {})[shard.name] = TEST_OUTCOMES.get(outcome, str(outcome))
    environment, machines, notes = _environment(shards)
    combined = Combined(document={}, notes=[*notes, *_missing_groups(shards)])
    results: list[dict[str, Any]] = []
    for nodeid in sorted(per_test.keys() | test_outcomes.keys()):
        by_shard = per_test.get(nodeid, {})
        outcomes = {name: _signature(by_shard.get(name), test_outcomes.get(nodeid, {}).get(name))
                    for name in dict.fromkeys([*by_shard, *test_outcomes.get(nodeid, {})])}
        chosen = max(by_shard, key=lambda name: SEVERITY.get(_worst(by_shard[name]), 0), default=None)
        if len(set(outcomes.values())) > 1:
            combined.conflicts.append({"nodeid": nodeid, "outcomes": outcomes, "shown": chosen})
        if chosen is None:
            continue
        for entry in by_shard[chosen]:
            entry = {**entry, "outcome": report.outcome(entry), "shard": chosen}
            if machines is not None and machines.get(chosen):
                entry.setdefault("machine", machines[chosen])
            results.append(entry)
    ran = {nodeid for nodeid in test_outcomes} | set(per_test)
    combined.not_run = [nodeid for nodeid in collected if nodeid not in ran]
    tests = {nodeid: _merged_outcome(outcomes) for nodeid, outcomes in sorted(test_outcomes.items())}
    built = report.document(results, environment_block=environment)
    built["combined"] = {
        "shards": [_shard_summary(shard) for shard in shards],
        "conflicts": combined.conflicts,
        "not_run": combined.not_run,
        "tests": tests,
        "notes": combined.notes,
    }
    combined.document = built
    return combined


def _shard_order(shard: ShardReport) -> tuple[Any, ...]:
    block = shard.shard or {}
    return (block.get("group") or 0, shard.name)


def _signature(entries: list[dict[str, Any]] | None, test_outcome: str | None) -> str:
    """A test's outcome in one shard: the outcomes of its checks ("pass", "pass+fail" for two checks), else pytest's
    outcome of the test when it recorded no check (skipped, or failed before checking)."""
    if entries:
        return "+".join(report.outcome(entry) for entry in entries)
    return test_outcome or "no record"


def _worst(entries: list[dict[str, Any]]) -> str:
    return max((report.outcome(entry) for entry in entries), key=lambda word: SEVERITY.get(word, 0))


def _merged_outcome(outcomes: dict[str, str]) -> str:
    return max(outcomes.values(), key=lambda word: SEVERITY.get(word, 0))


def _environment(shards: list[ShardReport]) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """The combined environment block: what all shards share, and for what differs the values with their shards.
    Also each shard's machine when they differ (each result then carries its own), and notes on what differs."""
    blocks = {shard.name: {key: value for key, value in (shard.document.get("environment") or {}).items()
                           if key != "devices"} for shard in shards}
    keys = list(dict.fromkeys(key for block in blocks.values() for key in block))
    environment: dict[str, Any] = {}
    notes = []
    for key in keys:
        values: dict[Any, list[str]] = {}
        for name, block in blocks.items():
            values.setdefault(block.get(key), []).append(name)
        if len(values) == 1:
            environment[key] = next(iter(values))
            continue
        environment[key] = "; ".join(f"{value} ({', '.join(names)})" for value, names in values.items())
        if key == "machine":
            notes.append(f"the shards ran on {len(values)} kinds of machine: each result keeps its machine, and "
                         f"speed ratios are compared with a baseline only on the machine kind they were taken on")
        else:
            notes.append(f"the shards differ in {key}: {environment[key]}")
    machines = None
    if len({block.get("machine") for block in blocks.values()}) > 1:
        machines = {name: block.get("machine") for name, block in blocks.items()}
    return environment, machines, notes


def _shard_summary(shard: ShardReport) -> dict[str, Any]:
    block = shard.shard or {}
    return {"name": shard.name, "report": shard.path, "created": shard.document.get("created"),
            "group": block.get("group"), "splits": block.get("splits"),
            "machine": (shard.document.get("environment") or {}).get("machine"),
            "collected": len(block["collected"]) if "collected" in block else None,
            "ran": len(block["ran"]) if "ran" in block else None, "checks": len(shard.document["results"])}


def _missing_groups(shards: list[ShardReport]) -> list[str]:
    """pytest-split groups with no report (and shards split different ways)."""
    splits: set[int] = {split for shard in shards if isinstance(split := (shard.shard or {}).get("splits"), int)}
    if not splits:
        return []
    if len(splits) > 1:
        return [f"the shards were split different ways (--splits {', '.join(str(n) for n in sorted(splits))}): "
                f"their groups do not partition one suite"]
    total = next(iter(splits))
    present = {(shard.shard or {}).get("group") for shard in shards}
    missing = [group for group in range(1, total + 1) if group not in present]
    if not missing:
        return []
    return [f"no report from group {', '.join(str(group) for group in missing)} of {total}: its tests are listed "
            f"as run by no shard"]


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------


def write_json(path: str, combined: Combined) -> None:
    report.write_atomically(path, json.dumps(combined.document, indent=2) + "\n")


def write_html(path: str, combined: Combined) -> None:
    from pytest_parity.reports.html import render

    try:
        page = render(combined.document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CombineError(f"a result lacks a figure the HTML report draws ({type(error).__name__}: {error}): the "
                           f"reports were not written by pytest-parity's --parity-report, or were edited. Regenerate "
                           f"them, or combine without --html.") from None
    page = page.replace("<h2>Checks</h2>", _combined_section(combined) + "\n<h2>Checks</h2>", 1)
    report.write_atomically(path, page)


def _combined_section(combined: Combined) -> str:
    block = combined.document["combined"]
    rows = "".join(
        f"<tr><td>{escape(str(shard['name']))}</td><td>{_cell(shard['group'])}</td><td>{_cell(shard['splits'])}</td>"
        f"<td>{_cell(shard['machine'])}</td><td>{_cell(shard['collected'])}</td><td>{_cell(shard['ran'])}</td>"
        f"<td>{shard['checks']}</td></tr>" for shard in block["shards"])
    parts = ["<h2>Shards</h2>",
             "<table><tr><th>shard</th><th>group</th><th>splits</th><th>machine</th><th>parity tests collected</th>"
             f"<th>ran</th><th>checks</th></tr>{rows}</table>"]
    if combined.conflicts:
        items = "".join(f"<li><code>{escape(conflict['nodeid'])}</code>: "
                        + ", ".join(f"{escape(outcome)} in {escape(name)}"
                                    for name, outcome in conflict["outcomes"].items()) + "</li>"
                        for conflict in combined.conflicts)
        parts.append(f'<p class="FAIL">{len(combined.conflicts)} test(s) with conflicting outcomes between shards '
                     f"(the worst is shown below):</p><ul>{items}</ul>")
    if combined.not_run:
        items = "".join(f"<li><code>{escape(nodeid)}</code></li>" for nodeid in combined.not_run)
        parts.append(f'<p class="FAIL">{len(combined.not_run)} parity test(s) collected but run by no shard:</p>'
                     f"<ul>{items}</ul>")
    for note in combined.notes:
        parts.append(f'<p class="meta">{escape(note)}</p>')
    return "\n".join(parts)


def _cell(value: Any) -> str:
    return "-" if value is None else escape(str(value))


def write_junit(path: str, combined: Combined) -> None:
    """JUnit XML of the combined run: a testcase per parity test, its checks' key figures as properties (parity_*,
    parity2_* for a second check in one test, as a session's --junitxml), failure/error/skipped as they ended; a
    conflict fails its testcase, a test run by no shard is an error."""
    by_test: dict[str, list[dict[str, Any]]] = {}
    for entry in combined.results:
        by_test.setdefault(entry["nodeid"], []).append(entry)
    conflicts = {conflict["nodeid"]: conflict for conflict in combined.conflicts}
    nodeids = sorted(by_test.keys() | combined.tests.keys() | set(combined.not_run))
    suite = ElementTree.Element("testsuite", name="parity")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for nodeid in nodeids:
        counts["tests"] += 1
        classname, _, name = nodeid.rpartition("::")
        case = ElementTree.SubElement(suite, "testcase",
                                      classname=classname.replace("/", ".").removesuffix(".py"), name=name or nodeid)
        entries = by_test.get(nodeid, [])
        if entries:
            properties = ElementTree.SubElement(case, "properties")
            for index, entry in enumerate(entries):
                prefix = "parity_" if index == 0 else f"parity{index + 1}_"
                figures = {**report.key_figures(entry), "shard": entry.get("shard")}
                for key, value in figures.items():
                    ElementTree.SubElement(properties, "property", name=prefix + key, value=str(value))
        outcome = combined.tests.get(nodeid)
        failing = [entry for entry in entries if not entry["passed"]]
        if nodeid in combined.not_run:
            counts["errors"] += 1
            ElementTree.SubElement(case, "error", message="collected but run by no shard")
        elif nodeid in conflicts:
            counts["failures"] += 1
            text = ", ".join(f"{outcome} in {name}" for name, outcome in conflicts[nodeid]["outcomes"].items())
            ElementTree.SubElement(case, "failure", message=f"conflicting outcomes between shards: {text}")
        elif failing:
            counts["failures"] += 1
            message = "; ".join(f"{report.result_cell(entry)} on {entry['device']}"
                                + (f": {report.reason_line(entry)}" if entry.get("refused") else "")
                                + (f": {'; '.join(entry['drift'])}" if entry.get("drift") else "")
                                for entry in failing)
            ElementTree.SubElement(case, "failure", message=message)
        elif outcome in ("fail", "error"):
            counts["failures" if outcome == "fail" else "errors"] += 1
            ElementTree.SubElement(case, "failure" if outcome == "fail" else "error",
                                   message=f"the test {'failed' if outcome == 'fail' else 'errored'} before its parity "
                                           f"check recorded anything (see the shard's own output)")
        elif outcome == "skipped" and not entries:
            counts["skipped"] += 1
            ElementTree.SubElement(case, "skipped", message="skipped in its shard")
    for key, value in counts.items():
        suite.set(key, str(value))
    suite.set("timestamp", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    report.write_atomically(path, '<?xml version="1.0" encoding="utf-8"?>\n'
                            + ElementTree.tostring(root, encoding="unicode") + "\n")


def update_baseline(path: str, combined: Combined) -> tuple[int, int, int]:
    """Write the baseline from the combined result; returns (entries written from it, entries kept, conflicting test
    ids left out). Entries of tests that did not run are kept, and so are those of conflicting test ids: which of two
    disagreeing shards is right is for the next run to say."""
    try:
        baselines.refuse_to_overwrite_unreadable(path)
    except baselines.BaselineError as error:
        raise CombineError(str(error).replace("--parity-baseline-update refuses", "combine --update-baseline "
                                                                                  "refuses")) from None
    conflicting = {conflict["nodeid"] for conflict in combined.conflicts}
    entries = [{key: value for key, value in entry.items() if key not in ("shard", "outcome")}
               for entry in combined.results if entry["nodeid"] not in conflicting]
    environment = {key: value for key, value in combined.document["environment"].items() if key != "devices"}
    written, kept = baselines.update(path, entries, environment=environment)
    return written, kept, len(conflicting)


def summary_lines(combined: Combined, limit: int = 20) -> list[str]:
    """What combine prints: the shards, the counts, then what needs a look (failures, conflicts, tests no shard ran),
    each list cut at ``limit`` lines."""
    block = combined.document["combined"]
    results = combined.results
    passed = sum(1 for entry in results if entry["passed"])
    lines = [f"combined {len(block['shards'])} shard report(s): "
             + ", ".join(f"{shard['name']} ({shard['checks']} checks)" for shard in block["shards"]),
             f"{passed} of {len(results)} parity check(s) passed"]
    failing = [entry for entry in results if not entry["passed"]]
    lines.extend(_listed("failed", [f"{entry['nodeid']}: {report.result_cell(entry)}" for entry in failing], limit))
    errored = [nodeid for nodeid, outcome in combined.tests.items() if outcome in ("fail", "error")
               and nodeid not in {entry["nodeid"] for entry in results}]
    lines.extend(_listed("failed before a check recorded anything", errored, limit))
    lines.extend(_listed("with conflicting outcomes between shards",
                         [f"{conflict['nodeid']}: " + ", ".join(f"{outcome} in {name}" for name, outcome
                                                                in conflict["outcomes"].items())
                          for conflict in combined.conflicts], limit))
    lines.extend(_listed("collected but run by no shard", combined.not_run, limit))
    skipped = sum(1 for outcome in combined.tests.values() if outcome == "skipped")
    if skipped:
        lines.append(f"{skipped} parity test(s) skipped")
    lines.extend(combined.notes)
    return lines


def _listed(what: str, items: list[str], limit: int) -> list[str]:
    if not items:
        return []
    lines = [f"{len(items)} parity test(s) {what}:"] + [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more (the JSON/HTML report lists them all)")
    return lines
