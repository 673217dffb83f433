"""CarbonSource over httpx.MockTransport: RS256 JWTs, offset and cursor pagination, lookups."""

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

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from structlog.testing import capture_logs

from printfleet.core.model import PrintStatus
from printfleet.errors import AuthFailed, BadResponse
from printfleet.sources.base import PrintLookup
from printfleet.sources.carbon import PRINT_STATUSES, CarbonSource
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import RetryPolicy
from printfleet.testing import FakeClock

T = TypeVar("T")
BASE = "https://api.carbon.test/v1"
CLIENT_ID = "c1ient-1d"
SAMPLES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "carbon-samples.json").read_text("utf-8")
)
Route = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def printer(serial: str) -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(SAMPLES["get_printers"]["body"]["printers"][1])
    record["serial"] = serial
    record["name"] = f"M{serial}"
    return record


def model_print(print_id: str, finished: str | None, status: str = "finished") -> dict[str, Any]:
    record: dict[str, Any] = copy.deepcopy(SAMPLES["get_prints"]["body"]["prints"][2])
    record.update(print_id=print_id, uuid=f"uuid-{print_id}", finished_at=finished, status=status)
    return record


def offset_pages(fleet: list[dict[str, Any]], *, total: int | None = None) -> Route:
    """/printers with offset = items skipped."""

    def route(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        offset = int(request.url.params["offset"])
        body = {
            "limit": limit,
            "offset": offset,
            "total_count": len(fleet) if total is None else total,
            "printers": fleet[offset : offset + limit],
        }
        return httpx.Response(200, json=body)

    return route


class FakeCarbon:
    """A scripted Carbon API that verifies each bearer JWT with the public key."""

    def __init__(self, clock: FakeClock, key: RSAPrivateKey) -> None:
        self.clock = clock
        self.public = key.public_key()
        self.routes: dict[str, Route] = {
            "/v1/printers": offset_pages([printer("7R01TX")]),
            "/v1/prints": lambda r: httpx.Response(200, json={"prints": [], "next_cursor": None}),
        }
        self.scripted: dict[str, list[httpx.Response]] = {}
        self.requests: list[httpx.Request] = []
        self.claims: list[dict[str, Any]] = []
        self.date_offset = timedelta(0)
        self.reject_all = False

    def to(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == f"/v1{path}"]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await asyncio.sleep(0)
        headers = {"Date": format_datetime(self.clock.now() + self.date_offset, usegmt=True)}
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(
                token,
                self.public,
                algorithms=["RS256"],
                options={"require": ["iss", "exp"], "verify_iat": False, "verify_exp": False},
            )
        except jwt.PyJWTError:
            return httpx.Response(401, headers=headers)
        self.claims.append(claims)
        if self.reject_all:
            return httpx.Response(401, headers=headers)
        path = request.url.path
        if self.scripted.get(path):
            response = self.scripted[path].pop(0)
        else:
            response = self.routes[path](request)
        response.headers.update(headers)
        return response


def make_source(
    fake: FakeCarbon,
    clock: FakeClock,
    key: RSAPrivateKey,
    *,
    retry: RetryPolicy | None = None,
    budget: RequestBudget | None = None,
) -> CarbonSource:
    return CarbonSource(
        name="factory",
        client_id=CLIENT_ID,
        private_key=key,
        client=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        clock=clock,
        base_url=BASE,
        retry=retry,
        budget=budget,
        rng=random.Random(5),
    )


@pytest.fixture
def clock_start() -> datetime:
    return datetime(2025, 6, 17, 14, 30, tzinfo=UTC)


@pytest.fixture
def fake(clock: FakeClock, key: RSAPrivateKey) -> FakeCarbon:
    return FakeCarbon(clock, key)


# --- JWT ----------------------------------------------------------------------------------------


async def test_jwt_is_rs256_with_iss_iat_and_ten_minute_exp(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """The bearer token verifies with the public key and carries iss, iat and exp = iat + 600."""
    await make_source(fake, clock, key).fetch_printers()
    token = fake.requests[0].headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "typ": "JWT"}
    claims = jwt.decode(
        token, key.public_key(), algorithms=["RS256"], options={"verify_exp": False}
    )
    assert claims == {
        "iss": CLIENT_ID,
        "iat": int(clock.now().timestamp()),
        "exp": int(clock.now().timestamp()) + 600,
    }


@pytest.mark.parametrize("skew", [timedelta(hours=-2), timedelta(hours=2)])
async def test_jwt_is_valid_on_both_clocks_when_they_differ(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey, skew: timedelta
) -> None:
    """With the vendor's Date 2 h off ours, iat is the earlier and exp the later clock + 600 s."""
    fake.date_offset = skew
    source = make_source(fake, clock, key)
    await source.fetch_printers()
    await clock.advance(600)
    await source.fetch_printers()
    ours, theirs = clock.now(), clock.now() + skew
    assert fake.claims[-1]["iat"] == int(min(ours, theirs).timestamp())
    assert fake.claims[-1]["exp"] == int(max(ours, theirs).timestamp()) + 600


async def test_jwt_is_reminted_only_when_less_than_a_minute_remains(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """The same token is used until 540 s, a new one after."""
    source = make_source(fake, clock, key)
    await source.fetch_printers()
    await clock.advance(539)
    await source.fetch_printers()
    await clock.advance(2)
    await source.fetch_printers()
    iats = [c["iat"] for c in fake.claims]
    assert iats[0] == iats[1] != iats[2]


async def test_401_remints_once_and_retries(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A 401 makes the source mint a fresh JWT and retry; the fetch succeeds."""
    fake.scripted["/v1/printers"] = [httpx.Response(401)]
    source = make_source(fake, clock, key)
    await clock.advance(1)
    snapshot = await source.fetch_printers()
    assert list(snapshot.printers) == ["7R01TX"]
    assert len(fake.to("/printers")) == 2


async def test_401_after_reminting_is_auth_failed(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """If the freshly minted JWT is rejected as well, the fetch raises AuthFailed."""
    fake.reject_all = True
    with pytest.raises(AuthFailed):
        await make_source(fake, clock, key).fetch_printers()
    assert len(fake.to("/printers")) == 2


async def test_403_is_auth_failed_with_the_admin_hint(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A 403 is not retried and says that the key holder must be an ADMIN."""
    fake.scripted["/v1/printers"] = [httpx.Response(403)]
    with pytest.raises(AuthFailed, match="ADMIN"):
        await make_source(fake, clock, key).fetch_printers()
    assert len(fake.to("/printers")) == 1


# --- /printers ----------------------------------------------------------------------------------


async def test_404_is_an_empty_fleet(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """The vendor's 404 "no printer found" is a successful empty snapshot."""
    fake.scripted["/v1/printers"] = [httpx.Response(404, json={"message": "no printer found"})]
    snapshot = await make_source(fake, clock, key).fetch_printers()
    assert dict(snapshot.printers) == {}
    assert snapshot.source == "factory"
    assert len(fake.to("/prints")) == 1  # the probe that told it from a wrong base_url


async def test_empty_fleet_is_confirmed_once(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """Once the base URL answered as Carbon, later 404s on /printers cost no extra request."""
    fake.routes["/v1/printers"] = lambda r: httpx.Response(404, json={"message": "none"})
    source = make_source(fake, clock, key)
    for _ in range(3):
        assert dict((await source.fetch_printers()).printers) == {}
    assert len(fake.to("/printers")) == 3
    assert len(fake.to("/prints")) == 1


@pytest.mark.parametrize(
    ("prints", "detail"),
    [
        (httpx.Response(404, text="<h1>Not Found</h1>"), "GET /prints answered HTTP 404"),
        (httpx.Response(200, json={"status": "ok"}), "HTTP 200 without a prints list"),
        (httpx.Response(200, text="<html>proxy</html>"), "GET /prints"),
    ],
    ids=["404", "other-json", "html"],
)
async def test_404_from_a_wrong_base_url_is_an_error_naming_it(
    fake: FakeCarbon,
    clock: FakeClock,
    key: RSAPrivateKey,
    prints: httpx.Response,
    detail: str,
) -> None:
    """A 404 on /printers where /prints does not answer as Carbon is not an empty fleet."""
    fake.routes["/v1/printers"] = lambda r: httpx.Response(404, text="Not Found")
    fake.routes["/v1/prints"] = lambda r: prints
    with pytest.raises(BadResponse) as caught:
        await make_source(fake, clock, key).fetch_printers()
    message = str(caught.value)
    assert f"GET {BASE}/printers answered 404" in message
    assert detail in message
    assert "check base_url; Carbon's is https://api.carbon3d.com/v1" in message


@pytest.mark.parametrize(
    ("count", "offsets"),
    [
        (0, [0]),
        (99, [0]),
        (100, [0]),
        (200, [0, 100]),
        (250, [0, 100, 200]),
    ],
)
async def test_offset_pagination_skips_items_and_stops_early(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey, count: int, offsets: list[int]
) -> None:
    """Offsets advance by items read; a short page or reaching total_count ends the walk."""
    fleet = [printer(f"P{i:05d}") for i in range(count)]
    fake.routes["/v1/printers"] = offset_pages(fleet)
    snapshot = await make_source(fake, clock, key).fetch_printers()
    assert len(snapshot.printers) == count
    assert [int(r.url.params["offset"]) for r in fake.to("/printers")] == offsets
    assert {r.url.params["limit"] for r in fake.to("/printers")} == {"100"}


async def test_overlapping_offset_pages_are_deduplicated_by_serial(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A printer seen on two pages (the list shifted) is one printer, nothing skipped."""
    fleet = [printer(f"P{i:05d}") for i in range(150)]

    def shifted(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        start = offset - 1 if offset else 0
        chunk = fleet[start : start + 100]
        return httpx.Response(
            200, json={"limit": 100, "offset": offset, "total_count": 150, "printers": chunk}
        )

    fake.routes["/v1/printers"] = shifted
    snapshot = await make_source(fake, clock, key).fetch_printers()
    assert len(snapshot.printers) == 150
    assert snapshot.skipped == ()


async def test_offset_pages_that_do_not_advance_are_bad_response(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A server treating offset as a page index that repeats a full page trips the guard."""
    fleet = [printer(f"P{i:05d}") for i in range(100)]
    fake.routes["/v1/printers"] = lambda r: httpx.Response(
        200, json={"limit": 100, "offset": 0, "total_count": 500, "printers": fleet}
    )
    with pytest.raises(BadResponse, match="not advancing"):
        await make_source(fake, clock, key).fetch_printers()


async def test_printers_body_without_list_is_bad_response(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A 200 whose body has no printers list is a BadResponse, not an empty fleet."""
    fake.routes["/v1/printers"] = lambda r: httpx.Response(200, json={"limit": 100})
    with pytest.raises(BadResponse):
        await make_source(fake, clock, key).fetch_printers()


# --- /prints ------------------------------------------------------------------------------------


def cursor_pages(pages: list[list[dict[str, Any]]]) -> Route:
    """Cursor pagination: cursor "c<n>" names page n."""

    def route(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        number = int(cursor[1:]) if cursor else 0
        following = f"c{number + 1}" if number + 1 < len(pages) else None
        return httpx.Response(200, json={"prints": pages[number], "next_cursor": following})

    return route


async def test_history_walks_cursors_with_explicit_statuses(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """fetch_runs sends the known statuses, finished_after, sort and limit, follows cursors."""
    fake.routes["/v1/prints"] = cursor_pages(
        [
            [model_print("A1", "2025-06-17T10:00:00.000Z")],
            [model_print("A2", "2025-06-17T11:00:00.000Z", "failed")],
            [model_print("A2", "2025-06-17T11:00:00.000Z", "failed")],
        ]
    )
    since = datetime(2025, 6, 17, 9, 0, tzinfo=UTC)
    batch = await make_source(fake, clock, key).fetch_runs(since=since)
    first = fake.to("/prints")[0].url.params
    assert first.get_list("status") == ["printing", "finished"] == list(PRINT_STATUSES)
    assert first["finished_after"] == "2025-06-17T09:00:00Z"
    assert (first["sort"], first["limit"]) == ("finished_at", "100")
    assert "cursor" not in first
    assert [r.url.params.get("cursor") for r in fake.to("/prints")] == [None, "c1", "c2"]
    assert sorted(batch.runs) == ["A1", "A2"]
    assert batch.runs["A2"].status is PrintStatus.UNKNOWN  # "failed" is not a known word
    assert batch.watermark == datetime(2025, 6, 17, 11, 0, tzinfo=UTC)


def refusing(*refused: str) -> Route:
    """/prints answering 400 when any of ``refused`` is among the status values."""

    def route(request: httpx.Request) -> httpx.Response:
        statuses = request.url.params.get_list("status")
        if set(statuses) & set(refused):
            return httpx.Response(400, json={"error": "bad_request", "message": "status"})
        prints = [model_print(f"P-{s}", "2025-06-17T10:00:00.000Z", s) for s in statuses]
        return httpx.Response(200, json={"prints": prints, "next_cursor": None})

    return route


async def test_a_refused_status_list_falls_back_to_one_status_per_request(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A 400 to the status list is logged once; then each status is asked alone, and a
    refused one is dropped, so the finished prints still arrive on every later poll."""
    fake.routes["/v1/prints"] = refusing("printing")
    source = make_source(fake, clock, key)
    since = datetime(2025, 6, 17, 9, 0, tzinfo=UTC)
    with capture_logs() as logs:
        first = await source.fetch_runs(since=since)
        second = await source.fetch_runs(since=since)
    asked = [r.url.params.get_list("status") for r in fake.to("/prints")]
    assert asked == [["printing", "finished"], ["printing"], ["finished"], ["finished"]]
    assert sorted(first.runs) == sorted(second.runs) == ["P-finished"]
    rejected = [e for e in logs if e["event"] == "source.status_filter_rejected"]
    assert [e["status"] for e in rejected] == [["printing", "finished"], ["printing"]]


async def test_a_refused_finished_filter_is_a_bad_response(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """When even the documented default ``finished`` is refused, the poll fails loudly."""
    fake.routes["/v1/prints"] = refusing("finished")
    with pytest.raises(BadResponse, match="status=finished"):
        await make_source(fake, clock, key).fetch_runs(since=clock.now())


async def test_repeated_cursor_is_bad_response(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """A server handing out the same cursor again trips the loop guard."""
    fake.routes["/v1/prints"] = lambda r: httpx.Response(
        200, json={"prints": [], "next_cursor": "same"}
    )
    with pytest.raises(BadResponse, match="loop guard"):
        await make_source(fake, clock, key).fetch_runs(since=clock.now())


async def test_cursor_older_than_a_minute_is_never_reused(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """When a retry delays the next page past 60 s, the walk restarts from the last finished_at."""
    fake.routes["/v1/prints"] = cursor_pages(
        [
            [model_print("B1", "2025-06-17T10:00:00.000Z")],
            [model_print("B2", "2025-06-17T10:30:00.000Z")],
        ]
    )
    fake.scripted["/v1/prints"] = [
        cursor_pages([[model_print("B1", "2025-06-17T10:00:00.000Z")], []])(
            httpx.Request("GET", BASE)
        ),
        httpx.Response(503, headers={"Retry-After": "61"}),
    ]
    sent: list[tuple[float, str | None, str]] = []
    inner = fake.__call__

    async def recording(request: httpx.Request) -> httpx.Response:
        sent.append(
            (
                clock.monotonic(),
                request.url.params.get("cursor"),
                request.url.params["finished_after"],
            )
        )
        return await inner(request)

    source = CarbonSource(
        name="factory",
        client_id=CLIENT_ID,
        private_key=key,
        client=httpx.AsyncClient(transport=httpx.MockTransport(recording)),
        clock=clock,
        base_url=BASE,
        retry=RetryPolicy(total_s=600),
    )
    since = datetime(2025, 6, 17, 9, 0, tzinfo=UTC)
    batch = await clock.drive(source.fetch_runs(since=since))
    assert sent[0] == (0.0, None, "2025-06-17T09:00:00Z")
    assert sent[1] == (0.0, "c1", "2025-06-17T09:00:00Z")
    restarted = sent[2]
    assert restarted == (61.0, None, "2025-06-17T10:00:00Z")
    assert sent[3:] == [(61.0, "c1", "2025-06-17T10:00:00Z")]  # a fresh cursor of the new walk
    assert sorted(batch.runs) == ["B1", "B2"]


async def test_lookups_use_print_id_filters_of_at_most_100(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """150 print lookups become two requests of repeated print_id with the status list."""
    fake.routes["/v1/prints"] = lambda r: httpx.Response(
        200,
        json={
            "prints": [
                model_print(p, "2025-06-17T10:00:00.000Z")
                for p in r.url.params.get_list("print_id")
            ],
            "next_cursor": None,
        },
    )
    lookups = [PrintLookup("4M02KD", f"K{i:06d}") for i in range(150)]
    batch = await make_source(fake, clock, key).fetch_runs(lookups=lookups)
    requests = fake.to("/prints")
    assert [len(r.url.params.get_list("print_id")) for r in requests] == [100, 50]
    assert all(r.url.params.get_list("status") == list(PRINT_STATUSES) for r in requests)
    assert all("finished_after" not in r.url.params for r in requests)
    assert len(batch.runs) == 150


@pytest.mark.parametrize(
    ("ident", "param", "value"),
    [
        ("KT7Q3MA", "print_id", "KT7Q3MA"),
        ("3e8c1f5a-6b02-4d97-a4e3-9c7b0d2f8a16", "uuid", "3e8c1f5a-6b02-4d97-a4e3-9c7b0d2f8a16"),
        ("0a6f-b2@2025-06-17T12:58:10Z", "build_uuid", "0a6f-b2"),
    ],
)
async def test_lookup_filter_follows_the_shape_of_the_id(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey, ident: str, param: str, value: str
) -> None:
    """A short id is looked up by print_id, a uuid by uuid, a build@time key by build_uuid."""
    await make_source(fake, clock, key).fetch_runs(lookups=[PrintLookup("4M02KD", ident)])
    assert fake.to("/prints")[0].url.params.get_list(param) == [value]


async def test_first_call_without_since_reads_no_history(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """Without since or lookups, fetch_runs sends nothing and starts the watermark now."""
    batch = await make_source(fake, clock, key).fetch_runs()
    assert fake.requests == []
    assert batch.watermark == clock.now()


async def test_inventory_is_empty_without_requests(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """Carbon has no tanks or cartridges: an empty inventory and no request."""
    inventory = await make_source(fake, clock, key).fetch_inventory()
    assert (inventory.tanks, inventory.cartridges, fake.requests) == ((), (), [])


async def test_budget_is_a_ten_second_window(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """budget() reports the default 90 per 10 s minus what was sent."""
    source = make_source(fake, clock, key)
    await source.fetch_printers()
    status = source.budget()
    assert (status.capacity, status.window_s, status.remaining) == (90, 10, 89)


# --- unchanged records ----------------------------------------------------------------------


async def test_an_unchanged_record_is_not_mapped_again(
    fake: FakeCarbon, clock: FakeClock, key: RSAPrivateKey
) -> None:
    """Idle printers sending the same bytes are the last fetch's very objects; a printer whose
    print is running is mapped on every fetch (its progress moves with the time alone); one
    changed record is mapped again."""
    fleet = [SAMPLES["get_printers"]["body"]["printers"][0], printer("IDLE01"), printer("IDLE02")]
    fake.routes["/v1/printers"] = offset_pages(fleet)
    source = make_source(fake, clock, key)
    first = await source.fetch_printers()
    assert first.reused == 0
    assert dict(first.printers["IDLE01"].raw) == fleet[1]
    await clock.advance(15)
    second = await source.fetch_printers()
    assert second.reused == 2
    assert second.printers["IDLE01"] is first.printers["IDLE01"]
    running = second.printers["4M02KD"]
    assert running is not first.printers["4M02KD"]
    before, after = first.printers["4M02KD"].current_print, running.current_print
    assert before is not None
    assert after is not None
    assert after.elapsed_s == (before.elapsed_s or 0) + 15
    assert dict(after.raw) == fleet[0]["prints"]["current"]
    changed = copy.deepcopy(fleet)
    changed[2]["status"]["alerts"] = ["resin low"]
    fake.routes["/v1/printers"] = offset_pages(changed)
    third = await source.fetch_printers()
    assert third.reused == 1
    assert third.printers["IDLE02"].alerts == ("resin low",)
    assert third.printers["IDLE01"] is first.printers["IDLE01"]
