"""FormlabsSource over httpx.MockTransport: OAuth tokens, pagination, runs, inventory."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest
import structlog.testing
from pydantic import SecretStr

from printfleet.core.model import PrintStatus
from printfleet.errors import AuthFailed, BadResponse, SourceUnavailable
from printfleet.sources.base import PrintLookup
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import RetryPolicy
from printfleet.testing import FakeClock

T = TypeVar("T")
BASE = "https://api.formlabs.test"
API = "/developer/v1"
SAMPLES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "formlabs-samples.json").read_text("utf-8")
)
VENDOR_NOW = datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
Body = Any
Route = Callable[[httpx.Request], httpx.Response] | httpx.Response | Body


def printers() -> list[dict[str, Any]]:
    return copy.deepcopy(SAMPLES["list_printers"]["body"])


def page(results: list[Any], next_url: str | None) -> dict[str, Any]:
    return {"count": len(results), "next": next_url, "previous": None, "results": results}


class FakeFormlabs:
    """A scripted Formlabs API: a working token endpoint plus per-path answers."""

    def __init__(self, clock: FakeClock, *, expires_in: int = 86400, date: bool = True) -> None:
        self.clock = clock
        self.expires_in = expires_in
        self.date = date
        self.routes: dict[str, Route] = {f"{API}/printers/": printers()}
        for path in ("/tanks/", "/cartridges/", "/events/", "/prints/"):
            self.routes[f"{API}{path}"] = page([], None)
        self.scripted: dict[str, list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []
        self.valid: set[str] = set()
        self.issued = 0

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def data_requests(self, suffix: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == f"{API}{suffix}"]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(0)
        response = self._answer(request)
        if self.date:
            offset = timedelta(seconds=self.clock.monotonic())
            response.headers["Date"] = format_datetime(VENDOR_NOW + offset, usegmt=True)
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.scripted.get(path):
            return self.scripted[path].pop(0)
        if path == f"{API}/o/token/":
            form = parse_qs(request.content.decode())
            if form.get("client_secret") != ["s3cr3t-value"]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.issued += 1
            token = f"token-{self.issued}"
            self.valid.add(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "scope": "developer-api",
                },
            )
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") not in self.valid:
            return httpx.Response(
                401, json={"detail": "Authentication credentials were not provided."}
            )
        route = self.routes.get(path)
        if route is None:
            return httpx.Response(404, json={"detail": "Not found."})
        if isinstance(route, httpx.Response):
            return route
        if callable(route):
            return route(request)
        return httpx.Response(200, json=route)


def paged(records: list[dict[str, Any]], path: str, per_page: int) -> Callable[..., httpx.Response]:
    """A DRF-style paginated route over ``records`` that keeps the request's other params."""

    def route(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        number = int(params.get("page", "1"))
        chunk = records[(number - 1) * per_page : number * per_page]
        following = None
        if number * per_page < len(records):
            params["page"] = str(number + 1)
            following = str(httpx.URL(f"{BASE}{API}{path}", params=params))
        return httpx.Response(200, json=page(chunk, following))

    return route


def make_source(
    fake: FakeFormlabs,
    clock: FakeClock,
    *,
    secret: str = "s3cr3t-value",  # noqa: S107 - a test credential
    retry: RetryPolicy | None = None,
    budget: RequestBudget | None = None,
    **options: Any,
) -> FormlabsSource:
    return FormlabsSource(
        name="lab",
        client_id="Qm7pX2vLr9TzK4hN8cWd1sYf",
        client_secret=SecretStr(secret),
        client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        clock=clock,
        offline_after=timedelta(minutes=5),
        base_url=BASE,
        retry=retry,
        budget=budget,
        rng=random.Random(3),
        **options,
    )


@pytest.fixture
def clock_start() -> datetime:
    return datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def fake(clock: FakeClock) -> FakeFormlabs:
    return FakeFormlabs(clock)


# --- auth ---------------------------------------------------------------------------------------


async def test_token_request_is_form_encoded_client_credentials(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """The token request posts grant_type, client_id and client_secret as a form."""
    await make_source(fake, clock).fetch_printers()
    token_request = fake.requests[0]
    assert token_request.method == "POST"
    assert token_request.url.path == f"{API}/o/token/"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_request.content.decode()) == {
        "grant_type": ["client_credentials"],
        "client_id": ["Qm7pX2vLr9TzK4hN8cWd1sYf"],
        "client_secret": ["s3cr3t-value"],
    }
    assert fake.requests[1].headers["Authorization"] == "Bearer token-1"


async def test_token_is_cached_across_fetches(fake: FakeFormlabs, clock: FakeClock) -> None:
    """Several fetches within the token's life use one token request."""
    source = make_source(fake, clock)
    for _ in range(3):
        await source.fetch_printers()
        await clock.advance(3600)
    assert fake.issued == 1


async def test_token_is_renewed_when_less_than_a_tenth_of_its_life_is_left(
    clock: FakeClock,
) -> None:
    """With expires_in 1000 s, the token is reused at 899 s and renewed at 901 s."""
    fake = FakeFormlabs(clock, expires_in=1000)
    source = make_source(fake, clock)
    await source.fetch_printers()
    await clock.advance(899)
    await source.fetch_printers()
    assert fake.issued == 1
    await clock.advance(2)
    await source.fetch_printers()
    assert fake.issued == 2


async def test_401_on_a_data_endpoint_renews_once_and_retries(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A data endpoint rejecting the token triggers one renewal and the call succeeds."""
    source = make_source(fake, clock)
    await source.fetch_printers()
    fake.valid.clear()  # revoked server-side
    snapshot = await source.fetch_printers()
    assert fake.issued == 2
    assert len(snapshot.printers) == 3


async def test_401_after_renewal_is_auth_failed(fake: FakeFormlabs, clock: FakeClock) -> None:
    """If the renewed token is rejected too, the fetch raises AuthFailed after one renewal."""
    fake.scripted[f"{API}/printers/"] = [httpx.Response(401), httpx.Response(401)]
    with pytest.raises(AuthFailed):
        await make_source(fake, clock).fetch_printers()
    assert fake.issued == 2
    assert fake.paths().count(f"{API}/printers/") == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [(400, {"error": "invalid_grant"}), (401, {"error": "invalid_client"})],
)
async def test_token_endpoint_rejection_is_auth_failed(
    fake: FakeFormlabs, clock: FakeClock, status: int, body: dict[str, str]
) -> None:
    """The token endpoint answering 400 or 401 is AuthFailed, naming the OAuth error code."""
    fake.scripted[f"{API}/o/token/"] = [httpx.Response(status, json=body)]
    with pytest.raises(AuthFailed, match=body["error"]):
        await make_source(fake, clock).fetch_printers()
    assert fake.paths() == [f"{API}/o/token/"]


async def test_token_endpoint_outage_is_source_unavailable(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """5xx from the token endpoint is an outage (SourceUnavailable), not an auth failure."""
    fake.scripted[f"{API}/o/token/"] = [httpx.Response(503) for _ in range(4)]
    with pytest.raises(SourceUnavailable):
        await clock.drive(make_source(fake, clock).fetch_printers())


async def test_failed_early_renewal_keeps_the_unexpired_token(clock: FakeClock) -> None:
    """When renewal hits an outage while the old token still lives, fetching goes on."""
    fake = FakeFormlabs(clock, expires_in=1000)
    source = make_source(fake, clock, retry=RetryPolicy(attempts=1))
    await source.fetch_printers()
    await clock.advance(950)
    fake.scripted[f"{API}/o/token/"] = [httpx.Response(503)]
    snapshot = await source.fetch_printers()
    assert len(snapshot.printers) == 3
    assert fake.issued == 1


async def test_one_token_request_in_flight_for_concurrent_fetches(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """Concurrent first fetches share a single token request."""
    source = make_source(fake, clock)
    await asyncio.gather(source.fetch_printers(), source.fetch_printers(), source.fetch_inventory())
    assert fake.paths().count(f"{API}/o/token/") == 1


# --- printers -----------------------------------------------------------------------------------


def paginated_printers(request: httpx.Request) -> httpx.Response:
    return paged(printers(), "/printers/", per_page=2)(request)


@pytest.mark.parametrize("shape", ["array", "paginated"])
async def test_printers_accept_both_shapes(
    fake: FakeFormlabs, clock: FakeClock, shape: str
) -> None:
    """/printers/ as a bare array and as a 0.1.0 paginated object give the same printers."""
    if shape == "paginated":
        fake.routes[f"{API}/printers/"] = paginated_printers
    snapshot = await make_source(fake, clock).fetch_printers()
    assert sorted(snapshot.printers) == ["AmberLynx", "GentleBison", "NimbleHeron"]
    assert snapshot.source == "lab"
    assert len(fake.data_requests("/printers/")) == (1 if shape == "array" else 2)


async def test_printers_answer_of_the_wrong_shape_is_bad_response(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """An object without results (or a string) is a BadResponse, not an empty fleet."""
    fake.routes[f"{API}/printers/"] = {"detail": "oops"}
    with pytest.raises(BadResponse):
        await make_source(fake, clock).fetch_printers()


async def test_offline_is_judged_on_the_vendor_clock(fake: FakeFormlabs, clock: FakeClock) -> None:
    """Printers that pinged seconds ago by the vendor's Date stay online despite our clock
    (here 8 months apart: trusted because vendor_clock_skew allows it)."""
    skew = timedelta(days=400)
    snapshot = await make_source(fake, clock, vendor_clock_skew=skew).fetch_printers()
    assert clock.now().year == 2026  # months after the pings, by our clock
    assert snapshot.printers["NimbleHeron"].online
    assert snapshot.taken_at == clock.now()


async def test_malformed_printer_is_skipped_while_others_arrive(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A record without a serial is listed as skipped; the others are in the snapshot."""
    body = printers()
    body.append({"alias": "no serial"})
    fake.routes[f"{API}/printers/"] = body
    snapshot = await make_source(fake, clock).fetch_printers()
    assert len(snapshot.printers) == 3
    assert [s.kind for s in snapshot.skipped] == ["printer"]


async def test_vendor_fields_read_as_received_from_the_streamed_array(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """raw is the record as the vendor wrote it (the array is decoded record by record)."""
    body = printers()
    body[0]["status_message"] = 'Grüße, "quoted" ✓'
    text = json.dumps(body, indent=2, ensure_ascii=False)
    fake.routes[f"{API}/printers/"] = httpx.Response(200, content=text.encode())
    snapshot = await make_source(fake, clock).fetch_printers()
    for record in body:
        assert snapshot.printers[record["serial"]].raw == record
    first = snapshot.printers[body[0]["serial"]]
    assert first.raw["status_message"] == 'Grüße, "quoted" ✓'
    printing = [p for p in snapshot.printers.values() if p.current_print is not None]
    assert printing
    for printer in printing:
        assert printer.current_print is not None
        expected = printer.raw["printer_status"]["current_print_run"]
        assert printer.current_print.raw == expected
        assert printer.current_print.as_dict(with_raw=True)["raw"] == expected


@pytest.mark.parametrize(
    "text",
    [
        '[{"serial": "A"}, {"serial": "B"',
        '[{"serial": "A"} {"serial": "B"}]',
        '[{"serial": "A"}] x',
    ],
    ids=["cut-off", "missing-comma", "trailing-garbage"],
)
async def test_a_broken_printers_array_is_bad_response(
    fake: FakeFormlabs, clock: FakeClock, text: str
) -> None:
    """JSON that breaks off part-way fails the fetch; it never yields a partial fleet."""
    fake.routes[f"{API}/printers/"] = httpx.Response(200, content=text.encode())
    with pytest.raises(BadResponse):
        await make_source(fake, clock).fetch_printers()


async def test_an_empty_printers_array_is_an_empty_fleet(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    fake.routes[f"{API}/printers/"] = httpx.Response(200, content=b" [ ] ")
    snapshot = await make_source(fake, clock).fetch_printers()
    assert dict(snapshot.printers) == {}
    assert snapshot.skipped == ()


# --- pagination ---------------------------------------------------------------------------------


async def test_next_links_are_followed_as_given_and_records_deduplicated(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """next URLs are requested verbatim (odd params kept) and overlapping rows merged."""
    tanks = SAMPLES["list_tanks"]["body"]["results"]
    first = page(tanks[:3], f"{BASE}{API}/tanks/?page=2&per_page=100&opaque=k%3Dv")
    second = page(tanks[2:], None)  # overlaps the first page by one tank
    fake.routes[f"{API}/tanks/"] = lambda r: httpx.Response(
        200, json=second if "page" in r.url.params else first
    )
    fake.routes[f"{API}/cartridges/"] = page([], None)
    inventory = await make_source(fake, clock).fetch_inventory()
    assert len(inventory.tanks) == len(tanks)
    urls = [str(r.url) for r in fake.data_requests("/tanks/")]
    assert urls == [
        f"{BASE}{API}/tanks/?per_page=100",
        f"{BASE}{API}/tanks/?page=2&per_page=100&opaque=k%3Dv",
    ]


async def test_repeated_next_link_is_bad_response(fake: FakeFormlabs, clock: FakeClock) -> None:
    """A next link pointing back at an earlier page trips the loop guard."""
    fake.routes[f"{API}/tanks/"] = lambda r: httpx.Response(
        200, json=page([], f"{BASE}{API}/tanks/?page=2")
    )
    with pytest.raises(BadResponse, match="loop guard"):
        await make_source(fake, clock).fetch_inventory()


async def test_more_than_a_thousand_pages_is_bad_response(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A list that never ends stops after 1000 pages with a BadResponse."""

    def endless(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params.get("page", "1"))
        return httpx.Response(200, json=page([], f"{BASE}{API}/tanks/?page={number + 1}"))

    fake.routes[f"{API}/tanks/"] = endless
    budget = RequestBudget.formlabs(clock, per_hour=5000, per_second=100_000)
    with pytest.raises(BadResponse, match="1000 pages"):
        await make_source(fake, clock, budget=budget).fetch_inventory()
    assert len(fake.data_requests("/tanks/")) == 1000


async def test_inventory_reads_every_page_of_tanks_and_cartridges(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """fetch_inventory walks both lists with per_page=100 and maps every item."""
    tanks = SAMPLES["list_tanks"]["body"]["results"]
    cartridges = [
        dict(SAMPLES["list_cartridges"]["body"]["results"][0], serial=f"C{i}") for i in range(7)
    ]
    fake.routes[f"{API}/tanks/"] = paged(tanks, "/tanks/", per_page=2)
    fake.routes[f"{API}/cartridges/"] = paged(cartridges, "/cartridges/", per_page=3)
    inventory = await make_source(fake, clock).fetch_inventory()
    assert len(inventory.tanks) == len(tanks)
    assert len(inventory.cartridges) == 7
    assert fake.data_requests("/cartridges/")[0].url.params["per_page"] == "100"
    assert len(fake.data_requests("/cartridges/")) == 3


# --- runs ---------------------------------------------------------------------------------------


def event(ident: int, created: str, run: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": ident,
        "printer": "NimbleHeron",
        "created_at": created,
        "print_run": run,
        "type": "PRINT_FINISHED",
        "message": "",
    }


def run(guid: str, status: str = "FINISHED") -> dict[str, Any]:
    return {
        "guid": guid,
        "name": guid,
        "printer": "NimbleHeron",
        "status": status,
        "created_at": "2025-06-18T10:00:00Z",
    }


async def test_events_since_give_runs_and_the_newest_watermark(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """Events after `since` are read (UTC Z, per_page=100) and their runs returned."""
    events = [
        event(3, "2025-06-18T12:00:00Z", run("g-1", "PRINTING")),
        event(4, "2025-06-18T13:00:00Z", run("g-1", "FINISHED")),
        event(5, "2025-06-18T12:30:00Z", None),
        event(6, "2025-06-18T12:45:00Z", run("g-2", "ERROR")),
    ]
    fake.routes[f"{API}/events/"] = paged(events, "/events/", per_page=2)
    since = datetime(2025, 6, 18, 11, 0, tzinfo=UTC)
    batch = await make_source(fake, clock).fetch_runs(since=since)
    first = fake.data_requests("/events/")[0]
    assert first.url.params["date__gt"] == "2025-06-18T11:00:00Z"
    assert first.url.params["per_page"] == "100"
    assert batch.runs["g-1"].status is PrintStatus.FINISHED
    assert batch.runs["g-2"].status is PrintStatus.FAILED
    assert batch.watermark == datetime(2025, 6, 18, 13, 0, tzinfo=UTC)


async def test_events_on_overlapping_pages_are_deduplicated_by_id(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """An event repeated on the next page (rows shifted) counts once."""
    repeated = event(7, "2025-06-18T12:00:00Z", run("g-7"))
    first = page([repeated], f"{BASE}{API}/events/?page=2")
    second = page([repeated, {"id": 8, "created_at": "x"}], None)
    fake.routes[f"{API}/events/"] = lambda r: httpx.Response(
        200, json=second if "page" in r.url.params else first
    )
    batch = await make_source(fake, clock).fetch_runs(since=VENDOR_NOW - timedelta(hours=5))
    assert list(batch.runs) == ["g-7"]


async def test_without_events_the_watermark_stays_at_since(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """No newer event keeps the watermark where it was."""
    fake.routes[f"{API}/events/"] = page([], None)
    batch = await make_source(fake, clock).fetch_runs(since=VENDOR_NOW)
    assert batch.watermark == VENDOR_NOW
    assert not batch.runs


async def test_first_call_without_since_reads_no_events(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """Without `since`, no history is read and the watermark starts at the vendor's now."""
    source = make_source(fake, clock, vendor_clock_skew=timedelta(days=400))
    await source.fetch_printers()  # learns the vendor clock
    batch = await source.fetch_runs()
    assert not fake.data_requests("/events/")
    assert batch.watermark == VENDOR_NOW


async def test_lookups_ask_each_printer_history_once(fake: FakeFormlabs, clock: FakeClock) -> None:
    """Lookups query /prints/ per printer from the earliest created_at minus a minute."""
    fake.routes[f"{API}/prints/"] = page([run("g-9", "ABORTED")], None)
    lookups = [
        PrintLookup("NimbleHeron", "g-9", created_at=datetime(2025, 6, 18, 12, 0, tzinfo=UTC)),
        PrintLookup("NimbleHeron", "g-8", created_at=datetime(2025, 6, 18, 11, 0, tzinfo=UTC)),
        PrintLookup("AmberLynx", "g-5", started_at=datetime(2025, 6, 18, 9, 30, tzinfo=UTC)),
    ]
    batch = await make_source(fake, clock).fetch_runs(lookups=lookups)
    params = [dict(r.url.params) for r in fake.data_requests("/prints/")]
    assert params == [
        {"printer": "NimbleHeron", "date__gt": "2025-06-18T10:59:00Z", "per_page": "100"},
        {"printer": "AmberLynx", "date__gt": "2025-06-18T09:29:00Z", "per_page": "100"},
    ]
    assert batch.runs["g-9"].status is PrintStatus.ABORTED


async def test_lookup_without_any_time_reads_only_the_first_page(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A lookup with no time reads the newest page only, never the whole history."""
    fake.routes[f"{API}/prints/"] = page([run("g-1")], f"{BASE}{API}/prints/?page=2")
    await make_source(fake, clock).fetch_runs(lookups=[PrintLookup("NimbleHeron", "g-1")])
    assert len(fake.data_requests("/prints/")) == 1


# --- lifecycle ----------------------------------------------------------------------------------


async def test_budget_reflects_requests_sent(fake: FakeFormlabs, clock: FakeClock) -> None:
    """budget() counts the token and data requests against the hourly 1350."""
    source = make_source(fake, clock)
    await source.fetch_printers()
    status = source.budget()
    assert (status.capacity, status.window_s, status.remaining) == (1350, 3600, 1348)


async def test_closed_source_refuses_fetches(fake: FakeFormlabs, clock: FakeClock) -> None:
    """After aclose() a fetch is refused."""
    source = make_source(fake, clock)
    await source.aclose()
    with pytest.raises(RuntimeError):
        await source.fetch_printers()


async def test_unnamed_material_code_is_logged_once(fake: FakeFormlabs, clock: FakeClock) -> None:
    """A material code nobody names is kept as the name and logged once, not every poll."""
    records = printers()
    run = records[0]["printer_status"]["current_print_run"]
    run["material"], run["material_name"] = "FLXX9999", None
    fake.routes[f"{API}/printers/"] = records
    source = make_source(fake, clock)
    with structlog.testing.capture_logs() as logs:
        first = await source.fetch_printers()
        await source.fetch_printers()
    current = first.printers[records[0]["serial"]].current_print
    assert current is not None
    assert (current.material, current.material_code) == ("FLXX9999", "FLXX9999")
    unnamed = [e for e in logs if e["event"] == "source.material_unnamed"]
    assert [e["material_code"] for e in unnamed] == ["FLXX9999"]
    assert unnamed[0]["log_level"] == "warning"


# --- unchanged records ----------------------------------------------------------------------


async def test_an_unchanged_record_is_not_mapped_again(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """The same bytes again: each printer is the very object of the last fetch, counted as
    reused; one changed byte maps that record (and only it) again."""
    source = make_source(fake, clock)
    first = await source.fetch_printers()
    assert first.reused == 0
    second = await source.fetch_printers()
    assert second.reused == 3
    assert all(second.printers[s] is first.printers[s] for s in first.printers)
    assert second.runs == first.runs
    records = printers()
    records[1]["alias"] = "Dental 3B+ (moved)"
    fake.routes[f"{API}/printers/"] = records
    third = await source.fetch_printers()
    assert third.reused == 2
    assert third.printers["AmberLynx"].name == "Dental 3B+ (moved)"
    assert third.printers["NimbleHeron"] is first.printers["NimbleHeron"]
    assert third.printers["AmberLynx"] is not first.printers["AmberLynx"]


async def test_an_unchanged_record_still_goes_offline_when_its_ping_ages(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """``online`` depends on the time too: once ``last_pinged_at`` is older than
    ``offline_after`` (5 min) by the vendor's clock, the unchanged record is mapped again."""
    source = make_source(fake, clock, vendor_clock_skew=timedelta(days=400))
    first = await source.fetch_printers()
    assert first.printers["NimbleHeron"].online  # pinged 19 s before VENDOR_NOW
    await clock.advance(4 * 60)
    still = await source.fetch_printers()
    assert still.printers["NimbleHeron"] is first.printers["NimbleHeron"]
    await clock.advance(2 * 60)
    later = await source.fetch_printers()
    assert not later.printers["NimbleHeron"].online
    assert not later.printers["AmberLynx"].online
    # Not mapped again all the same: only ``online`` moved, so the three are patched.
    assert later.reused == 3
    assert later.printers["GentleBison"] is first.printers["GentleBison"]  # offline already
    again = await source.fetch_printers()
    assert again.reused == 3
    assert not again.printers["NimbleHeron"].online


async def test_duplicates_and_skipped_records_are_told_on_every_fetch(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    records = printers()
    records.insert(0, {**copy.deepcopy(records[0]), "alias": "stale"})
    records.append({"serial": "BrokenOne", "printer_status": "not an object"})
    fake.routes[f"{API}/printers/"] = records
    source = make_source(fake, clock)
    first = await source.fetch_printers()
    second = await source.fetch_printers()
    for snapshot in (first, second):
        assert [(s.record_id, s.reason) for s in snapshot.skipped] == [
            ("NimbleHeron", "duplicate"),
            ("BrokenOne", "printer_status: not an object"),
        ]
        assert snapshot.printers["NimbleHeron"].name == "Lab Form 4 #1"
        assert list(snapshot.printers) == ["NimbleHeron", "AmberLynx", "GentleBison"]
    # One record per serial is kept to compare with: the one that wins; the stale duplicate
    # before it is mapped again (and skipped again).
    assert second.reused == 3


async def test_material_names_of_a_reused_record_follow_the_rest_of_the_fetch(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A run that names its material only by code is named from another printer's cartridge:
    that name changing renames the run of the unchanged record too."""
    records = printers()
    run = records[0]["printer_status"]["current_print_run"]
    run["material"], run["material_name"] = "FLXX0001", None
    cartridge = records[1]["cartridge_status"]["cartridge"]
    cartridge["material"], cartridge["display_name"] = "FLXX0001", "Tough 1500"
    fake.routes[f"{API}/printers/"] = copy.deepcopy(records)
    source = make_source(fake, clock)
    first = await source.fetch_printers()
    current = first.printers["NimbleHeron"].current_print
    assert current is not None
    assert current.material == "Tough 1500"
    cartridge["display_name"] = "Tough 1500 V2"
    fake.routes[f"{API}/printers/"] = copy.deepcopy(records)
    second = await source.fetch_printers()
    assert second.reused == 2
    current = second.printers["NimbleHeron"].current_print
    assert current is not None
    assert current.material == "Tough 1500 V2"
    del records[1]
    fake.routes[f"{API}/printers/"] = records
    with structlog.testing.capture_logs() as logs:
        third = await source.fetch_printers()
    current = third.printers["NimbleHeron"].current_print
    assert current is not None
    assert current.material == "FLXX0001"
    assert [e["material_code"] for e in logs if e["event"] == "source.material_unnamed"] == [
        "FLXX0001"
    ]


async def test_unchanged_records_are_found_again_when_the_order_shifts(
    fake: FakeFormlabs, clock: FakeClock
) -> None:
    """A printer added in front, another removed: the unchanged records are still reused,
    the new one mapped, the removed one gone."""
    source = make_source(fake, clock)
    first = await source.fetch_printers()
    records = printers()
    newcomer = {**copy.deepcopy(records[1]), "serial": "NewOwl", "alias": "New"}
    fake.routes[f"{API}/printers/"] = [newcomer, records[0], records[2]]
    second = await source.fetch_printers()
    assert list(second.printers) == ["NewOwl", "NimbleHeron", "GentleBison"]
    assert second.reused == 2
    assert second.printers["GentleBison"] is first.printers["GentleBison"]
    assert second.printers["NewOwl"].name == "New"
