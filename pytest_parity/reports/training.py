"""A training check's part of the reports: in HTML the configuration differences, the first divergence, the two loss
curves and, per step, how close the worst weight and the worst update came to their tolerance (a plot each); for
JUnit its key figures."""

from __future__ import annotations

import math
from html import escape
from typing import Any

SOURCE_COLOUR, TARGET_COLOUR, LIMIT_COLOUR = "#2f6db5", "#d9822b", "#c23b3b"


def training_section(training: dict[str, Any]) -> str:
    steps = training.get("steps") or []
    parts = ['<section class="training"><h4>Training, step by step</h4>']
    if training.get("configuration"):
        parts.append("<p><b>Configuration differences</b> (each fails the check)</p><ul>"
                     + "".join(f"<li>{escape(entry)}</li>" for entry in training["configuration"]) + "</ul>")
    if training.get("first_divergence"):
        parts.append(f"<p><b>First divergence</b>: {escape(training['first_divergence'])}</p>")
    if steps:
        parts.append('<div class="histograms">' + _figure(loss_curves_svg(steps),
                                                          "loss per step: source (blue) and target (orange)")
                     + _figure(usage_svg(steps), "per step, the worst tensor's difference as a share of what its "
                                                 "tolerance allows (log scale; above the red line fails): weights "
                                                 "(blue), updates (orange)")
                     + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _usage(comparison: dict[str, Any] | None) -> float:
    """|difference| / allowed for the comparison's worst element (allowed: atol, the update's own-scale bound)."""
    if not comparison:
        return math.nan
    allowed = _number(comparison.get("atol"))
    difference = _number(comparison.get("max_abs"))
    return difference / allowed if allowed > 0 else (0.0 if difference == 0 else math.inf)


def _polyline(points: list[tuple[float, float]], colour: str) -> str:
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    if not finite:
        return ""
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in finite)
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in finite)
    return f'<polyline points="{text}" fill="none" stroke="{colour}" stroke-width="1.5"/>{dots}'


# Both plots share one frame: width, height and the margins of the plotting area.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 360, 200, 48, 26, 12


def _axes(title: str, steps: list[dict[str, Any]], x: Any, top_label: str, bottom_label: str) -> list[str]:
    """An SVG's opening, the step axis with its labels, and the value labels at the top and bottom."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="10">',
             f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - 10}" y2="{HEIGHT - BOTTOM}" stroke="#8a939c"/>',
             f'<text x="2" y="{TOP + 8}" fill="#4a5562">{top_label}</text>'
             f'<text x="2" y="{HEIGHT - BOTTOM}" fill="#4a5562">{bottom_label}</text>']
    parts += [f'<text x="{x(index):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" fill="#4a5562">'
              f'{step.get("step")}</text>' for index, step in enumerate(steps)]
    return parts


def loss_curves_svg(steps: list[dict[str, Any]]) -> str:
    width, height, left, bottom, top = WIDTH, HEIGHT, LEFT, BOTTOM, TOP
    source = [_number(step.get("source_loss")) for step in steps]
    target = [_number(step.get("target_loss")) for step in steps]
    values = [v for v in source + target if math.isfinite(v)] or [0.0]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5

    def x(index: int) -> float:
        return left + (width - left - 10) * (index / max(len(steps) - 1, 1))

    def y(value: float) -> float:
        return top + (height - top - bottom) * (1 - (value - low) / (high - low))

    parts = _axes("loss curves", steps, x, f"{high:.4g}", f"{low:.4g}")
    parts.append(_polyline([(x(i), y(v)) for i, v in enumerate(source)], SOURCE_COLOUR))
    parts.append(_polyline([(x(i), y(v)) for i, v in enumerate(target)], TARGET_COLOUR))
    parts.append("</svg>")
    return "".join(parts)


def usage_svg(steps: list[dict[str, Any]]) -> str:
    width, height, left, bottom, top = WIDTH, HEIGHT, LEFT, BOTTOM, TOP
    weights = [_usage(step.get("worst_weight")) for step in steps]
    updates = [_usage(step.get("worst_update")) for step in steps]
    finite = [v for v in weights + updates if math.isfinite(v) and v > 0]
    low = math.floor(math.log10(min([*finite, 1e-3])))
    high = math.ceil(math.log10(max([*finite, 10.0])))

    def x(index: int) -> float:
        return left + (width - left - 10) * (index / max(len(steps) - 1, 1))

    def y(value: float) -> float:
        if not math.isfinite(value):
            return math.nan
        value = max(value, 10.0 ** low)
        return top + (height - top - bottom) * (1 - (math.log10(value) - low) / (high - low))

    parts = _axes("tolerance usage per step", steps, x, f"1e{high}", f"1e{low}")
    parts.append(f'<line x1="{LEFT}" y1="{y(1.0):.1f}" x2="{WIDTH - 10}" y2="{y(1.0):.1f}" stroke="{LIMIT_COLOUR}" '
                 f'stroke-dasharray="4 3"/><text x="{LEFT + 2}" y="{y(1.0) - 3:.1f}" fill="{LIMIT_COLOUR}">'
                 f'tolerance</text>')
    parts.append(_polyline([(x(i), y(v)) for i, v in enumerate(weights)], SOURCE_COLOUR))
    parts.append(_polyline([(x(i), y(v)) for i, v in enumerate(updates)], TARGET_COLOUR))
    parts.append("</svg>")
    return "".join(parts)


def training_key_figures(training: dict[str, Any] | None) -> dict[str, Any]:
    """Flat figures for JUnit properties: steps, configuration differences, the first divergence, the worst update."""
    if not training:
        return {}
    steps = training.get("steps") or []
    usage = max((_usage(step.get("worst_update")) for step in steps), default=math.nan)
    return {"training_steps": len(steps), "training_configuration_differences": len(training.get("configuration")
                                                                                       or []),
            "training_worst_update_usage": None if math.isnan(usage) else usage,
            **({"training_first_divergence": training["first_divergence"]} if training.get("first_divergence")
               else {})}
