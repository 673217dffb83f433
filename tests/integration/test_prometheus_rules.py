"""The example Prometheus config and alert rules pass promtool's checks and unit tests."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "printfleet-alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "printfleet-alerts.test.yml"
METRICS_SOURCE = ROOT / "daemon" / "printfleet" / "metrics"

_ALERT = re.compile(r"^\s*- alert: (\w+)\s*$", re.M)
# One alert_rule_test item: its alert name and whether it expects no alerts (`[]`).
_CASE = re.compile(r"alertname: (\w+)\s*\n\s*exp_alerts:[ \t]*(\[\])?")


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of promtool (fails in CI when missing, skips elsewhere)."""
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        if in_ci():
            pytest.fail("promtool is missing in CI (apt-get install prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """promtool with ``args``, run from deploy/prometheus so relative rule paths resolve."""
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def alert_names() -> list[str]:
    """The alerts defined in printfleet-alerts.yml, in file order."""
    return _ALERT.findall(ALERTS.read_text(encoding="utf-8"))


def exported_sample_names() -> set[str]:
    """Every sample name printfleet exposes, from the declarations in the metrics package."""
    names: set[str] = set()
    source = "".join(p.read_text(encoding="utf-8") for p in METRICS_SOURCE.glob("*.py"))
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
            continue
        first = node.args[0]
        if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        name, kind = first.value, node.func.id
        if kind == "Counter":
            names.add(name.removesuffix("_total") + "_total")
        elif kind == "Histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif kind in ("Gauge", "Family"):
            names.add(name)
    return names


def test_example_config_passes_promtool_check_config(promtool: str) -> None:
    """`promtool check config` accepts prometheus.yml and the rule file it names."""
    result = run(promtool, "check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool_check_rules(promtool: str) -> None:
    """`promtool check rules` accepts printfleet-alerts.yml and finds every alert."""
    result = run(promtool, "check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout, result.stdout


def test_alert_unit_tests_pass_promtool_test_rules(promtool: str) -> None:
    """`promtool test rules` passes every case in printfleet-alerts.test.yml."""
    result = run(promtool, "test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each alert is unit-tested both firing and not firing."""
    cases = _CASE.findall(ALERT_TESTS.read_text(encoding="utf-8"))
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    names = set(alert_names())
    assert names, "no alerts found in printfleet-alerts.yml"
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"
    assert {n for n, _ in cases} <= names, "test cases name alerts that do not exist"


def test_alert_rules_select_only_metrics_printfleet_exports() -> None:
    """Each printfleet metric an alert expression uses is declared in the metrics package."""
    used = set(re.findall(r"\bprintfleet_[A-Za-z0-9_]+", ALERTS.read_text(encoding="utf-8")))
    assert used, "no printfleet metrics found in the alert rules"
    unknown = used - exported_sample_names()
    assert not unknown, f"alert rules use metrics printfleet does not export: {sorted(unknown)}"
