"""The terminal summary and the JSON report, both built from plain-dict records (one per parity check); the HTML
report (html_report) is drawn from the same records."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import textwrap
from pathlib import Path
from typing import Any

from pytest_parity.reports.training import training_key_figures
from pytest_parity.result import ParityResult

REPORT_VERSION = 1
# Distributions whose versions decide the numerics of a check; recorded so a tox matrix cell can be told apart.
ENVIRONMENT_PACKAGES = ("tensorflow", "keras", "torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "tf2onnx",
                        "onnx2torch", "numpy", "pytest", "pytest-parity")
# Libraries the models under test often come from: their versions decide the models' code, so a report says which
# ran. Listed only when installed.
MODEL_LIBRARIES = ("transformers", "timm", "keras-hub", "keras-cv", "keras-nlp", "tf-keras", "torchaudio",
                   "sentence-transformers", "diffusers")
# The terminal summary fits a normal terminal: no line longer than this (cells are wrapped or abbreviated; the JSON,
# HTML and JUnit reports keep every name in full).
SUMMARY_WIDTH = 120


def record(nodeid: str, result: ParityResult) -> dict[str, Any]:
    return {"nodeid": nodeid, **result.to_dict()}


def refused_record(nodeid: str, device: str, route: str, reason: str) -> dict[str, Any]:
    """A check that was refused before it compared anything (a port the transfer cannot pair, inputs that do not fit,
    a bad override): a failed record with no figures and the reason, so the summary and reports list every check."""
    return {"nodeid": nodeid, "device": device, "route": route, "passed": False, "refused": reason,
            "outputs": None, "grads": None, "weights": {}, "weight_names": {}, "unmatched_weights": {},
            "weight_account": None, "speed": None, "conversion_s": None, "conversion_cache": None, "run_s": None,
            "diagnosis": None, "layers": [], "notes": [], "drift": []}


def reason_line(entry: dict[str, Any], width: int = 160) -> str:
    """The first line of a refused check's reason, bounded for a table or a summary line."""
    first = (entry.get("refused") or "").strip().splitlines()[0] if entry.get("refused") else ""
    return first if len(first) <= width else first[:width - 3] + "..."


def near_ties_of(entry: dict[str, Any]) -> int:
    """Gradient elements that differed on the given inputs only and agreed on moved ones (verdict.near_ties)."""
    return sum(comparison.get("near_ties", 0) for comparison in (entry["grads"] or {}).values())


def key_figures(entry: dict[str, Any]) -> dict[str, Any]:
    """The figures a CI system shows per test (JUnit XML properties): flat names, plain values."""
    grads = entry["grads"] or {}
    worst_grad = max((c["max_abs"] for c in grads.values()), key=_sortable, default=None)
    speed = entry["speed"]
    outputs = entry["outputs"] or {}
    return {
        "route": entry["route"],
        "device": entry["device"],
        "passed": entry["passed"],
        "outputs_max_abs": outputs.get("max_abs"),
        "outputs_max_rel": outputs.get("max_rel"),
        "outputs_mismatched": outputs.get("mismatched"),
        **({"refused": reason_line(entry)} if entry.get("refused") else {}),
        "grads_max_abs": worst_grad,
        "grads_failed": sum(1 for c in grads.values() if not c["passed"]),
        **({"grads_near_ties": near_ties_of(entry)} if near_ties_of(entry) else {}),
        "weights_compared": weights_cell(entry).removeprefix("weights "),
        "speed_ratio": None if speed is None else speed["ratio"],
        **({} if speed is None else {"speed_verdict": speed.get("verdict"), "speed_clock": speed.get("clock"),
                                     "speed_ratio_low": speed.get("ratio_low"),
                                     "speed_ratio_high": speed.get("ratio_high")}),
        **training_key_figures(entry.get("training")),
    }


def merge_worker_records(records: list[dict[str, Any]], batch: list[dict[str, Any]]) -> None:
    """pytest-xdist: add one worker's records to the controller's, kept in test id order (workers finish in any order;
    the sort is stable, so several checks in one test keep theirs)."""
    records[:] = sorted([*records, *batch], key=lambda entry: entry["nodeid"])


def machine() -> str:
    """The kind of machine a session ran on, for telling speed figures apart: "Linux x86_64, AMD EPYC 7B13, 2 CPUs"
    (and the GPU's model when the NVIDIA driver names it). Read from the platform and /proc, no framework imported.
    Speed ratios taken on one kind of machine are not compared with another's (baseline.load, combine)."""
    parts = [f"{platform.system()} {platform.machine()}".strip()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as stream:
            model = next((line.split(":", 1)[1].strip() for line in stream if line.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    if model:
        parts.append(" ".join(model.split()))
    parts.append(f"{os.cpu_count() or 1} CPUs")
    gpus: list[str] = []
    for information in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            text = information.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        gpus.extend(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model:"))
    if gpus:
        parts.append(" + ".join(gpus))
    return ", ".join(parts)


def environment() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "machine": machine()}
    for name in ENVIRONMENT_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    for name in MODEL_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def outcome(entry: dict[str, Any]) -> str:
    """One word for a check's end: "pass", "fail", "drift" (passed its tolerances, failed against the baseline) or
    "refused" (nothing compared)."""
    if entry.get("refused"):
        return "refused"
    if entry["passed"]:
        return "pass"
    return "drift" if entry.get("drift") else "fail"


def document(records: list[dict[str, Any]], shard: dict[str, Any] | None = None,
             environment_block: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as one plain dict: what the JSON file holds and what the HTML report is drawn from. Each result
    gains its ``outcome`` (a key added beside the others; the records themselves are left as they are).

    ``shard``: a sharded session's block (which shard, what it collected and ran; docs/sharding.md), added as the key
    ``shard``; ``environment_block``: the environment the records were taken in, when that is not this process's (a
    combined report, a baseline written by ``python -m pytest_parity combine``)."""
    taken_in = environment() if environment_block is None else dict(environment_block)
    built = {
        "version": REPORT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": {**taken_in, "devices": sorted({entry["device"] for entry in records})},
        "results": [{**entry, "outcome": outcome(entry)} for entry in records],
    }
    if shard is not None:
        built["shard"] = shard
    return built


def write_json(path: str, records: list[dict[str, Any]], shard: dict[str, Any] | None = None,
               environment_block: dict[str, Any] | None = None) -> None:
    write_atomically(path, json.dumps(document(records, shard, environment_block), indent=2) + "\n")


def write_atomically(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a reader (or a crashed session) never sees half a report.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def figure_text(value: Any) -> str:
    """A figure as the reports print it: 1.23e-06, "-" when absent, "nan"/"inf" as stored."""
    if value is None:
        return "-"
    if isinstance(value, str):  # "nan"/"inf" as stored in the record
        return value
    return f"{value:.2e}"


def summary_lines(records: list[dict[str, Any]], width: int = SUMMARY_WIDTH) -> list[str]:
    """The terminal summary: one table row per check, then the counts and what the reader must know (refusals,
    partial passes, port notes). No line is longer than ``width``."""
    header = ("test", "device", "route", "outputs max abs", "grads max abs", "weights compared", "speed", "result")
    rows: list[tuple[str, ...]] = []
    for entry in records:
        worst_name, worst_figure = worst_gradient(entry)
        worst_grad = f"{figure_text(worst_figure)} ({worst_name})" if worst_name else None
        near_ties = near_ties_of(entry)
        if worst_grad and near_ties:
            worst_grad += f" incl. {near_ties} near-tie(s)"
        speed = entry["speed"]
        rows.append((
            str(entry["nodeid"]), str(entry["device"]), str(entry["route"]),
            figure_text((entry["outputs"] or {}).get("max_abs")),
            worst_grad or "-", weights_cell(entry).removeprefix("weights "), speed_cell(speed), result_cell(entry),
        ))
    lines = _table(header, rows, [result_cell(entry, compact=True) for entry in records], width)
    passed = sum(1 for entry in records if entry["passed"])
    lines.append(f"{passed} of {len(records)} parity check(s) passed")
    refused = [entry for entry in records if entry.get("refused")]
    if refused:
        lines.append(f"{len(refused)} of them refused before comparing anything (the test's failure says why):")
        for entry in refused:
            lines.extend(wrap_line(f"  {shorten_middle(entry['nodeid'], width // 2)}: {reason_line(entry)}", width,
                                   indent="      "))
    partial = sum(1 for entry in records if entry["passed"] and (entry.get("weight_account") or {}).get("partial"))
    if partial:
        lines.append(f"{partial} of them partial: some trainable weights' gradients were not compared, as allowed "
                     f"(unmatched_weights=) or with grad=False; the JSON report's weight_account names them")
    undecided = sum(1 for entry in records if entry["passed"]
                    and (entry.get("speed") or {}).get("verdict") == "inconclusive" and entry["speed"].get("gated"))
    if undecided:
        lines.append(f"{undecided} of them with a speed measurement too noisy to decide (inconclusive: the "
                     f"interval of the ratio contains the limit); speed_inconclusive='fail' makes that a failure")
    cache_line = _conversion_cache_line(records)
    if cache_line:
        lines.append(cache_line)
    lines.extend(_port_notes(records, width))
    return [wrapped for line in lines for wrapped in wrap_line(line, width)]


def _port_notes(records: list[dict[str, Any]], width: int) -> list[str]:
    """The notes of port checks, under the summary: what the transfer changed to compare the two models (a Dense
    weight's input axis permuted for another flatten order, embeddings paired by shape, a fused projection split)."""
    noted = [entry for entry in records if entry["route"].startswith("port") and entry.get("notes")]
    if not noted:
        return []
    lines = ["port notes (what the weight transfer changed so the two models could be compared):"]
    for entry in noted:
        lines.append(f"  {shorten_middle(entry['nodeid'], width - 3)}:")
        for note in entry["notes"]:
            lines.extend(wrap_line(f"    {note}", width, indent="      "))
    return lines


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], results: list[str], width: int) -> list[str]:
    """Aligned columns on one line per check when they fit ``width``. Otherwise two lines per check: the test id
    (shortened in its middle when too long) and its result (``results``: without what the figures show), then its
    figures indented, the long cells abbreviated (routes, weights within rounding of zero) and, where still too wide,
    cut and marked "..."."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        return [_joined(row, widths) for row in [header, *rows]]
    figures = [row[1:-1] for row in rows]
    # The column heads without "max abs" and "compared", which the cells below them are far shorter than.
    heads = tuple(head.removesuffix(" max abs").removesuffix(" compared") for head in header[1:-1])
    if _total([heads, *figures]) > width - 2:
        # "inconclusive" leaves the speed cell: the result says "speed inconclusive".
        figures = [(device, _abbreviate_route(route), outputs, grads,
                    weights.replace(" within rounding of zero", " near 0"), speed.removesuffix(" inconclusive"))
                   for device, route, outputs, grads, weights, speed in figures]
    # Cut in this order, each down to its floor: gradient names, routes, weights, speed evidence.
    widths = _fit([heads, *figures], width - 2, floors=((3, 22), (1, 12), (4, 10), (5, 18)))
    lines = [f"{header[0]}  {header[-1]}  (figures under each; outputs, grads: max abs difference; weights: gradients "
             f"compared)", "  " + _joined(heads, widths)]
    for row, cells, result in zip(rows, figures, results):
        lines.append(f"{shorten_middle(row[0], width - len(result) - 2)}  {result}")
        cut = tuple(_cut(cell, size, column == 3) for column, (cell, size) in enumerate(zip(cells, widths)))
        lines.append("  " + _joined(cut, widths))
    return lines


def _total(rows: list[tuple[str, ...]]) -> int:
    return sum(max(len(row[i]) for row in rows) for i in range(len(rows[0]))) + 2 * (len(rows[0]) - 1)


def _joined(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(str(cell).ljust(size) for cell, size in zip(cells, widths)).rstrip()


def _fit(rows: list[tuple[str, ...]], width: int, floors: tuple[tuple[int, int], ...]) -> list[int]:
    """Column widths whose aligned total fits ``width``: the columns in ``floors`` give up characters in that order,
    each down to its floor (past the floors the line stays too long rather than say nothing)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for column, floor in floors:
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        if excess <= 0:
            break
        widths[column] = max(floor, widths[column] - excess)
    return widths


def _cut(cell: str, size: int, named_figure: bool = False) -> str:
    """``cell`` in ``size`` characters: its end replaced by "..."; a figure with a name in brackets ("2.50e-01
    (encoder/dense/kernel)") keeps the figure and the end of the name ("2.50e-01 (...dense/kernel)")."""
    if len(cell) <= size:
        return cell
    figure, _, rest = cell.partition(" (")
    name, bracket, after = rest.partition(")")
    keep = size - len(figure) - len(" (...") - len(bracket + after)
    if named_figure and bracket and keep >= 4:
        return f"{figure} (...{name[len(name) - keep:]}){after}"
    return cell[:size - 3] + "..."


def _abbreviate_route(route: str) -> str:
    return route.replace("tensorflow", "tf")


def shorten_middle(text: str, width: int) -> str:
    """A test id cut in its middle to ``width`` ("tests/e2e/te...::test_x[cpu]"): its file's start and its name's end,
    the parts that tell tests apart, stay."""
    if len(text) <= width:
        return text
    tail = (width - 3) * 2 // 3
    return text[:width - 3 - tail] + "..." + text[len(text) - tail:]


def wrap_line(line: str, width: int = SUMMARY_WIDTH, indent: str | None = None) -> list[str]:
    """A summary line wrapped to ``width`` at spaces, continued under its own indentation plus two (or ``indent``);
    a word longer than a line (a path) is kept whole on a line of its own."""
    if len(line) <= width:
        return [line]
    own = line[:len(line) - len(line.lstrip())]
    return textwrap.wrap(line, width, initial_indent="", subsequent_indent=own + "  " if indent is None else indent,
                         break_long_words=False, break_on_hyphens=False) or [line]


def worst_gradient(entry: dict[str, Any]) -> tuple[str | None, Any]:
    """(name, max abs) of the gradient to show for a check: a failing one first, then the largest; (None, None)
    without gradients."""
    grads = entry["grads"] or {}
    if not grads:
        return None, None
    name = max(grads, key=lambda key: (not grads[key]["passed"], _sortable(grads[key]["max_abs"])))
    return name, grads[name]["max_abs"]


def _conversion_cache_line(records: list[dict[str, Any]]) -> str | None:
    """'conversion cache: 4 hit, 1 miss' over the convert-mode checks that used the cache (workers' included)."""
    outcomes: dict[str, int] = {}
    for entry in records:
        outcome = entry.get("conversion_cache")
        if outcome:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if not outcomes:
        return None
    order = ("hit", "miss", "rebuilt", "uncacheable")
    return "conversion cache: " + ", ".join(f"{outcomes[name]} {name}" for name in order if name in outcomes)


def speed_cell(speed: dict[str, Any] | None) -> str:
    """'2.31x [2.05-2.60] <= 2.50 wall': the median ratio target/source, the confidence interval its verdict was read
    from (the min-max spread in brackets of the other kind when there was none), the limit, and the deciding clock;
    marked 'inconclusive' or 'report' when it decided nothing."""
    if not speed:
        return "-"
    low, high = speed.get("ratio_low"), speed.get("ratio_high")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        cell = f"{speed['ratio']:.2f}x [{low:.2f}-{high:.2f}]"
    else:  # too few rounds for an interval, or a record from before intervals were kept
        cell = f"{speed['ratio']:.2f}x ({speed['ratio_min']:.2f}-{speed['ratio_max']:.2f})"
    if speed.get("allowed") is not None:
        cell += f" <= {speed['allowed']:.2f}"
    if speed.get("clock"):
        cell += f" {CLOCK_ABBREVIATIONS.get(speed['clock'], speed['clock'])}"
    if not speed.get("gated", True):
        return cell + " report"
    return cell + " inconclusive" if speed.get("verdict") == "inconclusive" else cell


# Short names of timing's clocks for the summary's speed column.
CLOCK_ABBREVIATIONS = {"process CPU time": "cpu-time", "wall": "wall", "synchronised wall": "wall-sync",
                       "CUDA events": "cuda-events"}


def result_cell(entry: dict[str, Any], compact: bool = False) -> str:
    """PASS, FAIL, FAIL (drift) (within tolerance, beyond the baseline), REFUSED, or a pass that claims less:
    'PASS (partial: weights 5 of 7; speed inconclusive)'; ``compact``: without the weights the figures show
    ('PASS (partial; speed inconclusive)')."""
    if entry.get("refused"):
        return "REFUSED"
    if not entry["passed"]:
        return "FAIL (drift)" if entry.get("drift") else "FAIL"
    caveats = []
    account = entry.get("weight_account") or {}
    if account.get("partial"):
        caveats.append("partial" if compact else "partial: " + weights_cell(entry))
    speed = entry.get("speed") or {}
    if speed.get("verdict") == "inconclusive" and speed.get("gated"):
        caveats.append("speed inconclusive")
    return f"PASS ({'; '.join(caveats)})" if caveats else "PASS"


def weights_cell(entry: dict[str, Any]) -> str:
    """'weights 5 of 7': trainable weights whose gradient was compared, of all, and how many of the others lie
    within rounding of zero ('-' without weight accounting)."""
    account = entry.get("weight_account")
    if not account:
        return "-"
    if not account.get("gradients_checked", True):
        return f"weights 0 of {account['total']} (grad=False)"
    cell = f"weights {account['compared']} of {account['total']}"
    near_zero = len(account.get("within_rounding_of_zero") or ())
    # Decided by the rounding floor, with no float64 run to judge them: a halved target would pass, so not compared.
    return cell + f" ({near_zero} within rounding of zero)" if near_zero else cell


def _sortable(value: Any) -> float:
    return float("inf") if isinstance(value, str) else float(value)
