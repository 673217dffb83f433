"""Which notifications ask for pictures, and what the application's resolver asks of whom."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from printfleet.core.events import ChangeEvent, EventType, Severity, to_cloudevent
from printfleet.core.model import Print, Printer, PrinterStatus, PrintStatus, Snapshot, Vendor
from printfleet.core.pictures import Pictures, PictureUnavailable
from printfleet.errors import RateLimited
from printfleet.picture_links import SourcePictureLinks
from printfleet.sinks.pictures import PrintRef, print_ref
from printfleet.sources.base import BudgetStatus, Inventory, PrintLookup, RunBatch
from printfleet.testing import FakeClock

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
THUMB = "https://cdn.example.com/t.png?sig=1"


def payload(kind: EventType = EventType.PRINT_FINISHED, **extra: Any) -> dict[str, Any]:
    printer = Printer(
        serial="Form4-CapableBeaver",
        name="Beaver",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=PrinterStatus.IDLE,
        status_raw="IDLE",
        online=True,
    )
    run = Print(
        id="g-1", name="x", status=PrintStatus.FINISHED, status_raw="FINISHED", created_at=T0
    )
    event = ChangeEvent(
        id="e",
        type=kind,
        source="lab",
        vendor=Vendor.FORMLABS,
        subject=printer.serial,
        time=T0,
        severity=Severity.INFO,
        printer=printer,
        print=run,
    )
    return {"event": to_cloudevent(event), **extra}


def test_a_print_event_names_source_printer_and_print() -> None:
    assert print_ref(payload()) == PrintRef(
        source="lab", printer_serial="Form4-CapableBeaver", print_id="g-1", created_at=T0
    )


@pytest.mark.parametrize(
    "value",
    [
        payload(EventType.PRINTER_OFFLINE),
        payload(EventType.MATERIAL_LOW),
        payload(group={"count": 2, "subjects": ["a", "b"]}),
        {"event": {"type": "print.finished", "source": "printfleet", "data": {}}},
        {"event": {"type": "print.finished", "source": "printfleet/formlabs/lab", "data": {}}},
        {"event": "nope"},
        {},
    ],
)
def test_anything_else_asks_for_no_pictures(value: dict[str, Any]) -> None:
    assert print_ref(value) is None


class Stub:
    """A source that answers fetch_runs from a table (only what the resolver uses)."""

    def __init__(self, vendor: Vendor, runs: dict[str, Print], error: Exception | None = None):
        self.name = "lab"
        self.vendor = vendor
        self._runs = runs
        self._error = error
        self.lookups: list[Sequence[PrintLookup]] = []

    async def fetch_runs(
        self, *, since: datetime | None = None, lookups: Sequence[PrintLookup] = ()
    ) -> RunBatch:
        self.lookups.append(lookups)
        if self._error is not None:
            raise self._error
        return RunBatch(runs=self._runs)

    async def fetch_printers(self) -> Snapshot:  # pragma: no cover - not used
        raise NotImplementedError

    async def fetch_inventory(self) -> Inventory:  # pragma: no cover - not used
        raise NotImplementedError

    def budget(self) -> BudgetStatus:  # pragma: no cover - not used
        raise NotImplementedError

    async def aclose(self) -> None:  # pragma: no cover - not used
        pass


REF = PrintRef("lab", "Form4-CapableBeaver", "g-1", created_at=T0)
RUN = Print(id="g-1", name="x", status=PrintStatus.FINISHED, status_raw="F", thumbnail_url=THUMB)


async def test_formlabs_is_asked_once_per_print_per_minute() -> None:
    clock = FakeClock(T0)
    stub = Stub(Vendor.FORMLABS, {"g-1": RUN})
    links = SourcePictureLinks(lambda: {"lab": stub}, clock=clock)  # type: ignore[dict-item]
    assert await links.links(REF) == Pictures(thumbnail=THUMB)
    assert await links.links(REF) == Pictures(thumbnail=THUMB)
    assert stub.lookups == [[PrintLookup("Form4-CapableBeaver", "g-1", T0, None)]]
    await clock.advance(61)
    await links.links(REF)
    assert len(stub.lookups) == 2


async def test_vendors_without_pictures_are_never_asked() -> None:
    stub = Stub(Vendor.CARBON, {"g-1": RUN})
    links = SourcePictureLinks(lambda: {"lab": stub}, clock=FakeClock(T0))  # type: ignore[dict-item]
    assert await links.links(REF) == Pictures()
    assert stub.lookups == []


@pytest.mark.parametrize(
    ("sources", "reason"),
    [
        ({}, "no source named 'lab' is running"),
        ({"lab": Stub(Vendor.FORMLABS, {})}, "the print is not in the source's print history"),
        (
            {"lab": Stub(Vendor.FORMLABS, {}, RateLimited("lab", "budget spent", 5.0))},
            "the source could not be asked (RateLimited)",
        ),
    ],
)
async def test_failures_say_why(sources: dict[str, Stub], reason: str) -> None:
    links = SourcePictureLinks(lambda: sources, clock=FakeClock(T0))  # type: ignore[arg-type]
    with pytest.raises(PictureUnavailable) as caught:
        await links.links(REF)
    assert caught.value.reason == reason


async def test_a_plain_http_loopback_link_is_never_fetched_outside_the_simulator() -> None:
    """A vendor record pointing at http://127.0.0.1:… must not make the daemon call a local
    service: unless every source is itself a local simulator, such a link is not checked."""
    import httpx

    from printfleet.core.pictures import is_loopback_http
    from printfleet.sinks.pictures import PictureFetcher

    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, headers={"content-type": "image/png"}, content=b"\x89PNG")

    local = Print(
        id="g-1",
        name="x",
        status=PrintStatus.FINISHED,
        status_raw="F",
        thumbnail_url="http://127.0.0.1:9090/metrics",
    )
    stub = Stub(Vendor.FORMLABS, {"g-1": local})
    links = SourcePictureLinks(lambda: {"lab": stub}, clock=FakeClock(T0))  # type: ignore[dict-item]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        fetcher = PictureFetcher(links, client=client)
        assert not await fetcher.pictures("chat", payload())
        assert calls == []
        simulator = PictureFetcher(links, client=client, allow_plain_loopback=True)
        assert await simulator.pictures("chat", payload())
        assert len(calls) == 1
    assert is_loopback_http("http://127.0.0.1:8080")
    assert is_loopback_http("http://localhost:1")
    assert not is_loopback_http("https://localhost:1")
    assert not is_loopback_http(None)
    assert not is_loopback_http("http://api.formlabs.com")
