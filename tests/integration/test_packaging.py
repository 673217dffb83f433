"""printfleet installs as a normal package: a wheel with the console script and its data files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from printfleet import __version__

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (path,) = out.glob("printfleet-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_the_package_and_the_console_script(wheel: zipfile.ZipFile) -> None:
    """The wheel carries the package (typed) and declares the `printfleet` command."""
    names = set(wheel.namelist())
    assert {"printfleet/__init__.py", "printfleet/py.typed", "printfleet/cli/__init__.py"} <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "printfleet = printfleet.cli:main" in wheel.read(entry_points).decode()


def test_wheel_ships_rule_packs_unit_and_example_config(wheel: zipfile.ZipFile) -> None:
    """Shipped rule packs, the systemd unit and the example config install under share/."""
    names = {n.split(".data/data/", 1)[-1] for n in wheel.namelist() if ".data/data/" in n}
    assert "share/printfleet/rules/default.toml" in names
    assert "share/printfleet/deploy/systemd/printfleet.service" in names
    assert "share/printfleet/config.example.toml" in names


def test_wheel_ships_dashboard_prometheus_files_and_readme(wheel: zipfile.ZipFile) -> None:
    """The Grafana dashboard, the Prometheus scrape config and alert rules (with their tests)
    and the README the unit's Documentation= names install under share/printfleet/."""
    names = {n.split(".data/data/", 1)[-1] for n in wheel.namelist() if ".data/data/" in n}
    shipped = {f"share/printfleet/{p.relative_to(ROOT)}" for p in (ROOT / "deploy").rglob("*.*")}
    assert shipped <= names, shipped - names
    assert "share/printfleet/README.md" in names


def test_make_demo_installs_no_test_or_bench_extras() -> None:
    """`make demo` installs the package alone; `make test` adds the test and bench extras."""

    def recipe(target: str) -> str:
        done = subprocess.run(
            ["make", "-n", "-B", "-C", str(ROOT), target],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    demo = recipe("demo")
    assert "pip install --quiet -e ." in demo
    assert "[test" not in demo
    assert "bench]" not in demo
    assert ".[test,bench]" in recipe("test")


def test_version_comes_from_package_metadata() -> None:
    """`printfleet --version` prints the installed distribution's version."""
    result = subprocess.run(
        [sys.executable, "-m", "printfleet", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"printfleet {__version__}"
    assert __version__ != "0.0.0+source"
