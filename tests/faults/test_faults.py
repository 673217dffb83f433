"""Fault injection against the real daemon process (DESIGN §9: delivery and reliability).

Every case breaks one thing — the vendor API, the broker, the receiver, the process, the disk,
the rules — while a small simulated fleet keeps printing, and then checks the same invariants
(:meth:`Rig.verify <tests.faults.harness.Rig.verify>`): every event the daemon logged as
detected reaches MQTT (and the webhook receiver when the rules route it there), in order per
printer; no ``printer.offline``/``online`` that the simulator's ground truth does not back; no
transition announced twice under different ids. Each case also checks the daemon's own account
of what happened (the log event names users alert on) and that it kept running or exited
with the documented code (DESIGN §3).
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from printfleet.store import FILENAME, Store
from tests.faults.conftest import RigFactory
from tests.faults.harness import (
    HOOK,
    PREFIX,
    DiskFull,
    Rig,
    hook_wanted,
    is_event_line,
    metric_value,
    rule_pack,
)

pytestmark = pytest.mark.fault

SOURCES = ("lab", "factory")
VENDOR_OF = {"lab": "formlabs", "factory": "carbon"}


def of_type(rig: Rig, event_type: str, source: str | None = None) -> list[dict[str, Any]]:
    """Detected events (over all daemon runs) of one type, optionally of one source."""
    return [
        r
        for r in rig.logged()
        if r["type"] == event_type and (source is None or r["source"] == source)
    ]


def detected_ids(rig: Rig, event_type: str, source: str) -> set[str]:
    """Ids of the events of one type and source that were logged or arrived on MQTT."""
    ids = {r["id"] for r in of_type(rig, event_type, source)}
    if rig.mqtt is not None:
        ids |= {
            e["id"]
            for e in rig.mqtt.events()
            if e.get("type") == event_type and str(e.get("source", "")).endswith(f"/{source}")
        }
    return ids


async def recovered(rig: Rig, source: str, *, since: int, timeout: float = 20.0) -> None:
    """Wait for the ``source.recovered`` event (the poller's log line comes just before it)."""
    await rig.wait_events(
        1,
        since=since,
        where=lambda r: r["type"] == "source.recovered" and r["source"] == source,
        timeout=timeout,
    )


async def busy_fleet(rig: Rig, events: int = 3, timeout: float = 30.0) -> None:
    """Wait until the fleet has produced ``events`` and all of them have been delivered."""
    await rig.wait_events(events, timeout=timeout)
    await rig.wait_all_delivered(timeout=timeout)


def timeouts(rig: Rig, source: str) -> float:
    """``printfleet_api_requests_total{code="timeout"}`` of ``source`` (scraped now)."""
    text = rig.metrics_text()
    return metric_value(text, "printfleet_api_requests_total", source=source, code="timeout")


def status_is(rig: Rig, payload: bytes) -> bool:
    """Whether the latest ``printfleet/status`` message the recorder got is ``payload``."""
    assert rig.mqtt is not None
    messages = rig.mqtt.on(f"{PREFIX}/status")
    return bool(messages) and messages[-1].payload == payload


def answered_after_401(rig: Rig, vendor: str, since: datetime) -> bool:
    """Whether a data request of ``vendor`` succeeded after its first 401 since ``since``."""
    served = rig.requests_since(vendor, since)
    first = next((i for i, r in enumerate(served) if r.status == 401), None)
    return first is not None and any(
        r.status == 200 and "/o/token/" not in r.path for r in served[first + 1 :]
    )


def date_header(rig: Rig) -> str | None:
    """The ``Date`` header of a simulator response (``None``: the simulator sends none)."""
    response = httpx.get(f"{rig.sim.formlabs_url}/developer/v1/printers/", timeout=5)
    return response.headers.get("date")


# --------------------------------------------------------------------------- vendor API


async def test_api_429_storm_pauses_for_retry_after(make_rig: RigFactory) -> None:
    """A burst of 429s makes each source pause exactly as long as Retry-After says, log
    ``poll.rate_limited``, and carry on without any outage or offline events."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    retry_after, storm = 2, 3
    since = rig.sim.now()
    for vendor in VENDOR_OF.values():
        faults = rig.sim.faults.for_vendor(vendor)
        faults.force_429_retry_after = retry_after
        faults.force_429 = storm
    for source in SOURCES:
        await rig.wait_log("poll.rate_limited", source=source, timeout=15)
    await rig.until(
        lambda: all(rig.sim.faults.for_vendor(v).force_429 == 0 for v in VENDOR_OF.values()),
        timeout=30,
        what="every forced 429 to be served",
    )
    mark = rig.mark()
    # Both sources poll successfully again, and changes are detected again.
    for vendor in VENDOR_OF.values():
        await rig.until(
            lambda vendor=vendor: rig.requests_since(vendor, since)[-1].status == 200,
            timeout=15,
            what=f"a successful {vendor} request after the storm",
        )
    await rig.wait_events(1, since=mark, timeout=30)

    for vendor in VENDOR_OF.values():
        served = rig.requests_since(vendor, since)
        throttled = [i for i, r in enumerate(served) if r.status == 429]
        assert len(throttled) == storm
        for i in throttled:
            if i + 1 < len(served):
                gap = (served[i + 1].time - served[i].time).total_seconds() / rig.options.speed
                assert gap >= retry_after - 0.05, (
                    f"{vendor}: request {served[i + 1].path} sent {gap:.2f}s after a 429 "
                    f"with Retry-After: {retry_after}"
                )
    assert daemon.running
    assert not daemon.named("source.down"), "a 429 is not an outage"
    assert not of_type(rig, "source.unreachable")
    assert not rig.false_offline(), "an API problem is not printers going offline"
    await rig.verify()


async def test_5xx_and_timeouts_are_one_outage(make_rig: RigFactory) -> None:
    """Server errors then hanging responses are one outage per source: ``source.unreachable``
    once, ``source.recovered`` once, no ``printer.offline``, and changes detected after."""
    rig = await make_rig(source_timeout="1s")
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    for vendor in VENDOR_OF.values():
        rig.sim.faults.for_vendor(vendor).error_rate = 1.0
    for source in SOURCES:
        await rig.wait_log("source.down", source=source, timeout=20)
    # Same outage, other symptom: responses that never come in time.
    for vendor in VENDOR_OF.values():
        faults = rig.sim.faults.for_vendor(vendor)
        faults.hang_s = 3.0
        faults.error_rate = 0.0
    await rig.until(
        lambda: all(timeouts(rig, source) for source in SOURCES),
        timeout=20,
        what="requests timing out on both sources",
    )
    mark = rig.mark()
    rig.sim.faults.clear()
    for source in SOURCES:
        await recovered(rig, source, since=mark, timeout=30)
    await rig.wait_events(1, since=mark, where=lambda r: not r["type"].startswith("source."))

    for source in SOURCES:
        assert len(of_type(rig, "source.unreachable", source)) == 1
        assert len(of_type(rig, "source.recovered", source)) == 1
        assert len(daemon.named("source.down", source=source)) == 1
        assert len(daemon.named("source.recovered", source=source)) == 1
    assert daemon.running
    assert not rig.false_offline(), "an API problem is not printers going offline"
    await rig.verify()


async def test_malformed_records_are_skipped_and_truncated_json_is_an_outage(
    make_rig: RigFactory,
) -> None:
    """Broken records are skipped, logged (``poll.records_skipped``) and counted
    (``printfleet_records_skipped_total``) while the rest of the fleet is still reported; a
    truncated body is a ``bad_response`` outage, not a crash."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    fleet = {serial for vendor in VENDOR_OF.values() for serial in rig.sim.serials(vendor)}
    # One real printer per vendor whose own record turns unreadable, plus broken extra records.
    broken = {vendor: rig.sim.serials(vendor)[0] for vendor in VENDOR_OF.values()}
    mark = rig.mark()
    for vendor, serial in broken.items():
        faults = rig.sim.faults.for_vendor(vendor)
        faults.malformed_records = 2
        faults.malformed_serials = {serial}
    for source in SOURCES:
        await rig.wait_log("poll.records_skipped", source=source, since=mark, count=2)
    # The rest of the fleet is still reported: changes of other printers keep coming ...
    await rig.wait_events(
        2, since=rig.mark(), where=lambda r: r["subject"] not in broken.values(), timeout=30
    )
    logged = {
        s: sum(r["count"] for r in daemon.named("poll.records_skipped", source=s)) for s in SOURCES
    }
    metrics = rig.metrics_text()
    for source in SOURCES:
        counted = metric_value(metrics, "printfleet_records_skipped_total", source=source)
        assert counted >= logged[source] > 0, (source, counted, logged[source])
        # ... and every healthy printer is still in the fleet view.
        for serial in rig.sim.serials(VENDOR_OF[source]):
            if serial not in broken.values():
                assert metric_value(
                    metrics, "printfleet_printer_info", source=source, serial=serial
                ), f"{source}/{serial} dropped from the fleet"
    # A record that cannot be read is not a new printer, nor a printer that left, went offline
    # or changed to an unknown status: it says nothing, and the last good state stands.
    invented = [r["subject"] for r in of_type(rig, "printer.added") if r["subject"] not in fleet]
    assert not invented, f"broken records announced as printers: {invented}"
    assert rig.mqtt is not None
    misread = [
        (e["type"], e["subject"], e["data"].get("changes"))
        for e in rig.mqtt.events()
        if e["subject"] in broken.values()
        and (
            e["type"] in ("printer.removed", "printer.offline")
            or (e["type"] == "printer.status_changed" and _to(e, "status") == "UNKNOWN")
        )
    ]
    assert not misread, f"an unreadable record read as a change: {misread}"

    rig.sim.faults.clear()
    rig.sim.faults.formlabs.truncate_rate = 1.0
    mark = rig.mark()
    down = await rig.wait_log("source.down", source="lab", since=mark, timeout=15)
    assert down[0]["error"] == "bad_response"
    rig.sim.faults.clear()
    await recovered(rig, "lab", since=mark)
    assert daemon.running
    assert len(of_type(rig, "source.unreachable", "lab")) == 1
    assert not of_type(rig, "source.unreachable", "factory")
    await rig.verify()


async def test_token_expiry_mid_run_renews_once(make_rig: RigFactory) -> None:
    """Tokens invalidated by the vendor mid-run are renewed once per source, with no
    ``source.auth_failed`` and no failed poll."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    since = rig.sim.now()
    mark = rig.mark()
    rig.sim.expire_tokens()
    for source in SOURCES:
        await rig.wait_log("source.auth_rejected", source=source, since=mark, timeout=15)
    await rig.wait_log("source.auth_renewed", source="lab", since=mark, timeout=15)
    for vendor in VENDOR_OF.values():
        await rig.until(
            lambda vendor=vendor: answered_after_401(rig, vendor, since),
            timeout=15,
            what=f"a successful {vendor} request after the 401",
        )
    await rig.wait_events(1, since=mark, timeout=30)

    for source in SOURCES:
        assert len(daemon.named("source.auth_rejected", source=source)) == 1
    assert len(daemon.named("source.auth_renewed", source="lab")) == 1
    # No gap: the request that got the 401 was retried with a fresh token at once.
    for vendor in VENDOR_OF.values():
        served = rig.requests_since(vendor, since)
        rejected = [i for i, r in enumerate(served) if r.status == 401]
        assert len(rejected) == 1, f"{vendor}: {[(r.path, r.status) for r in served]}"
        retry = next(r for r in served[rejected[0] + 1 :] if "/o/token/" not in r.path)
        assert retry.status == 200
        gap = (retry.time - served[rejected[0]].time).total_seconds() / rig.options.speed
        assert gap < 1.0, f"{vendor}: {gap:.2f}s between the 401 and the retry"
    assert not of_type(rig, "source.auth_failed")
    assert not daemon.named("source.down")
    assert daemon.running
    await rig.verify()


async def test_vendor_clock_skew_does_not_look_offline(make_rig: RigFactory) -> None:
    """A vendor clock 30 minutes behind ours (heartbeats look 30 minutes old on our clock)
    makes no printer look offline: staleness is judged on the vendor's clock (``Date``)."""
    rig = await make_rig(
        sim_start=datetime.now(UTC) - timedelta(minutes=30),
        speed=60.0,
        formlabs_printers=8,
        carbon_printers=2,
    )
    daemon = await rig.start_daemon()
    await rig.wait_events(3, timeout=30)
    metrics = rig.metrics_text()
    episodes = rig.episodes()
    now = rig.sim.now()
    settle = timedelta(seconds=8 * rig.options.speed)  # offline_after + a few polls, simulated
    really_online = [
        s
        for s in rig.sim.serials("formlabs")
        if not any(a <= now and (b is None or b > now - settle) for a, b in episodes.get(s, []))
    ]
    assert really_online, "no printer to judge"
    looks_down = [
        s
        for s in really_online
        if metric_value(metrics, "printfleet_printer_up", source="lab", serial=s) == 0
    ]
    problems = [f"printer_up 0 for {s}" for s in looks_down] + rig.false_transitions()
    assert date_header(rig), "the simulator must send Date (the vendor's clock) for this case"
    assert not problems, problems
    assert daemon.running
    await rig.verify()


# ------------------------------------------------------------------------------- sinks


async def test_broker_restart_loses_nothing_and_republishes_state(make_rig: RigFactory) -> None:
    """Events detected while the broker is down arrive after it restarts, in order per
    printer, and every printer's retained state is published again on reconnect."""
    rig = await make_rig(persistent_session=True)
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    assert rig.broker is not None
    assert rig.mqtt is not None
    printers = {m.topic for m in rig.mqtt.messages if m.topic.endswith("/state")}
    assert printers, "no retained printer state before the outage"

    rig.broker.stop()
    await rig.wait_log("mqtt.disconnected", timeout=15)
    mark = rig.mark()
    await rig.wait_events(4, since=mark, timeout=30)
    outage = [r["id"] for r in daemon.log[mark:] if is_event_line(r)]
    assert not set(outage) & rig.mqtt_ids()
    rig.broker.start()
    restarted = asyncio.get_running_loop().time()
    reconnected = await rig.wait_log("mqtt.connected", reconnect=True, since=mark, timeout=30)
    await rig.wait_all_delivered(timeout=45)
    delay = asyncio.get_running_loop().time() - restarted
    assert set(outage) <= rig.mqtt_ids()

    # Every printer's state again, changed or not: a restarted broker may have lost them.
    since = _wall(reconnected[0])
    await rig.until(
        lambda: printers <= {m.topic for m in rig.mqtt.messages if m.seen >= since},
        timeout=15,
        what="every printer's retained state republished after the reconnect",
    )
    assert status_is(rig, b"online")
    assert daemon.running
    await rig.verify()
    print(f"outage events delivered {delay:.1f}s after the broker came back")


async def test_receiver_outage_then_everything_arrives(make_rig: RigFactory) -> None:
    """A receiver answering 503 and then refusing connections gets every delivery once it is
    back, in order per printer, and the outbox ends empty (``printfleet outbox list``)."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    before = rig.receiver.refused()
    rig.receiver.fail(503)
    mark = rig.mark()
    await rig.wait_events(2, since=mark, where=lambda r: hook_wanted(r["type"]), timeout=30)
    await rig.until(
        lambda: rig.receiver.refused() >= before + 2,
        timeout=20,
        what="the receiver to turn deliveries away",
    )
    await rig.wait_log("outbox.sink_failing", sink=HOOK, timeout=10)
    await rig.receiver.down()
    mark = rig.mark()
    await rig.wait_events(2, since=mark, where=lambda r: hook_wanted(r["type"]), timeout=30)
    await rig.wait_log("outbox.batch", sink=HOOK, since=mark, timeout=20)
    rig.receiver.recover()
    await rig.receiver.up()
    await rig.wait_all_delivered(timeout=60)
    await rig.wait_log("outbox.sink_recovered", sink=HOOK, timeout=10)
    await rig.verify()

    assert await daemon.terminate() == 0
    await rig.verify(delivered_timeout=5)
    listing = rig.cli("outbox", "list", "--sink", HOOK)
    assert listing.returncode == 0, listing.stderr
    assert "no pending deliveries" in listing.stdout, listing.stdout


# ------------------------------------------------------------------------------ process


async def test_sigkill_mid_burst_then_restart(make_rig: RigFactory) -> None:
    """``kill -9`` in the middle of a burst loses nothing that was detected, and the restarted
    daemon neither re-announces old transitions nor reuses an id for a new outage."""
    rig = await make_rig()
    first = await rig.start_daemon()
    await busy_fleet(rig)
    rig.receiver.fail(503, retry_after=1)  # deliveries pile up in the outbox
    rig.sim.faults.formlabs.outage = "503"
    await rig.wait_log("source.down", source="lab", timeout=20)
    # Changes accumulate during the outage and come out in one burst on recovery.
    await rig.until(
        lambda: sum(1 for t in rig.sim.ground_truth if t.vendor == "formlabs") >= 1,
        timeout=10,
        what="fleet changes during the outage",
    )
    mark = rig.mark()
    rig.sim.faults.clear()
    await rig.wait_log("source.recovered", source="lab", since=mark, timeout=20)
    assert await first.kill() == -signal.SIGKILL
    assert rig.mqtt is not None
    await rig.until(
        lambda: status_is(rig, b"offline"),
        timeout=60,
        what="the broker to publish the Last Will (offline)",
    )

    rig.receiver.recover()
    second = await rig.start_daemon()
    await rig.wait_all_delivered(timeout=45)
    assert not second.named("store.replaced")

    # A new outage after the restart is a new event, not a redelivery of the old one.
    rig.sim.faults.formlabs.outage = "503"
    mark = rig.mark()
    await rig.wait_log("source.down", source="lab", since=mark, timeout=20)
    rig.sim.faults.clear()
    await recovered(rig, "lab", since=mark)
    # A kill that lands between the commit and the event's log line leaves the event persisted
    # (the restarted daemon delivers it) but unlogged, so count what reached MQTT too.
    await rig.until(
        lambda: len(detected_ids(rig, "source.recovered", "lab")) >= 2,
        timeout=20,
        what="both recoveries detected",
    )
    unreachable = detected_ids(rig, "source.unreachable", "lab")
    recoveries = detected_ids(rig, "source.recovered", "lab")
    assert len(unreachable) == 2, f"two outages, ids {unreachable}"
    assert len(recoveries) == 2, f"two recoveries, ids {recoveries}"
    await rig.verify()
    # Each print that ended is in the history once, across the kill (keyed by print id).
    await rig.until(lambda: not rig.history_mismatch(), timeout=20, what="print history")
    print(f"print history: {rig.history_checked} records match the outcome events")


@pytest.mark.parametrize("mount", [True, False], ids=["tmpfs-if-root", "rlimit"])
async def test_disk_full_keeps_running_and_delivers_after_space_returns(
    make_rig: RigFactory, mount: bool
) -> None:
    """A full state disk logs ``store.commit_failed`` once, the daemon keeps running with the
    changes held in memory, and after ``store.recovered`` every held delivery goes out."""
    rig = await make_rig()
    rig.disk = DiskFull(rig.state_dir, mount=mount)
    rig.disk.prepare()
    daemon = await rig.start_daemon()
    rig.disk.pid = daemon.pid
    await busy_fleet(rig)
    mark = rig.mark()
    rig.disk.fill()
    failed = await rig.wait_log("store.commit_failed", since=mark, timeout=20)
    assert str(rig.state_dir) in failed[0]["error"], failed[0]
    held = await rig.wait_events(3, since=rig.mark(), timeout=30)
    assert [r["persisted"] for r in held] == [False] * len(held), "held in memory, and said so"
    assert len(daemon.named("store.commit_failed")) == 1, "logged once per failing streak"
    assert daemon.running

    rig.disk.free()
    await rig.wait_log("store.recovered", since=mark, timeout=20)
    assert daemon.running
    await rig.verify(delivered_timeout=45)
    assert {r["id"] for r in held} <= rig.mqtt_ids()
    # Print records held in memory with the deliveries were written with them.
    await rig.until(lambda: not rig.history_mismatch(), timeout=20, what="print history")
    print(f"print history: {rig.history_checked} records match the outcome events")
    print(f"disk full simulated with {rig.disk.method}: {failed[0]['error']}")


async def test_sighup_with_broken_rule_pack_keeps_old_rules(make_rig: RigFactory) -> None:
    """SIGHUP with a broken pack logs ``reload.rejected`` naming the file and keeps routing
    with the old rules; a fixed pack and another SIGHUP logs ``reload.done``."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    rig.write_pack(rule_pack() + "colour = 'blue'\n")
    mark = rig.mark()
    daemon.send(signal.SIGHUP)
    rejected = await rig.wait_log("reload.rejected", since=mark, timeout=10)
    assert str(rig.pack_path) in " ".join(rejected[0]["problems"]), rejected[0]
    assert "colour" in " ".join(rejected[0]["problems"])
    # The old rules still route events to the receiver.
    fresh = await rig.wait_events(
        1, since=rig.mark(), where=lambda r: hook_wanted(r["type"]), timeout=30
    )
    await rig.until(
        lambda: fresh[0]["id"] in rig.hook_ids(),
        timeout=15,
        what="an event detected after the rejected reload at the receiver",
    )

    rig.write_pack(rule_pack("fault-suite-v2"))
    mark = rig.mark()
    daemon.send(signal.SIGHUP)
    done = await rig.wait_log("reload.done", since=mark, timeout=10)
    assert done[0]["rules"] == 1
    fresh = await rig.wait_events(
        1, since=rig.mark(), where=lambda r: hook_wanted(r["type"]), timeout=30
    )
    await rig.until(
        lambda: fresh[0]["id"] in rig.hook_ids(),
        timeout=15,
        what="an event detected after the reload at the receiver",
    )
    assert daemon.running
    await rig.verify()


async def test_start_up_failures_exit_with_documented_codes(make_bare_rig: RigFactory) -> None:
    """Rejected credentials exit 3; a broken config or rule pack exits 2 naming file and key."""
    rig = await make_bare_rig(carbon_printers=0)
    wrong = rig.workdir / "wrong.secret"
    wrong.write_text("not-the-secret\n")
    # Each its own state directory: three daemons starting at once on one database would race
    # (see the report: schema migration is not safe against a concurrent first start).
    bad_auth = rig.write_config(
        rig.config_text(secret_file=str(wrong), state_dir=rig.workdir / "state-auth"),
        rig.workdir / "bad-auth.toml",
    )
    bad_config = rig.write_config(
        rig.config_text(state_dir=rig.workdir / "state-config").replace(
            'interval = "1s"', 'interval = "soon"', 1
        ),
        rig.workdir / "bad-config.toml",
    )
    bad_pack = rig.workdir / "rules" / "broken.toml"
    bad_pack.write_text('[[rule]]\nname = "x"\non = ["print.exploded"]\nnotify = ["hook"]\n')
    bad_rules = rig.write_config(
        rig.config_text(state_dir=rig.workdir / "state-rules").replace(
            str(rig.pack_path), str(bad_pack)
        ),
        rig.workdir / "bad-rules.toml",
    )
    runs = [await rig.spawn(path) for path in (bad_auth, bad_config, bad_rules)]
    auth, config, rules = await asyncio.gather(*(run.wait_exit(30) for run in runs))

    assert auth == 3, runs[0].tail()
    assert runs[0].named("daemon.auth_rejected", source="lab")
    assert config == 2, runs[1].tail()
    stderr = "\n".join(runs[1].stderr)
    assert str(bad_config) in stderr, stderr
    assert "poll.interval" in stderr, stderr
    assert rules == 2, runs[2].tail()
    stderr = "\n".join(runs[2].stderr)
    assert str(bad_pack) in stderr, stderr
    assert "print.exploded" in stderr, stderr


async def test_sigterm_drains_announces_offline_and_keeps_pending(make_rig: RigFactory) -> None:
    """SIGTERM exits 0, publishes ``offline`` retained on ``printfleet/status``, and what the
    receiver did not take stays in the outbox for the next start."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await busy_fleet(rig)
    rig.receiver.fail(503)
    mark = rig.mark()
    await rig.wait_events(2, since=mark, where=lambda r: hook_wanted(r["type"]), timeout=30)
    await rig.wait_log("outbox.sink_failing", sink=HOOK, timeout=15)

    assert await daemon.terminate() == 0
    assert daemon.named("daemon.stopped")
    assert daemon.named("mqtt.offline_announced")
    drained = {r["sink"]: r for r in daemon.named("outbox.drained")}
    assert drained[HOOK]["pending"] > 0
    assert rig.mqtt is not None
    await rig.until(
        lambda: status_is(rig, b"offline"),
        timeout=10,
        what="printfleet/status offline",
    )
    # Still there for anyone subscribing later: the message is retained.
    late = await _retained(rig, f"{PREFIX}/status")
    assert late == b"offline"

    with Store.open(rig.state_dir / FILENAME) as store:
        pending = {e.delivery.event_id for e in store.list_entries(sink=HOOK, limit=10_000)}
    undelivered = {r["id"] for r in rig.logged_for_hook()} - rig.hook_ids()
    assert undelivered, "the receiver was failing: something must be pending"
    assert undelivered <= pending
    listing = rig.cli("outbox", "list", "--sink", HOOK)
    assert listing.returncode == 0, listing.stderr
    assert "no pending deliveries" not in listing.stdout
    # MQTT had nothing in the way: every event reached the broker before the exit.
    assert {r["id"] for r in rig.logged()} <= rig.mqtt_ids()


# ------------------------------------------------------------------------------ helpers


def _to(event: dict[str, Any], field: str) -> Any:
    """The new value of ``field`` in a CloudEvent's ``data.changes``."""
    change = ((event.get("data") or {}).get("changes") or {}).get(field) or {}
    return change.get("to")


def _wall(record: dict[str, Any]) -> float:
    stamp = str(record["timestamp"]).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def _retained(rig: Rig, topic: str) -> bytes | None:
    """What a new subscriber gets as the retained message of ``topic``."""
    import aiomqtt

    assert rig.broker is not None
    async with aiomqtt.Client(rig.broker.host, rig.broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                return bytes(message.payload)  # type: ignore[arg-type]
    return None
