"""The digest computation: counts, failure rate, offline time, warnings, what is still open."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from tests.unit.digest.helpers import END, START, event, printer, record, snapshots, spec

from printfleet.core.digest import compute_digest
from printfleet.core.digest_render import digest_data, digest_payload, digest_text

H = timedelta(hours=1)


def test_prints_are_counted_per_printer_and_group_inside_the_period_only() -> None:
    records = [
        record("A", "finished", START, volume=10.0),
        record("A", "finished", START + H, volume=5.5),
        record("A", "failed", START + 2 * H, volume=3.0),
        record("B", "aborted", START + 3 * H, group="lab-b"),
        record("B", "finished", START - timedelta(seconds=1)),  # the previous period
        record("B", "finished", END),  # the next period (end is exclusive)
    ]
    d = compute_digest(
        spec(), start=START, end=END, records=records, events=[], before=[], snapshots={}
    )
    assert d.totals == (2, 1, 1)
    by_serial = {p.serial: p for p in d.printers}
    assert (by_serial["A"].finished, by_serial["A"].failed) == (2, 1)
    assert by_serial["A"].resin_ml == 18.5
    assert d.groups == {"lab-a": (2, 1, 0), "lab-b": (0, 0, 1)}
    assert d.resin_ml == {"Grey V5": 18.5}
    data = digest_data(d)
    assert data["totals"]["failure_rate"] == 0.333  # failed / (finished + failed)
    assert data["groups"][0] == {
        "group": "lab-a",
        "finished": 2,
        "failed": 1,
        "aborted": 0,
        "failure_rate": 0.333,
    }
    assert d.severity == "warning"  # something failed


def test_offline_time_from_the_event_log() -> None:
    events = [
        event("printer.offline", "A", START + H),
        event("printer.online", "A", START + 3 * H),  # 2 h
        event("printer.offline", "A", END - H),  # 1 h until the end
        event("printer.online", "B", START + 2 * H),  # offline since before: 2 h
        event("printer.removed", "D", START + 4 * H),  # offline since before: 4 h
    ]
    before = [
        event("printer.offline", "B", START - 5 * H),
        event("printer.online", "C", START - 5 * H),
        event("printer.offline", "D", START - 5 * H),
    ]
    d = compute_digest(
        spec(),
        start=START,
        end=END,
        records=[],
        events=events,
        before=before,
        # E has no event at all and is offline now: offline the whole period.
        snapshots=snapshots(printer("A", online=False), printer("C"), printer("E", online=False)),
    )
    offline = {p.serial: p.offline_s / 3600 for p in d.printers}
    assert offline == {"A": 3.0, "B": 2.0, "D": 4.0, "E": 24.0}
    assert [label for label, _ in d.offline_now] == ["name-A (A)", "name-E (E)"]
    assert dict(d.offline_now)["name-A (A)"] == "2026-12-03T05:30:00Z"  # last offline event


def test_warnings_and_open_alerts() -> None:
    events = [
        event("material.low", "A", START + H, material="Grey V5", remaining_ml=80.0),
        event("material.low", "A", START + 2 * H, material="Grey V5", remaining_ml=80.0),
        event("material.low", "A", START + 3 * H, material="Clear V4", empty=True),
        event("tank.attention", "B", START + H, tank="T1", reason="layers", layers_printed=80000),
        event("printer.alert", "B", START + H, alert="parts on platform", state="raised"),
        event("printer.alert", "B", START + 2 * H, alert="parts on platform", state="cleared"),
    ]
    d = compute_digest(
        spec(),
        start=START,
        end=END,
        records=[],
        events=events,
        before=[],
        snapshots=snapshots(printer("A"), printer("B", alerts=("not ready",))),
    )
    warnings = {p.serial: p.warnings for p in d.printers}
    assert warnings == {
        "A": ["material low: Grey V5 (80 ml left)", "material empty: Clear V4"],
        "B": ["tank T1: 80000 layers printed", "alert: parts on platform"],
    }
    assert d.alerts_now == (("name-B (B)", "not ready"),)


def test_match_uses_silence_semantics_on_printer_fields() -> None:
    records = [
        record("A", "finished", START),
        record("B", "failed", START, group="lab-b"),
        record("GONE", "finished", START, group="lab-b"),  # not in any snapshot any more
    ]
    events = [event("printer.offline", "B", START + H, group="lab-b")]
    d = compute_digest(
        spec({"group": ("lab-b",)}),
        start=START,
        end=END,
        records=records,
        events=events,
        before=[],
        snapshots=snapshots(printer("A"), printer("B", group="lab-b", online=False)),
    )
    assert sorted(p.serial for p in d.printers) == ["B", "GONE"]
    assert [label for label, _ in d.offline_now] == ["name-B (B)"]
    by_model = compute_digest(
        spec({"model": ("Form 3*",)}),
        start=START,
        end=END,
        records=records,
        events=[],
        before=[],
        snapshots=snapshots(printer("A", model="Form 3L"), printer("B")),
    )
    assert [p.serial for p in by_model.printers] == ["A"]


def test_plain_text_and_payload() -> None:
    d = compute_digest(
        spec(),
        start=START,
        end=END,
        records=[record("A", "finished", START + H, volume=12.0)],
        events=[event("printer.offline", "B", START + H)],
        before=[],
        snapshots=snapshots(printer("A"), printer("B", online=False)),
        missed=2,
    )
    title, body, severity = digest_text(d, tz=ZoneInfo("Europe/Berlin"))
    assert title == "Lab digest — Thu 2026-12-03"
    assert body.splitlines()[:4] == [
        "Period: Wed 2026-12-02 07:30 to Thu 2026-12-03 07:30 CET",
        "Prints: 1 finished, 0 failed, 0 aborted (failure rate 0.0%)",
        "(2 earlier period(s) passed while printfleet was stopped)",
        "Resin used: Grey V5 12 ml",
    ]
    assert "- name-B (B): 0 finished, 0 failed, 0 aborted, offline 23h00m" in body
    assert "- offline: name-B (B) since 2026-12-02T07:30:00Z" in body
    assert severity == "warning"
    payload = digest_payload(d, now=END, tz=ZoneInfo("Europe/Berlin"))
    assert payload["event"]["type"] == "printfleet.digest"
    assert payload["event"]["data"]["missed_periods"] == 2
    again = digest_payload(d, now=END + H)
    assert again["event"]["id"] == payload["event"]["id"]  # stable per digest and period


def test_an_empty_period_says_so() -> None:
    d = compute_digest(spec(), start=START, end=END, records=[], events=[], before=[], snapshots={})
    _, body, severity = digest_text(d)
    assert severity == "info"
    assert body.endswith("Still open: nothing.")
    assert "failure rate n/a" in body
