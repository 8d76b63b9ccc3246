"""The documentation's measurement and coverage tables, generated from the files in benchmarks/ at build time.

A page asks for a table with an HTML comment on a line of its own, e.g. ``<!-- generated: coverage -->``; the MkDocs
hook below (``hooks:`` in mkdocs.yml) replaces it with the table. An unknown name, or a source file that is missing,
fails the build. The sources:

- ``coverage``: benchmarks/coverage_results.json (the sweep's rows), rendered by benchmarks/coverage_table.py's own
  ``print_table``;
- ``realworld``: benchmarks/realworld_table.md, as benchmarks/realworld_sweep.py wrote it;
- ``mutants``: benchmarks/mutants_before.jsonl and mutants_after.jsonl, summarised by benchmarks/mutants.py's own
  ``summarise`` (what ``mutants.py --merge`` writes to benchmarks/mutants_table.md);
- ``measurements:<table>``: a table of benchmarks/measurements.json (figures the scripts print, recorded there);
- ``training_mutants``: benchmarks/training_mutants.json, as benchmarks/training_mutants.py wrote it;
- ``training_tolerances``: benchmarks/training_tolerances.json's summary, as benchmarks/training_tolerances.py wrote it.

    python docs/hooks/tables.py coverage            # print one table, as the build inserts it
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)<!-- generated: (?P<name>[\w:-]+) -->[ \t]*$", re.MULTILINE)


class TableError(Exception):
    """A page asked for a table that cannot be generated."""


def _module(name: str) -> ModuleType:
    """A script of benchmarks/ imported by path (its top level imports no framework)."""
    path = BENCHMARKS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_benchmarks_{name}", path)
    if spec is None or spec.loader is None or not path.exists():
        raise TableError(f"{path} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(path: Path) -> str:
    if not path.exists():
        raise TableError(f"{path.relative_to(ROOT)} is missing")
    return path.read_text(encoding="utf-8")


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; cells are Markdown already (a literal | escaped as \\|)."""
    for row in rows:
        if len(row) != len(columns):
            raise TableError(f"row {row!r} has {len(row)} cells, the table {len(columns)} columns")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def coverage() -> str:
    rows = json.loads(_read(BENCHMARKS / "coverage_results.json"))["rows"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _module("coverage_table").print_table(rows)
    return printed.getvalue()


def realworld() -> str:
    text = _read(BENCHMARKS / "realworld_table.md")
    if not text.lstrip().startswith("|"):
        raise TableError("benchmarks/realworld_table.md does not start with its table")
    return text


def mutants() -> str:
    entries: list[dict[str, Any]] = []
    for raw in ("mutants_before.jsonl", "mutants_after.jsonl"):
        # As `mutants.py --merge`: a later file's rows replace an earlier one's for the same model and version.
        rerun = [json.loads(line) for line in _read(BENCHMARKS / raw).splitlines() if line.strip()]
        again = {(e["version"], e["model"]) for e in rerun}
        entries = [e for e in entries if (e["version"], e["model"]) not in again] + rerun
    labels = list(dict.fromkeys(entry["version"] for entry in entries))
    return str(_module("mutants").summarise(entries, labels))


def measurements(table: str) -> str:
    tables = json.loads(_read(BENCHMARKS / "measurements.json"))["tables"]
    if table not in tables:
        raise TableError(f"benchmarks/measurements.json has no table {table!r} (it has {', '.join(tables)})")
    entry = tables[table]
    return f"*{entry['caption']}.*\n\n" + markdown_table(entry["columns"], entry["rows"])


def training_mutants() -> str:
    report = json.loads(_read(BENCHMARKS / "training_mutants.json"))
    summary = report["summary"]
    yes = {True: "yes", False: "**no**"}
    rows = [[f"`{entry['mutant']}`", entry["direction"], entry["description"].replace("|", "\\|"),
             yes[entry["caught"]], yes[entry["cause_first"]], "yes" if entry["caught_by_outputs_only"] else "no"]
            for entry in report["mutants"]]
    return (f"*{summary['mutants']} training mutants ({summary['distinct_bugs']} distinct bugs): {summary['caught']} "
            f"caught, the cause named first in {summary['cause_first']}; the outputs-only allclose catches "
            f"{summary['caught_by_outputs_only']}. Correct ports: {summary['false_failures']} false failure(s) over "
            f"{summary['correct_ports']} ports x {summary['seeds']} seeds.*\n\n"
            + markdown_table(["mutant", "direction", "bug", "caught", "cause named first", "outputs-only allclose"],
                             rows))


def training_tolerances() -> str:
    report = json.loads(_read(BENCHMARKS / "training_tolerances.json"))
    summary, defaults = report["summary"], report["defaults"]
    rows = [["correct ports, worst update (share of update_rtol's allowance)",
             f"{summary['correct_worst_update_usage']:.3g}", f"margin {summary['correct_update_margin']:.3g}x"],
            ["correct ports, worst weight (share of atol + rtol)", f"{summary['correct_worst_weight_usage']:.3g}",
             f"margin {summary['correct_weight_margin']:.3g}x"]]
    rows += [[f"mutant `{name}`, step 1 update (share of the allowance)", f"{usage:.3g}", "caught" if usage > 1
              else "**not caught by the update**"] for name, usage in summary["mutant_step1_update_usage"].items()]
    cost = report.get("cost", {})
    rows += [[f"cost of a 5-step check, `{name}`", f"{figures['ratio']:.2f}x",
              "vs 5 hand-written steps in each framework (median)"] for name, figures in cost.items()]
    return (f"*Defaults: atol {defaults['atol']:g}, rtol {defaults['rtol']:g} (loss, weights, statistics), "
            f"update_rtol {defaults['update_rtol']:g} (updates); {report['steps']} steps, seeds {report['seeds']}.*"
            f"\n\n" + markdown_table(["figure", "value", "reading"], rows))


def render(name: str) -> str:
    """The Markdown of the table called ``name``."""
    kind, _, argument = name.partition(":")
    if kind == "measurements" and argument:
        return measurements(argument)
    makers = {"coverage": coverage, "realworld": realworld, "mutants": mutants, "training_mutants": training_mutants,
              "training_tolerances": training_tolerances}
    if kind not in makers or argument:
        raise TableError(f"no generated table called {name!r}")
    return makers[kind]()


def expand(markdown: str, where: str = "a page") -> str:
    """``markdown`` with every ``<!-- generated: NAME -->`` line replaced by its table (indented like the line)."""

    def table(match: re.Match[str]) -> str:
        try:
            text = render(match.group("name"))
        except TableError as error:
            raise TableError(f"{where}: {error}") from None
        indent = match.group("indent")
        return "\n".join(indent + line if line else line for line in text.rstrip("\n").splitlines())

    return DIRECTIVE.sub(table, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs hook."""
    try:
        return expand(markdown, page.file.src_uri)
    except TableError as error:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"generated table: {error}") from None


if __name__ == "__main__":
    sys.stdout.write(render(sys.argv[1]) if len(sys.argv) == 2 else __doc__ or "")
