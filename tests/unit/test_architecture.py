"""Dependency direction stays as designed (STYLE.md): the core is pure, adapters stay apart.

Each test is one rule of the dependency diagram. Modules are named by their dotted path and
matched by prefix (``printfleet.sinks.mqtt`` covers ``printfleet.sinks.mqtt.sink`` too), so the
rules keep holding when a module becomes a package. Relative imports are resolved, and so are
imports by name at run time (``importlib.import_module("printfleet.app")``, the CLI's lazy
loader). A failure names the importing file, the line, what it imported and the rule it broke.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "printfleet"

# Functions that import the module named by their first argument at run time.
DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__", "_lazy", "lazy"})

CONCRETE_ADAPTERS = (
    "printfleet.sources.formlabs",
    "printfleet.sources.carbon",
    "printfleet.sinks.mqtt",
    "printfleet.sinks.webhook",
    "printfleet.sinks.apprise_sink",
)
# The composition root, and the factories that turn source and receiver settings into adapters.
MAY_NAME_ADAPTERS = ("printfleet.app", "printfleet.sources.factory", "printfleet.sinks.factory")


@dataclass(frozen=True, slots=True)
class Import:
    """One import in one module: who imports what, on which line."""

    importer: str
    path: Path
    name: str
    line: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line} imports {self.name}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module an ``ImportFrom`` starts from, resolving ``from .x import y``."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _called(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def imports(path: Path) -> list[Import]:
    """Every module ``path`` imports, statically or by name, with the line it does so on."""
    importer = _module_name(path)
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [Import(importer, path, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, path)
            for alias in node.names:
                # `from printfleet.sinks import mqtt` imports the module printfleet.sinks.mqtt.
                sub = f"{module}.{alias.name}"
                found.append(
                    Import(importer, path, sub if _is_module(sub) else module, node.lineno)
                )
        elif (
            isinstance(node, ast.Call)
            and _called(node) in DYNAMIC_IMPORTERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and node.args[0].value.startswith("printfleet")
        ):
            found.append(Import(importer, path, node.args[0].value, node.lineno))
    return found


def under(name: str, prefixes: Iterable[str]) -> bool:
    """True when ``name`` is one of ``prefixes`` or a submodule of one (dotted, not textual)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules(*prefixes: str) -> list[Path]:
    """The package's module files whose dotted names fall under ``prefixes`` (all if none)."""
    every = sorted(PACKAGE.rglob("*.py"))
    return [p for p in every if not prefixes or under(_module_name(p), prefixes)]


def _id(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def broken(rule: str, violations: list[Import]) -> str:
    return f"{rule}\n" + "\n".join(f"  {v}" for v in violations)


@pytest.mark.parametrize("path", modules("printfleet.core"), ids=_id)
def test_core_imports_only_stdlib_and_itself(path: Path) -> None:
    """A core module imports only the standard library, printfleet.core and printfleet.errors."""
    allowed = ("printfleet.core", "printfleet.errors", "__future__")
    bad = [
        i
        for i in imports(path)
        if not under(i.name, allowed) and i.name.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not bad, broken("the core imports only the stdlib, printfleet.core, errors:", bad)


SOURCES_AND_SINKS_STAY_BELOW = (
    "printfleet.poller",
    "printfleet.pipeline",
    "printfleet.outbox",
    "printfleet.app",
    "printfleet.cli",
)


@pytest.mark.parametrize("path", modules("printfleet.sources"), ids=_id)
def test_sources_do_not_import_sinks_or_the_pipeline(path: Path) -> None:
    """Sources never import sinks, the poller, the pipeline, the outbox, the app or the CLI."""
    forbidden = ("printfleet.sinks", *SOURCES_AND_SINKS_STAY_BELOW)
    bad = [i for i in imports(path) if under(i.name, forbidden)]
    assert not bad, broken(f"sources never import {', '.join(forbidden)}:", bad)


@pytest.mark.parametrize("path", modules("printfleet.sinks"), ids=_id)
def test_sinks_do_not_import_sources_or_the_pipeline(path: Path) -> None:
    """Sinks never import sources, the poller, the pipeline, the outbox, the app or the CLI."""
    forbidden = ("printfleet.sources", *SOURCES_AND_SINKS_STAY_BELOW)
    bad = [i for i in imports(path) if under(i.name, forbidden)]
    assert not bad, broken(f"sinks never import {', '.join(forbidden)}:", bad)


@pytest.mark.parametrize(
    "path", modules("printfleet.poller", "printfleet.pipeline", "printfleet.outbox"), ids=_id
)
def test_the_flow_depends_only_on_protocols(path: Path) -> None:
    """Poller, pipeline and outbox import only the ``base`` protocols of sources and sinks."""
    allowed = ("printfleet.sources.base", "printfleet.sinks.base")
    bad = [
        i
        for i in imports(path)
        if under(i.name, ("printfleet.sources", "printfleet.sinks")) and not under(i.name, allowed)
    ]
    assert not bad, broken(
        "poller, pipeline and outbox import only sources.base and sinks.base of the adapters:", bad
    )


def test_only_the_app_and_the_factory_name_concrete_adapters() -> None:
    """Only app.py and sources/factory.py import formlabs, carbon, mqtt and webhook.

    The CLI's demo and snapshot commands reach adapters through the app and the factory; an
    adapter's own package may import its own parts.
    """
    bad = [
        i
        for path in modules()
        for i in imports(path)
        if under(i.name, CONCRETE_ADAPTERS)
        and not under(i.importer, MAY_NAME_ADAPTERS)
        and not any(under(i.importer, [a]) and under(i.name, [a]) for a in CONCRETE_ADAPTERS)
    ]
    assert not bad, broken(
        f"only {' and '.join(MAY_NAME_ADAPTERS)} import {', '.join(CONCRETE_ADAPTERS)}:", bad
    )


@pytest.mark.parametrize(
    "path",
    modules("printfleet.config", "printfleet.rulepacks"),
    ids=_id,
)
def test_config_and_rule_packs_sit_below_the_adapters(path: Path) -> None:
    """Config and rule-pack loading never import the adapters, the flow, metrics, app or CLI."""
    forbidden = (
        "printfleet.sources",
        "printfleet.sinks",
        "printfleet.store",
        "printfleet.metrics",
        *SOURCES_AND_SINKS_STAY_BELOW,
    )
    bad = [i for i in imports(path) if under(i.name, forbidden)]
    assert not bad, broken(f"config and rulepacks never import {', '.join(forbidden)}:", bad)


def test_only_tests_import_the_test_doubles() -> None:
    """No module of the daemon imports printfleet.testing; it is shipped for tests only."""
    bad = [
        i
        for path in modules()
        for i in imports(path)
        if under(i.name, ["printfleet.testing"]) and not under(i.importer, ["printfleet.testing"])
    ]
    assert not bad, broken("only tests import printfleet.testing:", bad)


def test_only_the_demo_and_the_cli_run_the_simulator() -> None:
    """The simulator serves the demo, the CLI's ``simulate`` command and tests, nothing else."""
    allowed = ("printfleet.simulator", "printfleet.cli")
    bad = [
        i
        for path in modules()
        for i in imports(path)
        if under(i.name, ["printfleet.simulator"]) and not under(i.importer, allowed)
    ]
    assert not bad, broken(f"only {', '.join(allowed)} import printfleet.simulator:", bad)


@pytest.mark.parametrize("path", modules("printfleet.simulator"), ids=_id)
def test_simulator_does_not_import_the_adapters(path: Path) -> None:
    """The simulator never imports the sources, so an adapter bug cannot be mirrored by the fake."""
    bad = [i for i in imports(path) if under(i.name, ["printfleet.sources"])]
    assert not bad, broken("the simulator never imports printfleet.sources:", bad)


def test_the_rules_see_every_module() -> None:
    """The walk finds the package's modules, so an empty parametrization cannot pass vacuously."""
    names = {_module_name(p) for p in modules()}
    assert {"printfleet.app", "printfleet.poller", "printfleet.core.model"} <= names
    for sub in (
        "printfleet.core",
        "printfleet.sources",
        "printfleet.sinks",
        "printfleet.simulator",
    ):
        assert modules(sub), f"no modules found under {sub}"
