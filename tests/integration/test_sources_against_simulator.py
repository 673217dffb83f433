"""The vendor sources over real HTTP against the simulator (both vendors, faults included).

Our side runs on a FakeClock that the simulator shares (``now=clock.now``), so token lifetimes,
rate-limit windows, Retry-After and cursor ages are all judged on one clock that only the test
moves: nothing here sleeps.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from structlog.testing import capture_logs

from printfleet.core.diff import carry_forward, diff
from printfleet.core.events import ChangeEvent, EventType
from printfleet.core.model import Print, PrinterStatus, PrintStatus, Snapshot
from printfleet.core.polling import PollPolicy
from printfleet.core.thresholds import DiffSettings
from printfleet.errors import AuthFailed, RateLimited, SourceUnavailable
from printfleet.logs import forget_secrets
from printfleet.metrics.observer import Metrics
from printfleet.poller import Cycle, SourcePoller
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sources.base import PrintLookup
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import load_carbon_secrets
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import RetryPolicy
from printfleet.testing import FakeClock

T = TypeVar("T")
FORMLABS_TOKEN = "/developer/v1/o/token/"


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Secrets the sources register for log redaction do not leak into other tests."""
    yield
    forget_secrets()


@pytest.fixture
def clock_start() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def simulator(clock: FakeClock, **overrides: Any) -> Simulator:
    settings: dict[str, Any] = {"formlabs_printers": 30, "carbon_printers": 30, "seed": 11}
    settings.update(overrides)
    return Simulator(SimulatorConfig(**settings), now=clock.now)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    with simulator(clock) as running:
        yield running


def formlabs(
    sim: Simulator,
    client: httpx.AsyncClient,
    clock: FakeClock,
    *,
    secret: str | None = None,
    retry: RetryPolicy | None = None,
    budget: RequestBudget | None = None,
) -> FormlabsSource:
    return FormlabsSource(
        name="lab",
        client_id=sim.formlabs_client_id,
        client_secret=SecretStr(secret or sim.formlabs_client_secret),
        client=client,
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=sim.formlabs_url,
        retry=retry,
        budget=budget,
        rng=random.Random(1),
        timeout=5.0,
    )


def carbon(
    sim: Simulator,
    client: httpx.AsyncClient,
    clock: FakeClock,
    tmp_path: Path,
    *,
    budget: RequestBudget | None = None,
) -> CarbonSource:
    client_id, key = load_carbon_secrets(sim.write_carbon_secrets(tmp_path / "secrets.json"))
    return CarbonSource(
        name="factory",
        client_id=client_id,
        private_key=key,
        client=client,
        clock=clock,
        base_url=sim.carbon_url,
        budget=budget,
        rng=random.Random(1),
        timeout=5.0,
    )


# --- auth ---------------------------------------------------------------------------------------


async def test_formlabs_token_then_every_printer(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """One token request, then /printers/ returns every simulated printer."""
    snapshot = await formlabs(sim, client, clock).fetch_printers()
    assert sorted(snapshot.printers) == sorted(sim.serials("formlabs"))
    assert sim.request_count("formlabs", FORMLABS_TOKEN) == 1
    assert snapshot.skipped == ()


async def test_carbon_jwt_accepted_and_every_printer(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path
) -> None:
    """The self-minted RS256 JWT is accepted and /printers returns every printer."""
    snapshot = await carbon(sim, client, clock, tmp_path).fetch_printers()
    assert sorted(snapshot.printers) == sorted(sim.serials("carbon"))


async def test_formlabs_wrong_secret_is_auth_failed(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A wrong client secret makes the token endpoint refuse: AuthFailed, no data request."""
    with pytest.raises(AuthFailed):
        await formlabs(sim, client, clock, secret="wrong").fetch_printers()
    assert sim.request_count("formlabs") == 1


async def test_carbon_wrong_key_is_auth_failed(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A JWT signed with another RSA key is refused twice (one re-mint): AuthFailed."""
    source = CarbonSource(
        name="factory",
        client_id=sim.carbon_secrets["client_id"],
        private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        client=client,
        clock=clock,
        base_url=sim.carbon_url,
    )
    with pytest.raises(AuthFailed):
        await source.fetch_printers()
    assert sim.request_count("carbon") == 2


async def test_formlabs_token_expiry_leads_to_renewal(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """With 600 s tokens, a fetch after 550 s renews first and never sees a 401."""
    with simulator(clock, token_expires_in=600) as sim:
        source = formlabs(sim, client, clock)
        await source.fetch_printers()
        await clock.advance(550)
        await source.fetch_printers()
        assert sim.request_count("formlabs", FORMLABS_TOKEN) == 2
        assert all(r.status != 401 for r in sim.requests)


@pytest.mark.parametrize("vendor", ["formlabs", "carbon"])
async def test_revoked_credentials_are_renewed_once(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path, vendor: str
) -> None:
    """After the server invalidates every token, the next fetch renews once and succeeds."""
    source: FormlabsSource | CarbonSource = (
        formlabs(sim, client, clock)
        if vendor == "formlabs"
        else carbon(sim, client, clock, tmp_path)
    )
    await source.fetch_printers()
    sim.expire_tokens(vendor)
    snapshot = await source.fetch_printers()
    assert len(snapshot.printers) == 30
    assert [r.status for r in sim.requests].count(401) == 1


# --- pagination ---------------------------------------------------------------------------------


async def test_formlabs_page_number_pagination(clock: FakeClock, client: httpx.AsyncClient) -> None:
    """Inventory and events walk DRF next links; every tank arrives exactly once."""
    with simulator(clock, formlabs_printers=150, carbon_printers=0) as sim:
        source = formlabs(sim, client, clock)
        inventory = await source.fetch_inventory()
        assert len(inventory.tanks) > 100
        assert len({t.serial for t in inventory.tanks}) == len(inventory.tanks)
        assert sim.request_count("formlabs", "/developer/v1/tanks/?page=2") == 1
        await clock.advance(6 * 3600)
        batch = await source.fetch_runs(since=clock.now() - timedelta(hours=6))
        assert batch.runs
        assert sim.request_count("formlabs", "/developer/v1/events/") >= 2


async def test_carbon_offset_and_cursor_pagination(
    clock: FakeClock, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """250 printers take offsets 0/100/200; history walks cursors to the end."""
    with simulator(clock, formlabs_printers=0, carbon_printers=250) as sim:
        source = carbon(sim, client, clock, tmp_path)
        snapshot = await source.fetch_printers()
        assert len(snapshot.printers) == 250
        assert sim.request_count("carbon", "/v1/printers") == 3
        await clock.advance(12 * 3600)
        since = clock.now() - timedelta(hours=12)
        batch = await source.fetch_runs(since=since)
        assert len(batch.runs) > 100
        cursors = [r for r in sim.requests if "/v1/prints" in r.path and "cursor=" in r.path]
        assert cursors
        assert batch.watermark is not None
        assert batch.watermark > since


async def test_carbon_history_asks_only_statuses_the_vendor_documents(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path
) -> None:
    """History walks and print lookups send only printing/finished, which the simulator (like
    the vendor, as far as it is documented) accepts: no request is refused with a 400."""
    source = carbon(sim, client, clock, tmp_path)
    await clock.advance(6 * 3600)
    batch = await source.fetch_runs(since=clock.now() - timedelta(hours=6))
    assert batch.runs
    ids = [run.id for run in batch.runs.values()][:5]
    await source.fetch_runs(lookups=[PrintLookup("", ident) for ident in ids])
    prints = [r for r in sim.requests if r.vendor == "carbon" and "/v1/prints" in r.path]
    assert len(prints) >= 2
    assert {r.status for r in prints} == {200}
    sent = {v for r in prints for k, v in parse_qsl(urlsplit(r.path).query) if k == "status"}
    assert sent == {"printing", "finished"}
    assert {run.status for run in batch.runs.values()} <= {
        PrintStatus.PRINTING,
        PrintStatus.FINISHED,
    }


async def test_unknown_status_words_are_counted_and_logged_once(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path
) -> None:
    """A printer state printfleet does not know (the simulator's STANDBY) is UNKNOWN with the
    word kept, counted in printfleet_unknown_status_total on every poll, logged once."""
    sim.faults.carbon.unknown_statuses = True
    registry = CollectorRegistry()
    cycles: list[Cycle] = []

    async def handle(cycle: Cycle) -> None:
        cycles.append(cycle)

    poller = SourcePoller(
        carbon(sim, client, clock, tmp_path),
        handle=handle,
        clock=clock,
        policy=PollPolicy(),
        diff_settings=DiffSettings(),
        observer=Metrics(registry),
    )
    with capture_logs() as logs:
        await poller.poll_once()
        await poller.poll_once()
    assert cycles[-1].snapshot is not None
    standby = [p for p in cycles[-1].snapshot.printers.values() if p.status_raw == "STANDBY"]
    assert standby
    assert {p.status for p in standby} == {PrinterStatus.UNKNOWN}
    labels = {"source": "factory", "field": "printer.status", "value": "STANDBY"}
    assert registry.get_sample_value("printfleet_unknown_status_total", labels) == 2 * len(standby)
    logged = [e for e in logs if e["event"] == "source.unknown_status"]
    assert [(e["field"], e["value"]) for e in logged] == [("printer.status", "STANDBY")]
    assert not any(e.type.value.startswith("print.") for c in cycles for e in c.events)


# --- rate limits and outages --------------------------------------------------------------------


async def test_429_retry_after_is_respected(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """After a 429 with Retry-After: 30, nothing reaches the server for 30 s, then it works."""
    source = formlabs(sim, client, clock)
    await source.fetch_printers()
    sim.faults.formlabs.force_429 = 1
    sim.faults.formlabs.force_429_retry_after = 30
    with pytest.raises(RateLimited) as caught:
        await source.fetch_printers()
    assert caught.value.retry_after == 30
    sent = sim.request_count("formlabs")
    await clock.advance(29)
    with pytest.raises(RateLimited):
        await source.fetch_inventory()
    assert sim.request_count("formlabs") == sent
    await clock.advance(1)
    await source.fetch_printers()
    assert sim.request_count("formlabs") == sent + 1


async def test_carbon_server_limit_429_pauses_until_retry_after(
    clock: FakeClock, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The simulator's own 3-per-10s limit answers 429; the source waits it out, then succeeds."""
    with simulator(clock, formlabs_printers=0, carbon_printers=30, carbon_limit_per_10s=3) as sim:
        source = carbon(sim, client, clock, tmp_path)
        for _ in range(3):
            await source.fetch_printers()
        with pytest.raises(RateLimited) as caught:
            await source.fetch_printers()
        refused = sim.request_count("carbon")
        await clock.advance(caught.value.retry_after - 0.5)
        with pytest.raises(RateLimited):
            await source.fetch_printers()
        assert sim.request_count("carbon") == refused
        await clock.advance(0.5)
        assert len((await source.fetch_printers()).printers) == 30


async def test_5xx_backoff_then_source_unavailable_then_recovery(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """Every request failing with 5xx is retried a bounded number of times, then recovers."""
    source = formlabs(sim, client, clock, retry=RetryPolicy(attempts=4))
    await source.fetch_printers()
    sim.faults.formlabs.error_rate = 1.0
    before = sim.request_count("formlabs")
    with pytest.raises(SourceUnavailable):
        await clock.drive(source.fetch_printers())
    assert sim.request_count("formlabs") - before == 4
    sim.faults.formlabs.error_rate = 0.0
    assert len((await source.fetch_printers()).printers) == 30


async def test_hanging_server_times_out_as_source_unavailable(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """A server that never answers in time ends as SourceUnavailable (timeout), bounded."""
    source = FormlabsSource(
        name="lab",
        client_id=sim.formlabs_client_id,
        client_secret=SecretStr(sim.formlabs_client_secret),
        client=client,
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=sim.formlabs_url,
        retry=RetryPolicy(attempts=2),
        timeout=0.2,
    )
    sim.faults.formlabs.hang_s = 2.0
    with pytest.raises(SourceUnavailable, match="timeout"):
        await clock.drive(source.fetch_printers())


# --- documented wire variants -------------------------------------------------------------------

VARIANT_SHARES = (
    "formlabs_cartridge_list_share",
    "formlabs_note_share",
    "formlabs_legacy_share",
)


async def formlabs_raw(sim: Simulator, client: httpx.AsyncClient, path: str) -> Any:
    """One Formlabs endpoint's raw JSON, fetched alongside the source to see which shape it got."""
    token = await client.post(
        sim.formlabs_url + FORMLABS_TOKEN,
        data={
            "grant_type": "client_credentials",
            "client_id": sim.formlabs_client_id,
            "client_secret": sim.formlabs_client_secret,
        },
    )
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return (await client.get(f"{sim.formlabs_url}/developer/v1/{path}", headers=headers)).json()


async def test_formlabs_every_documented_variant_maps_without_a_skipped_record(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """List and object cartridges, null groups, notes, verdicts, null event runs and the 0.8.0
    ``probably_finished`` all appear in one seeded fleet, and none of them skips a record."""
    shares = {"formlabs_ungrouped_share": 0.3, **dict.fromkeys(VARIANT_SHARES, 0.5)}
    with simulator(clock, formlabs_printers=60, carbon_printers=0, **shares) as sim:
        source = formlabs(sim, client, clock)
        start = clock.now()
        await clock.advance(3 * 3600)
        snapshot = await clock.drive(source.fetch_printers())
        raw_printers = await formlabs_raw(sim, client, "printers/")
        lookups = [PrintLookup(printer_serial=serial, print_id="") for serial in snapshot.printers]
        since = start - timedelta(hours=12)
        batch = await clock.drive(source.fetch_runs(since=since, lookups=lookups))
        raw_prints = await formlabs_raw(sim, client, "prints/?per_page=100")
        raw_events = await formlabs_raw(sim, client, "events/?per_page=100")

    assert snapshot.skipped == ()
    assert batch.skipped == ()
    assert sorted(snapshot.printers) == sorted(p["serial"] for p in raw_printers)
    cartridge_shapes = {type(p["cartridge_status"]) for p in raw_printers}
    assert cartridge_shapes == {list, dict}
    for record in raw_printers:
        printer = snapshot.printers[record["serial"]]
        assert printer.group == (record["group"]["name"] if record["group"] else None)
        status = record["cartridge_status"]
        entries = status if isinstance(status, list) else [status]
        assert [m.serial for m in printer.materials] == [e["cartridge"]["serial"] for e in entries]
        assert all(m.remaining_ml is not None for m in printer.materials)
    assert any(p["group"] is None for p in raw_printers)
    runs = raw_prints["results"]
    assert any("probably_finished" in r for r in runs)
    assert any(r["note"] is not None for r in runs)
    assert any(r["note"] is None for r in runs)
    assert any(r["print_run_success"] is not None for r in runs)
    assert any(e["print_run"] is None for e in raw_events["results"])
    # Every run in the history was mapped (the fake clock may have moved on since, so only
    # facts that do not change are compared).
    for run in runs:
        mapped = batch.runs[run["guid"]]
        assert (mapped.name, mapped.user) == (run["name"], run["user"]["username"])


async def test_formlabs_variants_map_to_the_same_snapshot(client: httpx.AsyncClient) -> None:
    """One seed read with every variant off and every variant on gives equal printers and runs:
    a one-element cartridge list carries the same materials as the bare object. A note is
    content, not shape: it is read into ``verdict_note``/``verdict_by`` (compared apart)."""
    snapshots, batches = [], []
    for share in (0.0, 1.0):
        clock = FakeClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))
        shares = dict.fromkeys(VARIANT_SHARES, share)
        with simulator(clock, formlabs_printers=20, carbon_printers=0, **shares) as sim:
            source = formlabs(sim, client, clock)
            start = clock.now()
            await clock.advance(3 * 3600)
            snapshots.append(await clock.drive(source.fetch_printers()))
            since = start - timedelta(hours=12)
            batches.append(await clock.drive(source.fetch_runs(since=since)))
            raw = await formlabs_raw(sim, client, "printers/")
        lists = [p for p in raw if isinstance(p["cartridge_status"], list)]
        single = [p for p in lists if len(p["cartridge_status"]) == 1]
        assert bool(single) is (share == 1.0)
    off, on = snapshots
    assert off.printers == on.printers
    assert [p.materials for p in off.printers.values()] == [
        p.materials for p in on.printers.values()
    ]

    def without_notes(runs: Mapping[str, Print]) -> dict[str, Print]:
        return {k: replace(r, verdict_note=None, verdict_by=None) for k, r in runs.items()}

    assert without_notes(batches[0].runs) == without_notes(batches[1].runs)
    assert batches[0].runs
    assert not any(r.verdict_note for r in batches[0].runs.values())
    assert any(r.verdict_note and r.verdict_by for r in batches[1].runs.values())


# --- malformed data -----------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["formlabs", "carbon"])
async def test_malformed_records_are_skipped_while_the_others_arrive(
    sim: Simulator, client: httpx.AsyncClient, clock: FakeClock, tmp_path: Path, vendor: str
) -> None:
    """Broken records mixed into the list are skipped; every real printer still arrives."""
    sim.faults.for_vendor(vendor).malformed_records = 2
    source: FormlabsSource | CarbonSource = (
        formlabs(sim, client, clock)
        if vendor == "formlabs"
        else carbon(sim, client, clock, tmp_path)
    )
    snapshot = await source.fetch_printers()
    assert set(sim.serials(vendor)) <= set(snapshot.printers)
    assert len(snapshot.skipped) >= 1


# --- scale --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture(scope="module")
def big_sim(big_clock: FakeClock) -> Iterator[Simulator]:
    config = SimulatorConfig(formlabs_printers=10_000, carbon_printers=10_000, seed=5)
    with Simulator(config, now=big_clock.now) as running:
        yield running


async def test_ten_thousand_formlabs_printers_in_one_request(
    big_sim: Simulator, big_clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """A 10,000-printer Formlabs fleet arrives whole from the bare /printers/ array."""
    snapshot = await formlabs(big_sim, client, big_clock).fetch_printers()
    assert len(snapshot.printers) == 10_000
    assert big_sim.request_count("formlabs", "/developer/v1/printers/") == 1


async def test_ten_thousand_carbon_printers_within_the_budget(
    big_sim: Simulator, big_clock: FakeClock, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A 10,000-printer Carbon fleet takes 100 pages of 100, inside 100 requests per 10 s."""
    snapshot = await big_clock.drive(carbon(big_sim, client, big_clock, tmp_path).fetch_printers())
    assert len(snapshot.printers) == 10_000
    assert big_sim.request_count("carbon", "/v1/printers") == 100
    assert all(r.status == 200 for r in big_sim.requests if r.vendor == "carbon")


def test_pem_written_by_the_simulator_loads(sim: Simulator, tmp_path: Path) -> None:
    """The simulator's secrets.json loads as an RSA key through the factory's reader."""
    client_id, key = load_carbon_secrets(sim.write_carbon_secrets(tmp_path / "s.json"))
    assert client_id == sim.carbon_secrets["client_id"]
    assert key.key_size >= 2048
    assert serialization.Encoding.PEM  # the key object never exposes the PEM in repr
    assert "PRIVATE" not in repr(key)


# --- Formlabs phases ------------------------------------------------------------------------------


async def test_formlabs_phases_read_as_their_print_without_spurious_status_changes(
    clock: FakeClock, client: httpx.AsyncClient
) -> None:
    """Over real HTTP, printers saying FILLING/PREHEAT/PRECOAT/POSTCOAT/… read as PRINTING or
    PAUSED with the word kept as ``phase``, and no ``printer.status_changed`` involves UNKNOWN
    or repeats a status; each print starts once."""
    settings = DiffSettings()
    phases: set[str] = set()
    words: set[str] = set()
    events: list[ChangeEvent] = []
    with simulator(clock, formlabs_printers=24, carbon_printers=0, seed=5) as sim:
        source = formlabs(sim, client, clock)
        previous: Snapshot | None = None
        # Five hours: rated prints wait on their printers until rated, so the fleet prints less.
        for _ in range(5 * 60):  # five simulated hours, one poll a minute
            current = await source.fetch_printers()
            now = clock.now()
            current = carry_forward(previous, current, now, settings)
            events += diff(previous, current, now, settings)
            for p in current.printers.values():
                words.add(p.status_raw)
                if p.phase is not None:
                    phases.add(p.phase)
                    assert p.status in (PrinterStatus.PRINTING, PrinterStatus.PAUSED), p
            previous = current
            await clock.advance(60)
    # The simulator speaks the phases as printer words, and the adapter keeps them as phases.
    assert {"FILLING", "PREHEAT", "PRECOAT", "POSTCOAT"} <= words
    assert {"FILLING", "PREHEAT", "PRECOAT", "POSTCOAT"} <= phases
    changes = [
        (e.subject, e.changes["status"].before, e.changes["status"].after)
        for e in events
        if e.type is EventType.PRINTER_STATUS_CHANGED
    ]
    assert changes, "the fleet printed for five hours; some status must have changed"
    spurious = [c for c in changes if PrinterStatus.UNKNOWN in (c[1], c[2]) or c[1] is c[2]]
    assert spurious == []
    started = Counter(e.print.id for e in events if e.type is EventType.PRINT_STARTED and e.print)
    assert started
    assert max(started.values()) == 1
