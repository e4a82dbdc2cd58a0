"""The layering of DESIGN.md, checked on the imports themselves (by AST, not by running them).

Bottom up: ``ops`` and ``trace`` -> ``model`` (pure) and ``protocol`` -> ``machine``,
``console``, ``ssh`` -> ``session`` -> ``targets`` -> ``conformance`` -> ``cli`` and
``pytest_plugin``.  An import never points up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "harness"


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imports(path: Path) -> set[str]:
    """Every harness module a file imports, at any depth (function-level imports count too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n in MODULES or n == "harness")
    return {n for n in out if n.startswith("harness")}


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def offenders(selected: str, allowed) -> list[str]:
    bad = []
    for mod, path in MODULES.items():
        if not within(mod, selected):
            continue
        for imp in imports(path):
            if not allowed(imp):
                bad.append(f"{mod} imports {imp}")
    return bad


def test_the_parser_sees_imports_at_every_depth():
    mods = imports(MODULES["harness.conformance.live"])
    assert "harness.targets" in mods and "harness.conformance.runner" in mods
    assert "harness.conformance.html" in mods  # imported inside a function


def test_models_import_only_models_ops_and_trace():
    assert offenders("harness.model", lambda m: within(m, "harness.model", "harness.ops", "harness.trace")) == []


def test_trace_and_ops_are_the_bottom():
    assert offenders("harness.trace", lambda m: within(m, "harness.ops", "harness.trace")) == []
    assert offenders("harness.ops", lambda m: m == "harness.ops") == []


@pytest.mark.parametrize("layer", ["harness.protocol", "harness.session", "harness.targets",
                                   "harness.machine", "harness.console", "harness.ssh"])
def test_lower_layers_import_nothing_from_conformance(layer):
    assert offenders(layer, lambda m: not within(m, "harness.conformance")) == []


def test_protocol_and_session_know_no_targets():
    for layer in ("harness.protocol", "harness.session"):
        assert offenders(layer, lambda m: not within(m, "harness.targets", "harness.machine")) == []


def test_nothing_below_cli_imports_cli():
    # harness/__main__.py is `python -m harness`: the entry point above cli
    bad = [o for o in offenders("harness", lambda m: m != "harness.cli") if not o.startswith("harness.__main__ ")]
    assert bad == []


def test_nothing_imports_the_pytest_plugin():
    assert offenders("harness", lambda m: m != "harness.pytest_plugin") == []
