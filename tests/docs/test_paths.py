"""Every repository path the README, the documentation pages and the configs name is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["README.md", "ARCHITECTURE.md", "tox.ini", "constraints.txt", "mkdocs.yml", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
# A path-like word: folders and a file name with a known suffix, or a folder ending in "/".
PATH = re.compile(r"(?<![\w./{<-])((?:[\w.-]+/)*[\w.-]+\.(?:py|md|toml|ini|txt|json|jsonl|yml|yaml|csv)|"
                  r"(?:\.?[\w-]+/)+)(?![\w/{<-])")
# Paths a command writes, placeholders, and upstream projects' names: not files of this repository.
NOT_OURS = re.compile(r"^(parity[-\w]*\.(json|xml|html)|coverage\.(json|xml|md)|dist/|build/|reports/|baselines/|"
                      r"coverage-reports/|sweep/|rerun/|\.pytest_cache/|\.tox/|site-packages/|transformers/|"
                      r"onnx/|a\.jsonl|b\.jsonl|report\.(json|xml)|realworld_table\.md|requirements\.txt|"
                      r"bn/|PINTO0309/|ENOT-AutoDL/|pytorch/|onnx2torch/|ReadVariableOp)")


def _named(text: str) -> set[str]:
    spans = re.findall(r"`([^`]+)`", text) + re.findall(r"\]\(([^)#]+)", text) + re.findall(r"^#.*$", text, re.M)
    return {match for span in spans for match in PATH.findall(span)}


def _exists(name: str, source: str) -> bool:
    relative_to = (ROOT / source).parent
    candidates = [ROOT / name, relative_to / name, ROOT / "pytest_parity" / name, ROOT / "benchmarks" / name]
    if any(c.exists() for c in candidates):
        return True
    # A module named by its folder inside the package (`verdict/tolerances.py`), or by its bare name in a listing of
    # one folder (`fixtures/` ... `keras_models.py`).
    return any(str(p).endswith("/" + name.rstrip("/")) for p in _files())


def _files() -> list[Path]:
    tracked = [ROOT / folder for folder in ("pytest_parity", "fixtures", "tests", "benchmarks", "docs", ".ci")]
    return [p for folder in tracked for p in folder.rglob("*") if "__pycache__" not in p.parts]


def test_every_path_named_exists() -> None:
    missing = sorted(f"{source}: {name}" for source in SOURCES for name in _named((ROOT / source).read_text())
                     if not NOT_OURS.match(name) and not _exists(name, source))
    assert missing == []


def test_the_checker_sees_a_missing_path() -> None:
    assert _named("see `PITFALLS.md` and [x](docs/nothing.md)") == {"PITFALLS.md", "docs/nothing.md"}
    assert not _exists("PITFALLS.md", "README.md")
    assert _exists("verdict/tolerances.py", "README.md") and _exists("docs/pitfalls.md", "tox.ini")
