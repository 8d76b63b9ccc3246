"""The HTML report (``--parity-html=PATH``): one self-contained file a reviewer opens from a CI artifact.

Drawn from the same plain-dict records as the JSON report. No scripts, no external styles, fonts or images: the
histograms are inline SVG, so the file renders the same offline, from a mail attachment or a CI artifact store.

Per check it shows the figures, a log-binned histogram of the elementwise |target - source| for the outputs and for
the gradients (the bins of ``result.error_histogram_labels``), and, for a failed port, the per-layer table up to the
first layer pair that diverges.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from pytest_parity.reports.records import (
    document,
    figure_text,
    result_cell,
    speed_cell,
    weights_cell,
    worst_gradient,
    write_atomically,
)
from pytest_parity.reports.training import training_section
from pytest_parity.result import ERROR_HISTOGRAM_DECADES, error_histogram_labels, sum_histograms

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d232a; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 0 0 8px; word-break: break-all; }
table { border-collapse: collapse; margin: 4px 0 12px; }
th, td { border: 1px solid #d5d9de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; }
td.figure { font-family: ui-monospace, Menlo, Consolas, monospace; text-align: right; white-space: nowrap; }
.PASS { color: #1e7b3a; font-weight: 600; } .FAIL { color: #b3261e; font-weight: 600; }
tr.failed td { background: #fdf0ef; } tr.diverges td { background: #fdf0ef; }
article { border: 1px solid #d5d9de; border-left: 6px solid #1e7b3a; border-radius: 4px; padding: 12px 16px;
          margin: 14px 0; }
article.failed { border-left-color: #b3261e; }
.histograms { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; } figcaption { font-size: 12.5px; color: #4a5562; max-width: 560px; }
pre { background: #f6f7f9; border: 1px solid #e1e4e8; padding: 8px 10px; white-space: pre-wrap; font-size: 12.5px; }
.meta { color: #4a5562; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; margin: 0 0 10px; }
dt { color: #4a5562; } dd { margin: 0; }
"""

# Bar colours: bins wholly below the check's atol, bins above it (those elements can still pass through rtol), and
# elements with NaN/Inf on a side.
BELOW_ATOL, ABOVE_ATOL, NON_FINITE = "#3f8f5f", "#d9822b", "#b3261e"


def write_html(path: str, records: list[dict[str, Any]]) -> None:
    write_atomically(path, render(document(records)))


def render(report: dict[str, Any]) -> str:
    results = report["results"]
    passed = sum(1 for entry in results if entry["passed"])
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Parity report: {passed} of {len(results)} passed</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Parity report</h1>",
        f'<p class="meta">{passed} of {len(results)} parity check(s) passed &middot; created '
        f"{escape(report['created'])} &middot; report version {report['version']}</p>",
        _summary_table(results),
        _environment_table(report["environment"]),
        "<h2>Checks</h2>",
        *(_check_section(index, entry) for index, entry in enumerate(results)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_table(results: list[dict[str, Any]]) -> str:
    rows = []
    for index, entry in enumerate(results):
        worst_name, worst = worst_gradient(entry)
        result = result_cell(entry)
        rows.append(
            f'<tr class="{"passed" if entry["passed"] else "failed"}">'
            f'<td><a href="#check-{index}">{escape(entry["nodeid"])}</a></td>'
            f"<td>{escape(entry['device'])}</td><td>{escape(entry['route'])}</td>"
            f'<td class="figure">{figure_text((entry["outputs"] or {}).get("max_abs"))}</td>'
            f'<td class="figure">{figure_text((entry["outputs"] or {}).get("max_rel"))}</td>'
            f'<td class="figure">{figure_text(worst)}{_small(worst_name)}</td>'
            f'<td class="figure">{escape(weights_cell(entry).removeprefix("weights "))}</td>'
            f'<td class="figure">{escape(speed_cell(entry["speed"]))}</td>'
            f'<td class="{_result_class(entry)}">{escape(result)}</td></tr>')
    header = ("test", "device", "route", "outputs max abs", "outputs max rel", "gradients max abs", "weights compared",
              "speed", "result")
    return ("<h2>Summary</h2><table><thead><tr>" + "".join(f"<th>{name}</th>" for name in header)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _environment_table(environment: dict[str, Any]) -> str:
    cells = {name: ", ".join(value) if isinstance(value, list) else str(value) for name, value in environment.items()}
    rows = "".join(f"<tr><th>{escape(name)}</th><td>{escape(text)}</td></tr>" for name, text in cells.items())
    return f"<h2>Environment</h2><table>{rows}</table>"


def _check_section(index: int, entry: dict[str, Any]) -> str:
    if entry.get("refused"):
        return _refused_section(index, entry)
    outputs = entry["outputs"]
    grads = entry["grads"] or {}
    state = "passed" if entry["passed"] else "failed"
    result = result_cell(entry)
    training = entry.get("training")
    figures_text = (f"max abs {figure_text(outputs['max_abs'])}, max rel {figure_text(outputs['max_rel'])}, "
                    f"{outputs['mismatched']} of {outputs['total']} mismatched (atol {outputs['atol']:g}, "
                    f"rtol {outputs['rtol']:g})")
    details = [("route", entry["route"]), ("device", entry["device"]),
               ("losses per step" if training else "outputs", figures_text)]
    if grads:
        failed = [name for name, comparison in grads.items() if not comparison["passed"]]
        worst_name, worst = worst_gradient(entry)
        tied = [comparison["near_ties"] for comparison in grads.values() if comparison.get("near_ties")]
        near_ties = (f" ({sum(tied)} element(s) of {len(tied)} agreed on moved inputs only: near-ties, see the notes)"
                     if tied else "")
        details.append(("gradients", f"{len(grads)} compared, worst {figure_text(worst)} ({worst_name}); "
                                     + (f"{len(failed)} differ: {', '.join(failed)}" if failed else "all agree")
                                     + near_ties))
    account = entry.get("weight_account")
    if account:
        details.append(("weights", _account_details(account, trained=bool(training))))
    if entry["speed"]:
        details.append(("speed", speed_details(entry["speed"])))
    conversion = f"{entry['conversion_s']:.2f} s"
    if entry.get("conversion_cache"):
        conversion += f" (conversion cache: {entry['conversion_cache']})"
    details.append(("conversion", conversion))
    details.extend(("note", note) for note in entry["notes"])
    details.extend(("drift", drift) for drift in entry["drift"])
    figures = [_histogram_figure("outputs", outputs.get("histogram"), outputs["atol"],
                                 f"{len(outputs.get('leaves', {})) or 1} tensor(s)")]
    grad_histogram = sum_histograms(comparison.get("histogram") for comparison in grads.values())
    if grads:
        grad_atol = next(iter(grads.values()))["atol"]
        figures.append(_histogram_figure("gradients", grad_histogram, grad_atol, f"{len(grads)} tensor(s)"))
    problems = [(name, leaf["problem"]) for name, leaf in outputs.get("leaves", {}).items() if leaf.get("problem")]
    problems += [(name, comparison["problem"]) for name, comparison in grads.items() if comparison.get("problem")]
    parts = [
        f'<article id="check-{index}" class="{state}">',
        f'<h3><span class="{_result_class(entry)}">{escape(result)}</span> {escape(entry["nodeid"])}</h3>',
        "<dl>" + "".join(f"<dt>{escape(name)}</dt><dd>{escape(str(text))}</dd>" for name, text in details) + "</dl>",
        '<div class="histograms">' + "".join(figures) + "</div>",
    ]
    if problems:
        parts.append("<p>" + "<br>".join(f"<b>{escape(name)}</b>: {escape(problem)}" for name, problem in problems)
                     + "</p>")
    if entry.get("layers"):
        parts.append(_layer_table(entry["layers"]))
    if entry.get("diagnosis"):
        parts.append(f"<p><b>Diagnosis</b></p><pre>{escape(entry['diagnosis'])}</pre>")
    if entry.get("training"):
        parts.append(training_section(entry["training"]))
    parts.append("</article>")
    return "\n".join(parts)


def _refused_section(index: int, entry: dict[str, Any]) -> str:
    """A check refused before comparing anything: where, and the whole reason (it can hold a table of layers)."""
    details = [("route", entry["route"]), ("device", entry["device"])]
    return "\n".join([
        f'<article id="check-{index}" class="failed">',
        f'<h3><span class="{_result_class(entry)}">REFUSED</span> {escape(entry["nodeid"])}</h3>',
        "<dl>" + "".join(f"<dt>{escape(name)}</dt><dd>{escape(text)}</dd>" for name, text in details) + "</dl>",
        f"<p><b>Refused before comparing anything</b></p><pre>{escape(entry['refused'])}</pre>",
        "</article>",
    ])


def _layer_table(layers: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<tr class="{"agrees" if row["agrees"] else "diverges"}"><td>{escape(row["source"])}</td>'
        f"<td>{escape(row['target'])}</td>"
        f'<td class="figure">{figure_text(row["inputs_max_abs"])}</td>'
        f'<td class="figure">{figure_text(row["outputs_max_abs"])}</td>'
        f"<td>{'agrees' if row['agrees'] else '<b>diverges</b>'}</td></tr>"
        for row in layers)
    return ("<p><b>Per layer</b> (source layer / target layer, max abs difference of what each receives and "
            "returns, up to the first that diverges)</p><table><thead><tr><th>source layer</th><th>target layer</th>"
            "<th>inputs max abs</th><th>outputs max abs</th><th></th></tr></thead><tbody>" + rows + "</tbody></table>")


def _histogram_figure(what: str, histogram: list[int] | tuple[int, ...] | None, atol: float, tensors: str) -> str:
    if not histogram:
        return (f"<figure><figcaption>{what}: no elementwise histogram (the tensors could not be compared element "
                f"by element)</figcaption></figure>")
    total = sum(histogram)
    caption = (f"{what}: |target &minus; source| of {total} element(s) in {escape(tensors)}, elements per bin on a "
               f"log scale; green bins lie below atol {atol:g}, orange above it (those pass only through rtol), red: "
               f"NaN/Inf on a side")
    return f"<figure>{histogram_svg(list(histogram), atol, what)}<figcaption>{caption}</figcaption></figure>"


def histogram_svg(counts: list[int], atol: float, title: str) -> str:
    """Bars per bin on a log count scale, with the atol position marked; exact counts in each bar's tooltip."""
    labels = error_histogram_labels()
    ticks = ["0", "<1e-12", *(f"1e{power}" for power in range(ERROR_HISTOGRAM_DECADES[0], ERROR_HISTOGRAM_DECADES[1])),
             "\u22651", "NaN"]
    width, height, left, bottom, top = 560, 210, 44, 52, 14
    bar_width = (width - left - 8) / len(counts)
    plot_height = height - bottom - top
    peak = math.log10(max(counts) + 1) or 1.0
    atol_position = _position_of(atol, len(counts))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)} error histogram" font-family="sans-serif" font-size="10">',
             f'<line x1="{left}" y1="{top + plot_height}" x2="{width - 8}" y2="{top + plot_height}" stroke="#8a939c"/>',
             f'<text x="4" y="{top + 8}" fill="#4a5562">{max(counts)}</text>',
             f'<text x="4" y="{top + plot_height}" fill="#4a5562">0</text>']
    for index, count in enumerate(counts):
        x = left + index * bar_width
        colour = NON_FINITE if index == len(counts) - 1 else BELOW_ATOL if index + 1 <= atol_position else ABOVE_ATOL
        bar = plot_height * math.log10(count + 1) / peak
        parts.append(f'<rect x="{x + 1:.1f}" y="{top + plot_height - bar:.1f}" width="{bar_width - 2:.1f}" '
                     f'height="{bar:.1f}" fill="{colour}"><title>{escape(labels[index])}: {count}</title></rect>')
        if count:
            parts.append(f'<text x="{x + bar_width / 2:.1f}" y="{top + plot_height - bar - 2:.1f}" '
                         f'text-anchor="middle" fill="#1d232a">{_compact(count)}</text>')
        label_y = top + plot_height + 8
        parts.append(f'<text x="{x + bar_width / 2:.1f}" y="{label_y}" text-anchor="end" fill="#4a5562" '
                     f'transform="rotate(-55 {x + bar_width / 2:.1f} {label_y})">{escape(ticks[index])}</text>')
    atol_x = left + atol_position * bar_width
    parts.append(f'<line x1="{atol_x:.1f}" y1="{top - 4}" x2="{atol_x:.1f}" y2="{top + plot_height}" '
                 f'stroke="#1d232a" stroke-dasharray="4 3"/>'
                 f'<text x="{atol_x + 3:.1f}" y="{top + 4}" fill="#1d232a">atol {atol:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _position_of(atol: float, bins: int) -> float:
    """Where atol falls on the bin axis, in bar widths: bin 2 + k spans the decade [1e{low + k}, 1e{low + k + 1}), so
    a bin whose right edge is at or left of this position lies wholly below atol."""
    low = ERROR_HISTOGRAM_DECADES[0]
    if atol <= 0:
        return 1.0  # only exact agreement is below it
    return min(max(2 + math.log10(atol) - low, 1.0), bins - 2.0)


def _compact(count: int) -> str:
    """1234567 -> 1.2M: bar labels stay within a bar's width."""
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if count >= size:
            return f"{count / size:.1f}{suffix}" if count < 10 * size else f"{count // size}{suffix}"
    return str(count)


def _small(text: str | None) -> str:
    return f" <small>({escape(text)})</small>" if text else ""


def _account_details(account: dict[str, Any], trained: bool = False) -> str:
    if not account.get("gradients_checked", True):
        return f"gradients of {account['total']} trainable weight(s) not compared (grad=False)"
    text = (f"{account['compared']} of {account['total']} trainable weight(s) trained and compared after every step "
            f"(values and updates)" if trained else
            f"gradients of {account['compared']} of {account['total']} trainable weight(s) compared")
    for key, what in (("uncompared", "not compared"), ("allowed", "not compared, allowed"), ("unused", "unused")):
        if account.get(key):
            text += f"; {what}: " + ", ".join(f"{name} ({why})" for name, why in account[key].items())
    return text


def _result_class(entry: dict[str, Any]) -> str:
    return "PASS" if entry["passed"] else "FAIL"


def speed_details(speed: dict[str, Any]) -> str:
    """The speed line of a check's details: the ratio, the evidence its verdict was read from, and the clock."""
    text = f"target / source {speed_cell(speed)}, {speed['timed']}, {speed['rounds']} rounds"
    confidence = speed.get("confidence")
    if confidence and isinstance(speed.get("ratio_low"), (int, float)):
        text += (f"; {confidence:.2%} confidence interval of the median ratio {speed['ratio_low']:.2f}-"
                 f"{speed['ratio_high']:.2f}x after {speed.get('looks', 1)} look(s) of timing")
    if speed.get("verdict"):
        text += f"; verdict: {speed['verdict']}"
    if speed.get("clock"):
        text += f"; clock: {speed['clock']}"
    if speed.get("cross_check_ratio") is not None:
        text += f" (by {speed['cross_check_clock']}: {speed['cross_check_ratio']:.2f}x)"
    if speed.get("measure_s"):
        text += f"; measured in {speed['measure_s']:.1f} s"
    return text
