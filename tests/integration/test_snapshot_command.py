"""`printfleet snapshot` over real HTTP: the simulator, and a plain server answering 404 to
everything (a wrong Carbon base_url), a 429 with a short and a long Retry-After."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from printfleet import cli
from printfleet.cli.snapshot import fetch_snapshots
from printfleet.config import load_settings
from printfleet.logs import forget_secrets
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sources.factory import make_source
from printfleet.testing import FakeClock

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("PRINTFLEET_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    forget_secrets()
    yield
    forget_secrets()


def simulator(clock: FakeClock | None = None, **overrides: Any) -> Simulator:
    settings: dict[str, Any] = {"formlabs_printers": 3, "carbon_printers": 3, "seed": 5}
    settings.update(overrides)
    return Simulator(SimulatorConfig(**settings), now=clock.now if clock else None)


def write_config(tmp_path: Path, sim: Simulator, *, carbon_url: str | None = None) -> Path:
    sim.write_carbon_secrets(tmp_path / "carbon-secrets.json")
    (tmp_path / "formlabs.secret").write_text(sim.formlabs_client_secret)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[source]]
name = "lab"
vendor = "formlabs"
client_id = "{sim.formlabs_client_id}"
client_secret_file = "formlabs.secret"
base_url = "{sim.formlabs_url}"

[[source]]
name = "factory"
vendor = "carbon"
secrets_file = "carbon-secrets.json"
base_url = "{carbon_url or sim.carbon_url}"
"""
    )
    return path


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """A plain HTTP server that answers 404 (HTML) to every request: not Carbon's API."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


def test_snapshot_prints_one_document_keyed_by_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sources give one JSON object with a key per source, and a count per source."""
    with simulator() as sim:
        config = write_config(tmp_path, sim)
        assert cli.main(["snapshot", "-c", str(config)]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert sorted(document) == ["factory", "lab"]
    assert len(document["lab"]["printers"]) == 3
    assert document["factory"]["source"] == "factory"
    assert "printfleet: lab: 3 printers" in captured.err
    assert "printfleet: factory: 3 printers" in captured.err


def test_snapshot_jsonl_prints_one_line_per_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--jsonl` prints each source's snapshot as one JSON line."""
    with simulator() as sim:
        config = write_config(tmp_path, sim)
        assert cli.main(["snapshot", "-c", str(config), "--jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["source"] for line in lines] == ["lab", "factory"]


def test_empty_carbon_fleet_says_0_printers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Carbon's 404 "no printer found" from the real API shape is an empty fleet, said so."""
    with simulator(carbon_printers=0) as sim:
        config = write_config(tmp_path, sim)
        assert cli.main(["snapshot", "-c", str(config), "--source", "factory"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"factory": json.loads(captured.out)["factory"]}
    assert json.loads(captured.out)["factory"]["printers"] == []
    assert "printfleet: factory: 0 printers" in captured.err


def test_wrong_carbon_base_url_is_an_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], not_found_server: str
) -> None:
    """A base_url answering 404 to everything is not an empty fleet: exit 1 naming the URL."""
    with simulator() as sim:
        config = write_config(tmp_path, sim, carbon_url=not_found_server)
        assert cli.main(["snapshot", "-c", str(config)]) == 1
    captured = capsys.readouterr()
    assert f"GET {not_found_server}/printers answered 404" in captured.err
    assert "check base_url; Carbon's is https://api.carbon3d.com/v1" in captured.err
    assert "factory: 0 printers" not in captured.err
    document = json.loads(captured.out)
    assert sorted(document) == ["lab"]  # the other source is still printed


@pytest.mark.parametrize(("retry_after", "code"), [(2, 0), (120, 1)])
async def test_snapshot_waits_out_a_short_retry_after(
    tmp_path: Path, retry_after: int, code: int
) -> None:
    """A 429 with Retry-After 2 s is waited out and retried; 120 s exits 1 naming the wait."""
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    with simulator(clock) as sim:
        settings = load_settings(write_config(tmp_path, sim))
        sim.faults.carbon.force_429 = 1
        sim.faults.carbon.force_429_retry_after = retry_after
        out, err = io.StringIO(), io.StringIO()
        started = clock.monotonic()
        result = await clock.drive(
            fetch_snapshots(
                settings,
                [s for s in settings.source if s.name == "factory"],
                make_source=make_source,
                raw=False,
                out=out,
                err=err,
                clock=clock,
            )
        )
    assert result == code
    if code == 0:
        assert "factory: rate limited by the vendor (HTTP 429); waiting 2 s" in err.getvalue()
        assert "printfleet: factory: 3 printers" in err.getvalue()
        assert clock.monotonic() - started >= 2
        assert len(json.loads(out.getvalue())["factory"]["printers"]) == 3
    else:
        assert "asks to wait 120 s, longer than snapshot waits (30 s in all)" in err.getvalue()
        assert "waiting" not in err.getvalue()
        assert json.loads(out.getvalue()) == {}


def test_a_serial_with_a_lone_surrogate_is_printed_as_a_json_escape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A vendor serial no UTF-8 terminal can write comes out as ``\\ud800``, not a crash."""
    samples = json.loads((FIXTURES / "formlabs-samples.json").read_text())
    record = dict(samples["get_printer"]["body"], serial="\ud800X")
    with simulator(carbon_printers=0) as sim:
        sim.faults.formlabs.extra_printers = [json.dumps(record)]
        config = write_config(tmp_path, sim)
        assert cli.main(["snapshot", "-c", str(config), "--source", "lab"]) == 0
    out = capsys.readouterr().out
    assert "\\ud800X" in out
    serials = {p["serial"] for p in json.loads(out)["lab"]["printers"]}
    assert "\ud800X" in serials
