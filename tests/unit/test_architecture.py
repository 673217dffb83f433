"""Dependency direction stays as designed (STYLE.md): the core is pure, adapters stay apart."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "printfleet"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("path", _modules("core"), ids=lambda p: p.name)
def test_core_imports_only_stdlib_and_itself(path: Path) -> None:
    """A core module imports only the standard library, printfleet.core and printfleet.errors."""
    allowed_prefixes = ("printfleet.core", "printfleet.errors", "__future__")
    for name in _imports(path):
        top = name.split(".")[0]
        if name.startswith(allowed_prefixes) or top in sys.stdlib_module_names:
            continue
        pytest.fail(f"{path.name} imports {name}: the core must stay free of I/O libraries")


@pytest.mark.parametrize("path", _modules("sources"), ids=lambda p: p.name)
def test_sources_do_not_import_sinks_or_the_pipeline(path: Path) -> None:
    """Sources never import sinks, the poller, the pipeline or the app."""
    forbidden = ("printfleet.sinks", "printfleet.poller", "printfleet.pipeline", "printfleet.app")
    bad = [n for n in _imports(path) if n.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _modules("sinks"), ids=lambda p: p.name)
def test_sinks_do_not_import_sources_or_the_pipeline(path: Path) -> None:
    """Sinks never import sources, the poller, the pipeline or the app."""
    forbidden = ("printfleet.sources", "printfleet.poller", "printfleet.pipeline", "printfleet.app")
    bad = [n for n in _imports(path) if n.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _modules("simulator"), ids=lambda p: p.name)
def test_simulator_does_not_import_the_adapters(path: Path) -> None:
    """The simulator never imports the sources, so an adapter bug cannot be mirrored by the fake."""
    bad = [n for n in _imports(path) if n.startswith("printfleet.sources")]
    assert not bad, f"{path.name} imports {bad}"
