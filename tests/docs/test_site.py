"""The built documentation site (tox -e docs) in a real headless browser: every page is opened in Debian's chromium
through Playwright, served from localhost; every internal link must resolve (HTTP 200, and its anchor must exist on
the page it points to), the pages that carry code examples must show them, and the generated tables must hold every
row of the benchmark files they come from. Nothing may be fetched from outside localhost.

    python3 -m tox -e docs                                          # builds the site, then runs this
    python3 -m pytest -m docs tests/docs      # against build/site (PARITY_DOCS_SITE=... for another)
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("PARITY_DOCS_SITE", ROOT / "build" / "site"))
CHROMIUM = os.environ.get("PARITY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Page -> text each of its code blocks must include somewhere (one code block per entry).
CODE_EXAMPLES = {
    "quickstart/": ["python3 -m tox -e demo", "python3 -m tox -e py311", "parity.check(model, inputs="],
    "port/": ["parity.check(build_keras_cnn(), TorchCNN()", "parity.randint(", "input_names="],
    "training/": ["parity.check_training("],
    "ci/": ["--parity-baseline=", "--parity-report="],
    "reference/": [],
}


@dataclass
class Crawl:
    """What a crawl saw: pages opened (path -> HTTP status), problems found, code blocks per page."""

    pages: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    code: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, list[int]] = field(default_factory=dict)
    outside: list[str] = field(default_factory=list)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the browser closing a connection early (a 404 page it did not read to the end) is no failure


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(directory) -> base URL of that directory on localhost (one server per directory)."""
    servers = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r docs/requirements.txt")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (or set PARITY_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def crawl(browser, base: str, start_paths: list[str]) -> Crawl:
    """Open every page reachable from ``start_paths`` under ``base`` and check its internal links and anchors."""
    seen = Crawl()
    context = browser.new_context()
    page = context.new_page()

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(base) or url.startswith("data:") or url.startswith("blob:"):
            request_route.continue_()
        else:
            seen.outside.append(url)
            request_route.abort()

    page.route("**/*", route)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    anchors_needed: dict[str, set[str]] = {}
    linked_from: dict[str, set[str]] = {}
    ids: dict[str, set[str]] = {}
    queue = [urljoin(base, path) for path in start_paths]
    while queue:
        url = queue.pop(0)
        path = urlparse(url).path
        if path in seen.pages:
            continue
        response = page.goto(url, wait_until="load")
        status = response.status if response else 0
        seen.pages[path] = status
        if status != 200:
            continue
        if "text/html" not in (response.headers.get("content-type") or ""):
            continue
        for error in errors:
            seen.problems.append(f"{path}: script error {error}")
        errors.clear()
        ids[path] = set(page.eval_on_selector_all("[id]", "nodes => nodes.map(n => n.id)"))
        ids[path] |= set(page.eval_on_selector_all("a[name]", "nodes => nodes.map(n => n.name)"))
        seen.code[path] = page.eval_on_selector_all("pre code, pre", "nodes => nodes.map(n => n.innerText)")
        seen.tables[path] = page.eval_on_selector_all(
            "article table", "tables => tables.map(t => t.querySelectorAll('tbody tr').length)")
        hrefs = page.eval_on_selector_all("a[href]", "nodes => nodes.map(n => n.href)")
        for href in hrefs:
            target, fragment = urldefrag(href)
            if not target.startswith(base):
                continue  # outside links are not followed (the site has none to check offline)
            target_path = urlparse(target).path
            linked_from.setdefault(target_path, set()).add(path)
            if fragment:
                anchors_needed.setdefault(target_path, set()).add(fragment)
            if target_path not in seen.pages:
                queue.append(target)
    for path, status in seen.pages.items():
        if status != 200:
            sources = ", ".join(sorted(linked_from.get(path, ()))) or "nowhere: a start page"
            seen.problems.append(f"{path}: HTTP {status} (linked from {sources})")
    for target_path, fragments in anchors_needed.items():
        if seen.pages.get(target_path) != 200:
            continue
        for fragment in sorted(fragments - ids.get(target_path, set())):
            sources = ", ".join(sorted(linked_from[target_path]))
            seen.problems.append(f"{target_path}#{fragment}: no such anchor (linked from {sources})")
    context.close()
    return seen


@pytest.fixture(scope="module")
def site(browser, serve) -> Crawl:
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site at {SITE}: run `python3 -m tox -e docs` (or `mkdocs build --strict`) first")
    built = sorted(str(p.relative_to(SITE).parent).replace(".", "") for p in SITE.rglob("index.html"))
    start = ["" if p == "" else p + "/" for p in built] + ["404.html"]
    base = serve(SITE)
    return crawl(browser, base, start)


def test_every_page_opens_and_every_internal_link_resolves(site: Crawl) -> None:
    pages = {path for path, status in site.pages.items() if path.endswith("/")}
    assert len(pages) >= 17, sorted(pages)
    assert site.problems == []
    assert site.outside == []


def test_pages_carry_their_code_examples(site: Crawl) -> None:
    missing = [f"/{page}: no code block with {text!r}" for page, texts in CODE_EXAMPLES.items() for text in texts
               if not any(text in block for block in site.code.get("/" + page, []))]
    assert missing == []
    # The reference page includes the README's tables: marker arguments and options, every row.
    readme = (ROOT / "README.md").read_text()
    arguments = readme.split("### Marker arguments", 1)[1].split("###", 1)[0]
    options = readme.split("### Options", 1)[1].split("<!--", 1)[0]
    rows = [sum(line.startswith("| `") for line in text.splitlines()) for text in (arguments, options)]
    assert site.tables["/reference/"][:2] == rows


def test_generated_tables_hold_every_row_of_their_benchmark_files(site: Crawl) -> None:
    coverage = json.loads((ROOT / "benchmarks" / "coverage_results.json").read_text())["rows"]
    assert len(coverage) in site.tables["/coverage/"]
    realworld = [line for line in (ROOT / "benchmarks" / "realworld_table.md").read_text().splitlines()
                 if line.startswith("|")][2:]
    assert len(realworld) in site.tables["/realworld/"]
    measurements = json.loads((ROOT / "benchmarks" / "measurements.json").read_text())["tables"]
    for name in ("measurements", "gpu", "gradient_scale_rules", "rounding_reference"):
        assert len(measurements[name]["rows"]) in site.tables["/measurements/"], name
    mutant_models = {json.loads(line)["model"] for name in ("mutants_before.jsonl", "mutants_after.jsonl")
                     for line in (ROOT / "benchmarks" / name).read_text().splitlines()}
    assert len(mutant_models) in site.tables["/measurements/"]
    assert len(measurements["speed_gate_noise"]["rows"]) in site.tables["/speed/"]
    assert len(measurements["port_pairs"]["rows"]) in site.tables["/port/"]
    training_mutants = json.loads((ROOT / "benchmarks" / "training_mutants.json").read_text())["mutants"]
    assert len(training_mutants) in site.tables["/training/"]


# -- the checker itself can fail ---------------------------------------------------------------------------------------

BROKEN = {
    "index.html": '<h1 id="top">Home</h1><a href="good.html#here">ok</a> <a href="missing.html">gone</a> '
                  '<a href="good.html#nowhere">bad anchor</a> <a href="#top">self</a>',
    "good.html": '<h2 id="here">Here</h2><pre><code>parity.check(model, inputs=x)</code></pre>',
}


def test_the_link_checker_reports_a_missing_page_and_a_missing_anchor(browser, serve, tmp_path: Path) -> None:
    for name, body in BROKEN.items():
        (tmp_path / name).write_text(f"<!doctype html><html><body>{body}</body></html>")
    seen = crawl(browser, serve(tmp_path), [""])
    assert set(seen.pages) == {"/", "/good.html", "/missing.html"}
    assert sorted(seen.problems) == ["/good.html#nowhere: no such anchor (linked from /)",
                                     "/missing.html: HTTP 404 (linked from /)"]
    assert any("parity.check(" in block for block in seen.code["/good.html"])


def test_the_link_checker_passes_a_sound_site_and_reports_outside_requests(browser, serve, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<!doctype html><html><head><link rel="stylesheet" '
                                         'href="http://example.invalid/x.css"></head><body><a href="#x" id="x">x</a>'
                                         '</body></html>')
    seen = crawl(browser, serve(tmp_path), [""])
    assert seen.problems == []
    assert seen.outside == ["http://example.invalid/x.css"]
