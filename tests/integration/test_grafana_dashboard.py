"""The Grafana dashboard: importable as shipped, and every query answers from a real Prometheus.

The unit-level tests read ``deploy/grafana/printfleet-dashboard.json`` alone. The real test
starts ``printfleet demo`` (simulator + daemon), a real Prometheus scraping it every second
with the shipped example config and alert rules, waits until prints have finished, then runs
every panel's PromQL (template variables substituted) through the Prometheus HTTP API.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import in_ci
from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "printfleet-dashboard.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
METRICS_SOURCE = ROOT / "daemon" / "printfleet" / "metrics"
DATASOURCE = "${datasource}"

#: Values for Grafana's variables when a query runs outside Grafana.
VARIABLES = {
    "source": ".*",
    "printer": ".*",
    "__interval": "1m",
    "__rate_interval": "1m",
    "__range": "5m",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_SELECTOR = re.compile(r"\b(printfleet_[A-Za-z0-9_]+)\b(\{[^}]*\})?")
# A comparison against a number that filters series (not a `bool` comparison, not a matcher).
_FILTER = re.compile(r"(==|!=|>=|<=|>|<)\s*(?!bool\b)(?=-?[0-9])")

#: Series a sink-less demo never has, with the reason. Their panels may be empty in the real
#: test, but the demo must still declare the family (so the name matches what it exports).
DEMO_HAS_NO_SAMPLES = {
    "printfleet_deliveries_total": "the demo runs with --no-mqtt, so it has no sinks",
    "printfleet_outbox_pending": "the demo runs with --no-mqtt, so it has no sinks",
    "printfleet_outbox_dead": "the demo runs with --no-mqtt, so it has no sinks",
    "printfleet_records_skipped_total": "the demo's simulator sends no malformed records",
}

DEMO_COMMAND = [
    sys.executable,
    "-m",
    "printfleet",
    "demo",
    "--printers",
    "12",
    "--speed",
    "60",
    "--duration",
    "150s",
    "--no-mqtt",
]
START_TIMEOUT = 30.0  # demo printing its metrics URL; Prometheus becoming ready
DATA_TIMEOUT = 90.0  # enough scrapes and a finished print (usually ~20 s at speed 60)
MIN_SCRAPES = 20  # one per second: enough samples for rate()/increase() over 1m


# -- reading the dashboard -----------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One PromQL target of one panel."""

    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.panel} [{self.ref}]: {self.expr}"


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON as shipped."""
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows flattened in."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data (rows excluded)."""
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression of every panel target."""
    return [
        Query(panel["title"], target["refId"], target["expr"])
        for panel in data_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def substitute(expr: str) -> str:
    """``expr`` with Grafana's template variables replaced by values Prometheus accepts."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return VARIABLES.get(name, match.group(0))

    return _VARIABLE.sub(value, expr)


def as_bool_comparisons(expr: str) -> str:
    """``expr`` with filtering comparisons (``x == 0``) turned into ``x == bool 0``.

    A filter may rightly select nothing (no printer is offline); the `bool` form returns every
    series, which shows that the names, labels and joins around the filter are right.
    """
    return _FILTER.sub(r"\1 bool ", expr)


def referenced_metrics(expr: str) -> set[str]:
    """The printfleet metric names an expression selects."""
    return {match.group(1) for match in _SELECTOR.finditer(expr)}


# -- what printfleet exports, read from the metrics package ------------------------------------


@dataclass(frozen=True)
class Exported:
    """One metric family declared in the metrics package."""

    name: str  # as written in the source (a counter without its _total)
    kind: str  # Counter, Gauge, Histogram or Family (a scrape-time gauge)
    labels: tuple[str, ...]

    def sample_names(self) -> set[str]:
        """The names its samples carry in the exposition (and so in PromQL)."""
        if self.kind == "Counter":
            return {self.name.removesuffix("_total") + "_total"}
        if self.kind == "Histogram":
            return {f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        return {self.name}


def exported_metrics() -> dict[str, Exported]:
    """Every metric family the metrics package declares, by each of its sample names."""
    tree = ast.parse("".join(p.read_text(encoding="utf-8") for p in METRICS_SOURCE.glob("*.py")))
    found: dict[str, Exported] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        kind = node.func.id
        if kind not in ("Counter", "Gauge", "Histogram", "Family") or len(node.args) < 3:
            continue
        name, _help, labels = node.args[:3]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        if not isinstance(labels, ast.List | ast.Tuple):
            continue
        label_names = tuple(
            e.value for e in labels.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        )
        family = Exported(name.value, kind, label_names)
        for sample in family.sample_names():
            found[sample] = family
    return found


# -- unit-level checks (no Prometheus) --------------------------------------------------------


def test_dashboard_declares_a_prometheus_datasource_input() -> None:
    """The JSON imports through Grafana's UI: it asks for one Prometheus data source."""
    inputs = load_dashboard()["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]


def test_dashboard_has_datasource_source_and_printer_variables() -> None:
    """The variables are a Prometheus datasource picker and multi-value source/printer lists."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"
    expected = {
        "source": "label_values(printfleet_source_up, source)",
        "printer": 'label_values(printfleet_printer_info{source=~"$source"}, serial)',
    }
    for name, definition in expected.items():
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"]["uid"] == DATASOURCE
        assert variable["query"]["query"] == definition
        assert variable["multi"] is True
        assert variable["includeAll"] is True


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    """Each data panel and each of its targets queries the data source the user picked."""
    wrong = [
        panel["title"]
        for panel in data_panels(load_dashboard())
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        if not ds or ds.get("uid") != DATASOURCE or ds.get("type") != "prometheus"
    ]
    assert not wrong, f"panels not using {DATASOURCE}: {wrong}"


def test_panel_ids_are_unique() -> None:
    """No two panels share an id (Grafana would drop or mix them up)."""
    ids = [panel["id"] for panel in all_panels(load_dashboard())]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_panels_do_not_overlap_on_the_grid() -> None:
    """No two panels cover the same grid cell of the 24-column layout."""
    taken: dict[tuple[int, int], str] = {}
    clashes: list[str] = []
    for panel in all_panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in taken:
                    clashes.append(f"{panel['title']} overlaps {taken[(x, y)]}")
                taken[(x, y)] = panel["title"]
    assert not clashes, sorted(set(clashes))


def test_every_query_selects_only_metrics_printfleet_exports() -> None:
    """Each metric name in a panel query is one that the metrics package declares."""
    exported = exported_metrics()
    unknown = [
        f"{query}: {sorted(referenced_metrics(query.expr) - exported.keys())}"
        for query in queries(load_dashboard())
        if referenced_metrics(query.expr) - exported.keys()
    ]
    assert not unknown, "\n".join(unknown)


def test_per_printer_and_per_source_selectors_honour_the_variables() -> None:
    """Every selector of a metric labelled by source or serial filters on $source / $printer.

    ``printfleet_printer_info`` is exempt where it only supplies names to a join.
    """
    exported = exported_metrics()
    missing: list[str] = []
    for query in queries(load_dashboard()):
        for match in _SELECTOR.finditer(query.expr):
            metric, braces = match.group(1), match.group(2) or ""
            if metric == "printfleet_printer_info" or metric not in exported:
                continue
            labels = exported[metric].labels
            if "source" in labels and 'source=~"$source"' not in braces:
                missing.append(f"{query} ({metric} lacks $source)")
            if "serial" in labels and 'serial=~"$printer"' not in braces:
                missing.append(f"{query} ({metric} lacks $printer)")
    assert not missing, "\n".join(missing)


def test_substitute_replaces_every_template_variable() -> None:
    """After substitution no query has a `$` left, so Prometheus can run all of them."""
    left = [str(q) for q in queries(load_dashboard()) if "$" in substitute(q.expr)]
    assert not left, "\n".join(left)


# -- real Prometheus ------------------------------------------------------------------------


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if Path(p).exists()), None
    )
    if found is None:
        if in_ci():
            pytest.fail(f"{name} is missing in CI (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, diagnose: Callable[[], str]
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{diagnose()}")
        time.sleep(0.5)


class Demo:
    """``printfleet demo`` as a child process; its stdout is drained by a thread."""

    def __init__(self, log: Path) -> None:
        self._stderr = log.open("w")
        self.log = log
        self.proc = subprocess.Popen(
            DEMO_COMMAND,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self.metrics_url: str | None = None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"http://127\.0\.0\.1:\d+/metrics", line)
            if found and self.metrics_url is None:
                self.metrics_url = found.group(0)

    def output(self) -> str:
        tail = "\n".join(self.lines[-20:])
        return (
            f"demo exit code: {self.proc.poll()}\nstdout (tail):\n{tail}\nstderr:\n"
            + (self.log.read_text(errors="replace")[-3000:])
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._stderr.close()


class Prometheus:
    """A real Prometheus server on a free port, configured from deploy/prometheus."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        config = (PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8")
        replacements = {
            '["127.0.0.1:9877"]': f'["{target}"]',
            "scrape_interval: 15s": "scrape_interval: 1s",
            "evaluation_interval: 15s": "evaluation_interval: 1s",
            "scrape_timeout: 10s": "scrape_timeout: 1s",
        }
        for old, new in replacements.items():
            assert config.count(old) == 1, f"example prometheus.yml no longer contains {old!r}"
            config = config.replace(old, new)
        (workdir / "prometheus.yml").write_text(config, encoding="utf-8")
        shutil.copy(PROMETHEUS_DIR / "printfleet-alerts.yml", workdir / "printfleet-alerts.yml")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}\n{self.output()}")
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def query(self, expr: str) -> dict[str, Any]:
        """The JSON answer of an instant query (``status``, ``data`` or ``error``)."""
        answer: dict[str, Any] = self.client.get("/api/v1/query", params={"query": expr}).json()
        return answer

    def value(self, expr: str) -> float:
        """The single value of a scalar-like instant query, 0 when it returns nothing."""
        result = self.query(expr).get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else 0.0

    def output(self) -> str:
        return "prometheus log (tail):\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """Path of the prometheus server (fails in CI when missing, skips elsewhere)."""
    return _binary("prometheus")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prometheus_binary: str) -> Iterator[Demo]:
    """``printfleet demo`` running, with its metrics URL known."""
    running = Demo(tmp_path_factory.mktemp("demo") / "demo.stderr")
    try:
        wait_for(
            "the demo to print its metrics URL",
            lambda: running.metrics_url is not None or running.proc.poll() is not None,
            START_TIMEOUT,
            running.output,
        )
        if running.metrics_url is None:
            pytest.fail(f"the demo exited before serving metrics\n{running.output()}")
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def scraped(
    demo: Demo, prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """A Prometheus that has scraped the demo for a while and seen a print finish."""
    assert demo.metrics_url is not None
    target = demo.metrics_url.removeprefix("http://").removesuffix("/metrics")
    server = Prometheus(prometheus_binary, tmp_path_factory.mktemp("prometheus"), target)
    try:

        def diagnose() -> str:
            return f"{server.output()}\n{demo.output()}"

        wait_for("prometheus to be ready", server.ready, START_TIMEOUT, diagnose)
        wait_for(
            f"{MIN_SCRAPES} successful scrapes of the demo and a finished print",
            lambda: (
                server.value('sum_over_time(up{job="printfleet"}[5m])') >= MIN_SCRAPES
                and server.value('sum(printfleet_prints_total{result="finished"})') > 0
            ),
            DATA_TIMEOUT,
            diagnose,
        )
        yield server
    finally:
        server.stop()


def _problem(server: Prometheus, query: Query, exposition: str) -> str | None:
    """Why ``query`` does not answer with data right now, or ``None`` when it does."""
    expr = substitute(query.expr)
    answer = server.query(expr)
    if answer.get("status") != "success":
        return f"{query}\n    error: {answer.get('error')}"
    if answer["data"]["result"]:
        return None
    metrics = referenced_metrics(expr)
    if metrics and metrics <= DEMO_HAS_NO_SAMPLES.keys():
        undeclared = [m for m in metrics if f"# TYPE {m} " not in exposition]
        if not undeclared:
            return None
        return f"{query}\n    the demo does not declare {undeclared}"
    relaxed = as_bool_comparisons(expr)
    if relaxed != expr and server.query(relaxed).get("data", {}).get("result"):
        return None  # the filter selected nothing right now; the query itself is sound
    return f"{query}\n    returned no data"


def test_every_panel_query_returns_data_from_a_real_prometheus(
    demo: Demo, scraped: Prometheus
) -> None:
    """Each panel's PromQL, run against Prometheus scraping the demo, succeeds with data."""
    assert demo.metrics_url is not None
    exposition = httpx.get(demo.metrics_url, timeout=10).text
    all_queries = queries(load_dashboard())
    problems: list[str] = []

    def all_answer() -> bool:
        problems[:] = [p for q in all_queries if (p := _problem(scraped, q, exposition))]
        return not problems

    # Some series appear only while something happens (a print running, a rule matching);
    # give the fleet a bounded while to show them before reporting what stayed empty.
    deadline = time.monotonic() + 20
    while not all_answer() and time.monotonic() < deadline:
        time.sleep(1)
    assert not problems, f"{len(problems)} of {len(all_queries)} queries failed:\n" + "\n".join(
        problems
    )


def test_shipped_alert_rules_evaluate_cleanly_on_demo_data(scraped: Prometheus) -> None:
    """Prometheus loads every shipped alert and evaluates each on live data without an error."""
    expected = set(
        re.findall(
            r"^\s*- alert: (\w+)", (PROMETHEUS_DIR / "printfleet-alerts.yml").read_text(), re.M
        )
    )
    rules: list[dict[str, Any]] = []

    def all_evaluated() -> bool:
        groups = scraped.client.get("/api/v1/rules").json()["data"]["groups"]
        rules[:] = [rule for group in groups for rule in group["rules"]]
        return {r["name"] for r in rules} == expected and all(
            not r["lastEvaluation"].startswith("0001-") for r in rules
        )

    wait_for("every alert rule to be evaluated", all_evaluated, START_TIMEOUT, scraped.output)
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy
