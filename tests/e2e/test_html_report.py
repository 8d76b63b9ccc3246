"""--parity-html: one self-contained file from a real session (a passing convert check, a failing convert check, a
failing port), its content checked against the JSON report of the same run, and rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

SUITE = """
import keras
import pytest
import torch

def mlp(width):
    torch.manual_seed(width)
    return torch.nn.Sequential(torch.nn.Linear(6, width), torch.nn.Tanh(), torch.nn.Linear(width, 3))

@pytest.mark.parity(devices=("cpu",))
@pytest.mark.parametrize("label", ["<b>not bold</b>"])
def test_convert(parity, label):
    parity.check(mlp(8), inputs=parity.randn(5, 6))

@pytest.mark.parity(devices=("cpu",), atol=0.0, rtol=0.0, grad_atol=0.0, grad_rtol=0.0)
def test_strict(parity):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(3)])
    parity.check(model, inputs=parity.randn(64, 6) * 100)

@pytest.mark.parity(devices=("cpu",))
def test_port_with_the_wrong_activation(parity):
    source = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    target = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    parity.check(source, target, inputs=parity.randn(4, 6))
"""


class _Elements(HTMLParser):
    """Tags, attributes and text of a page, as a browser-independent first look."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str, **attrs: str) -> int:
        return sum(1 for name, found in self.tags if name == tag and all(found.get(k) == v for k, v in attrs.items()))


@pytest.fixture(scope="module")
def session_reports(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    directory = tmp_path_factory.mktemp("html_session")
    (directory / "test_suite.py").write_text(SUITE)
    html, report = directory / "out" / "parity.html", directory / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_suite.py", f"--parity-html={html}",
         f"--parity-report={report}"], cwd=directory, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    return html, json.loads(report.read_text()), run


def test_the_html_report_holds_the_summary_histograms_and_per_layer_table(session_reports):
    html, report, run = session_reports
    assert run.returncode == 1, run.stdout  # two of three checks fail, by design
    # The summary wraps at 120 columns: a long path goes on a line of its own.
    assert f"parity HTML report written to {html}" in " ".join(line.strip() for line in run.stdout.splitlines())
    page = html.read_text()
    elements = _Elements()
    elements.feed(page)
    # Self-contained: nothing fetched from elsewhere, no scripts.
    assert elements.count("script") == elements.count("link") == elements.count("img") == 0
    assert "1 of 3 parity check(s) passed" in page
    # The test id with markup in it is shown as text, not interpreted.
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page
    assert elements.count("article") == 3 and elements.count("article", **{"class": "failed"}) == 2
    # Outputs and gradients histograms for each check; the bars' counts are the JSON report's.
    assert elements.count("svg") == 6
    for entry in report["results"]:
        assert sum(entry["outputs"]["histogram"]) == entry["outputs"]["total"]
        for comparison in entry["grads"].values():
            assert sum(comparison["histogram"]) == comparison["total"]
    strict = next(entry for entry in report["results"] if entry["nodeid"].endswith("test_strict[cpu]"))
    assert strict["outputs"]["histogram"][0] < strict["outputs"]["total"]  # some elements differ: bars above atol 0
    # The failed port: its per-layer table names the layer pair that diverges.
    port = next(entry for entry in report["results"] if "port" in entry["nodeid"])
    assert port["layers"] and not port["layers"][-1]["agrees"]
    assert elements.count("tr", **{"class": "diverges"}) == 1
    assert "Per layer" in page and port["layers"][-1]["target"] in "".join(elements.text)
    for name in ("torch", "tensorflow", "onnxruntime", "onnx2torch"):
        assert f"<th>{name}</th>" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_the_html_report_renders_in_headless_chromium(session_reports, tmp_path):
    from PIL import Image

    html, _, _ = session_reports
    screenshot = tmp_path / "parity.png"
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*browser, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    # The browser's own parse: every check's SVG histograms, each with a bar per bin.
    assert dom.stdout.count("<svg") == 6, dom.stderr[-2000:]
    assert dom.stdout.count("<rect") == 6 * 16
    subprocess.run([*browser, f"--screenshot={screenshot}", "--window-size=1280,2400", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    keep = os.environ.get("PARITY_HTML_SCREENSHOT")  # to look at it: PARITY_HTML_SCREENSHOT=/tmp/parity.png
    if keep:
        shutil.copy(screenshot, keep)
    image = Image.open(screenshot).convert("RGB")
    assert image.size == (1280, 2400)
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    from pytest_parity.reports.html import ABOVE_ATOL, BELOW_ATOL

    # Drawn, not just parsed: the bars below and above atol are on the page in their colours.
    for bar in (BELOW_ATOL, ABOVE_ATOL):
        assert tuple(int(bar[i:i + 2], 16) for i in (1, 3, 5)) in colours, bar
