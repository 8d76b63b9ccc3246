"""The package's layout rules (ARCHITECTURE.md): no import cycles, and each folder imports only the layers below it.

Every import counts, module-level or inside a function, so a function-level import cannot hide a cycle.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "benchmarks" / "import_cycles.py")
assert _spec and _spec.loader
import_cycles = importlib.util.module_from_spec(_spec)
sys.modules["import_cycles"] = import_cycles
_spec.loader.exec_module(import_cycles)

P = "pytest_parity"
CORE = {f"{P}.{name}" for name in ("errors", "result", "settings", "session", "seeding", "trees", "layouts",
                                   "import_guard")}
# The adapters export and import their own framework's side through these bridge modules, which import no adapter.
ADAPTER_STEPS = (f"{P}.bridge.tf_export", f"{P}.bridge.torch_export", f"{P}.bridge.opset_down",
                 f"{P}.bridge.onnx_rewrites", f"{P}.bridge.converters")
MODES = (f"{P}.modes.convert", f"{P}.modes.port", f"{P}.modes.cross_device", f"{P}.modes.training")


def _within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def allowed(importer: str, imported: str) -> bool:
    """What may import what (ARCHITECTURE.md, "The rules")."""
    if imported in CORE or imported in (P, f"{P}.frameworks", f"{P}.bridge", f"{P}.verdict", f"{P}.modes",
                                        f"{P}.reports", f"{P}.bridge.converters"):
        return importer != P or imported in CORE  # packages' __init__ hold only docstrings or shared types
    if importer in CORE:
        return False
    if _within(importer, (f"{P}.frameworks",)):
        return _within(imported, (f"{P}.frameworks", *ADAPTER_STEPS))
    if _within(importer, (f"{P}.bridge",)):
        if _within(importer, ADAPTER_STEPS):
            return _within(imported, ADAPTER_STEPS)
        return _within(imported, (f"{P}.frameworks", f"{P}.bridge"))
    if _within(importer, (f"{P}.verdict",)):
        return _within(imported, (f"{P}.frameworks", f"{P}.verdict"))
    if _within(importer, (f"{P}.reports",)):
        return _within(imported, (f"{P}.reports",))
    if _within(importer, (f"{P}.modes",)):
        own = next((m for m in MODES if _within(importer, (m,))), None)
        # A training check trains a port: it builds on port mode's pairing (the one exception, ARCHITECTURE.md).
        other_modes = tuple(m for m in MODES
                            if m != own and not (own == f"{P}.modes.training" and m == f"{P}.modes.port"))
        return not _within(imported, (*other_modes, f"{P}.reports", f"{P}.check", f"{P}.fixture", f"{P}.plugin"))
    if importer == f"{P}.check":
        return not _within(imported, (f"{P}.reports", f"{P}.fixture", f"{P}.plugin"))
    if importer == f"{P}.fixture":
        return imported != f"{P}.plugin"
    # The plugin and the command line (python -m pytest_parity combine) are the package's two entry points.
    return importer in (f"{P}.plugin", f"{P}.__main__")


def test_the_package_has_no_import_cycle():
    assert import_cycles.cycles(import_cycles.import_edges(ROOT)) == []


def test_each_folder_imports_only_the_layers_below_it():
    edges = import_cycles.import_edges(ROOT)
    broken = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets if not allowed(a, b))
    assert broken == []


@pytest.mark.parametrize("importer, imported, expected", [
    (f"{P}.modes.convert", f"{P}.modes.port.run", False),  # a mode never imports another
    (f"{P}.modes.port.run", f"{P}.modes.steps", True),
    (f"{P}.modes.training.run", f"{P}.modes.port.run", True),  # training builds on port mode's pairing
    (f"{P}.modes.port.run", f"{P}.modes.training.run", False),
    (f"{P}.modes.training.run", f"{P}.modes.convert", False),
    (f"{P}.verdict.compare", f"{P}.bridge.pipeline", False),
    (f"{P}.frameworks.torch", f"{P}.bridge.pipeline", False),
    (f"{P}.bridge.torch_export", f"{P}.frameworks.torch", False),
    (f"{P}.reports.records", f"{P}.verdict.compare", False),
    (f"{P}.errors", f"{P}.verdict.compare", False),
])
def test_the_rules_refuse_what_they_should(importer, imported, expected):
    assert allowed(importer, imported) is expected


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / P
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pytest_parity import b\n")
    (package / "b.py").write_text("def f():\n    from pytest_parity.a import x\n")
    assert import_cycles.cycles(import_cycles.import_edges(tmp_path)) == [[f"{P}.a", f"{P}.b"]]
