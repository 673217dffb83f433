"""The hostile suite (issue 12): what a vendor, a receiver, a name or a file can send must never
stop the daemon.

Each case drives the real ``printfleet run`` against the simulator acting as a hostile vendor
(raw records spliced into ``/printers/``, forged token bodies, 1 GB, endless and trickled bodies,
a forged ``Date``), a hostile webhook receiver (slow loris, a 1 GB reply), hostile printer names
and hostile secret files, and asserts what users notice: the process keeps running (or exits
with the documented code for start-up problems), the other printers and sources keep producing
events, no false ``printer.offline``, bounded memory (:data:`RSS_CAP`), and the log names what
happened with the event names of the issue-12 contract.

Names the daemon must produce (topic levels, the state-dir lock message) are computed here from
the contract's rules, independently of ``printfleet.core.identifiers``, so the test is an oracle
and not a copy of the code under test.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import resource
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from printfleet.simulator.faults import NOW_MARK
from tests.faults.conftest import RigFactory
from tests.faults.harness import (
    PREFIX,
    SLACK,
    DaemonProcess,
    Rig,
    free_port,
    is_event_line,
    metric_value,
    rule_pack,
)
from tests.receiver import Reply

pytestmark = pytest.mark.fault

#: Peak RSS allowed for the daemon in every case. A healthy daemon with this rig's 14
#: printers peaks near 60-70 MiB; 300 MiB leaves room for Python and SQLite caches while
#: catching any body read whole (the 1 GB cases would peak above 1 GiB).
RSS_CAP = 300 * 2**20
DEEP = 100_000  # nesting levels: far past Python's recursion limit (1,000)
NINE_NINE_NINE_NINE = "Fri, 31 Dec 9999 23:59:59 GMT"
FORMLABS_API = "/developer/v1"
POLL_FAILURES = "printfleet_poll_failures_total"
API_REQUESTS = "printfleet_api_requests_total"
#: Tries of one vendor request before the poll fails (the client's retry policy).
TOKEN_ATTEMPTS = 4


# ------------------------------------------------------------------------------- oracles


def topic_level(text: str) -> str:
    """The MQTT topic level of a serial under the issue-12 contract (independent oracle).

    Percent-encode (UTF-8, upper-case) ``% / + # ~``, C0 controls, DEL, C1 controls and lone
    surrogates (``surrogatepass`` bytes); over 128 bytes: the first 100 bytes (code-point
    boundary) + ``~`` + 16 hex of SHA-256 of the original's surrogatepass UTF-8.
    """
    parts = []
    for char in text:
        point = ord(char)
        if (
            char in "%/+#~"
            or point <= 0x1F
            or point == 0x7F
            or 0x80 <= point <= 0x9F
            or 0xD800 <= point <= 0xDFFF
        ):
            parts.append("".join(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            parts.append(char)
    level = "".join(parts)
    raw = level.encode("utf-8")
    if len(raw) <= 128:
        return level
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return raw[:100].decode("utf-8", "ignore") + "~" + digest


def state_topic(source: str, serial: str) -> str:
    return f"{PREFIX}/{source}/{topic_level(serial)}/state"


def nested(levels: int) -> str:
    """A JSON value nested ``levels`` deep (as text: no Python structure could hold it)."""
    return "[" * levels + "]" * levels


# ------------------------------------------------------------------------------- helpers


def formlabs_token(rig: Rig) -> str:
    response = httpx.post(
        f"{rig.sim.formlabs_url}{FORMLABS_API}/o/token/",
        data={
            "grant_type": "client_credentials",
            "client_id": rig.sim.formlabs_client_id,
            "client_secret": rig.sim.formlabs_client_secret,
        },
        timeout=5,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def formlabs_get(rig: Rig, path: str) -> Any:
    """A document of the simulated Formlabs API, fetched like a client would."""
    response = httpx.get(
        f"{rig.sim.formlabs_url}{FORMLABS_API}{path}",
        headers={"Authorization": f"Bearer {formlabs_token(rig)}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def formlabs_printer(
    rig: Rig, serial: str, *, alias: str | None = None, run: dict[str, Any] | None = None
) -> str:
    """A valid Formlabs printer record (raw JSON text) with ``serial``, heartbeating at the
    simulator's clock (``@now@``), idle or printing ``run``; built from a real record."""
    template = copy.deepcopy(formlabs_get(rig, "/printers/")[0])
    template["serial"] = serial
    template["alias"] = alias if alias is not None else f"hostile {len(serial)}"
    status = template["printer_status"]
    status["status"] = "PRINTING" if run is not None else "IDLE"
    status["last_pinged_at"] = NOW_MARK
    status["last_modified"] = NOW_MARK
    status["current_print_run"] = run
    template["previous_print_run"] = {}
    # ensure_ascii: a lone surrogate goes out as the JSON escape "\ud800", as a vendor
    # serializing a broken string would send it.
    return json.dumps(template, ensure_ascii=True)


def running_print(rig: Rig, guid: str, *, printer: str, created_at: str) -> dict[str, Any]:
    """A print run record as ``current_print_run`` of ``printer`` carries it, with its own id
    and times."""
    runs = formlabs_get(rig, "/prints/?per_page=5")["results"]
    assert runs, "the simulator has no print run to copy"
    record: dict[str, Any] = copy.deepcopy(runs[0])
    record.update(
        guid=guid,
        printer=printer,
        name="hostile-print",
        status="PRINTING",
        created_at=created_at,
        print_started_at=created_at,
        print_finished_at=None,
    )
    return record


def list_requests(rig: Rig, vendor: str, since: datetime) -> int:
    """How many printer-list requests the simulator answered for ``vendor`` since ``since``."""
    end = "/printers/" if vendor == "formlabs" else "/printers"
    return sum(
        1 for r in rig.requests_since(vendor, since) if r.path.split("?", 1)[0].endswith(end)
    )


async def polled(rig: Rig, vendor: str, *, times: int, since: datetime, timeout: float) -> None:
    """Wait until the daemon asked ``vendor`` for its printer list ``times`` times."""
    daemon = rig.daemon
    await rig.until(
        lambda: list_requests(rig, vendor, since) >= times or not daemon.running,
        timeout=timeout,
        what=f"{times} {vendor} printer-list requests",
    )
    assert daemon.running, f"the daemon exited with {daemon.returncode}{daemon.tail()}"


async def keeps_producing(
    rig: Rig,
    *sources: str,
    since: int,
    ignore: frozenset[str] = frozenset(),
    timeout: float = 40.0,
    daemon: DaemonProcess | None = None,
) -> None:
    """Each of ``sources`` detects a change of a real printer after log index ``since`` of
    ``daemon`` (default: the latest), failing at once, with the log tail, if it exits meanwhile."""
    daemon = daemon or rig.daemon
    for source in sources:

        def changed(source: str = source) -> bool:
            return any(
                is_event_line(r)
                and r["source"] == source
                and r["subject"] not in ignore
                and not r["type"].startswith("source.")
                for r in daemon.log[since:]
            )

        await rig.until(
            lambda: changed() or not daemon.running,
            timeout=timeout,
            what=f"a change of a {source} printer",
        )
        assert daemon.running, f"the daemon exited with {daemon.returncode}{daemon.tail()}"


def still_alive(daemon: DaemonProcess, rig: Rig) -> None:
    """The process runs, nothing was fatal, no false offline, memory bounded."""
    assert daemon.running, f"the daemon exited with {daemon.returncode}{daemon.tail()}"
    assert not daemon.named("cli.crashed"), f"cli.crashed logged{daemon.tail()}"
    false = rig.false_offline()
    assert not false, f"printer.offline the ground truth does not back: {false}{daemon.tail()}"
    peak = daemon.peak_rss()
    assert peak < RSS_CAP, (
        f"peak RSS {peak / 2**20:.0f} MiB, cap {RSS_CAP / 2**20:.0f} MiB{daemon.tail()}"
    )
    print(f"peak RSS {peak / 2**20:.0f} MiB (cap {RSS_CAP / 2**20:.0f} MiB)")


def run_cli(
    *args: str, timeout: float = 20.0, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``printfleet ARGS`` to completion; a hang past ``timeout`` fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "printfleet", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=preexec_fn,
            env={k: v for k, v in os.environ.items() if k != "PRINTFLEET_CONFIG"},
        )
    except subprocess.TimeoutExpired as err:
        command = " ".join(args)
        raise AssertionError(f"printfleet {command} still running after {timeout:g}s") from err


async def retained_under(
    rig: Rig, pattern: str, done: Callable[[dict[str, bytes]], bool], timeout: float = 15.0
) -> dict[str, bytes]:
    """Retained messages under ``pattern`` as a new subscriber gets them, once ``done``."""
    assert rig.broker is not None
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(rig.broker.host, rig.broker.port) as client:
        await client.subscribe(pattern, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    found[message.topic.value] = bytes(message.payload)  # type: ignore[arg-type,unused-ignore]
                    if done(found):
                        break
        except TimeoutError:
            pass
    return found


# ------------------------------------------------------------------- hostile vendor records


#: One hostile printer record per case: (id, serial). ``deep-record`` also carries a field
#: nested 100,000 levels deep; the others are valid records with a hostile serial.
RECORD_CASES: list[tuple[str, str]] = [
    ("deep-record", "Deep-Nested"),
    ("lone-surrogate", "\ud800X"),
    ("70000-char-serial", "A" * 70_000),
    ("control-char", "Ctl\x01Serial"),
]


@pytest.mark.parametrize(("case", "serial"), RECORD_CASES, ids=[c for c, _ in RECORD_CASES])
async def test_hostile_printer_record_is_contained(
    make_rig: RigFactory, case: str, serial: str
) -> None:
    """One hostile record in ``/printers/`` (100,000-deep nesting, a lone surrogate, a 70,000
    character serial, U+0001) crashes nothing: both sources keep producing events, MQTT stays
    connected, a readable record is published under its encoded topic level, a too-deep one is
    a skipped record (``poll.records_skipped``)."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    text = formlabs_printer(rig, serial)
    if case == "deep-record":
        text = text[:-1] + f', "extra": {nested(DEEP)}' + "}"
    since, mark = rig.sim.now(), rig.mark()
    connected = len(daemon.named("mqtt.connected"))
    rig.sim.faults.formlabs.extra_printers = [text]

    await polled(rig, "formlabs", times=3, since=since, timeout=30)
    await keeps_producing(rig, "lab", "factory", since=mark, ignore=frozenset({serial}))
    still_alive(daemon, rig)
    assert not daemon.named("task.crashed"), f"a task died of the record{daemon.tail()}"
    if case == "deep-record":
        await rig.wait_log("poll.records_skipped", source="lab", since=mark, timeout=10)
        assert rig.mqtt is not None
        assert not rig.mqtt.on(state_topic("lab", serial)), "a too-deep record is skipped"
        return
    assert rig.mqtt is not None
    topic = state_topic("lab", serial)
    await rig.until(
        lambda: rig.mqtt is not None and rig.mqtt.on(topic),
        timeout=20,
        what=f"retained state on {topic[:160]!r}",
    )
    payload = json.loads(rig.mqtt.on(topic)[-1].payload)
    assert payload.get("serial") == serial, "the real serial stays in the payload"
    assert len(daemon.named("mqtt.connected")) == connected, (
        f"the MQTT connection was dropped and re-made{daemon.tail()}"
    )
    dropped = [r for r in daemon.log[mark:] if r.get("event") == "mqtt.disconnected"]
    assert not dropped, f"MQTT disconnected after the record arrived{daemon.tail()}"
    await rig.verify()


async def test_ancient_print_vanishing_is_contained(make_rig: RigFactory) -> None:
    """A running print whose ``created_at`` is 0001-01-01 and that then vanishes does not
    crash the daemon (no ``OverflowError`` in the history lookup): both sources keep
    producing events."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    serial = "Ancient-Print"
    guid = "00000000-0000-0000-0000-000000000001"
    run = running_print(rig, guid, printer=serial, created_at="0001-01-01T00:00:00Z")
    since = rig.sim.now()
    rig.sim.faults.formlabs.extra_printers = [formlabs_printer(rig, serial, run=run)]
    await polled(rig, "formlabs", times=2, since=since, timeout=20)
    await rig.wait_events(
        1, where=lambda r: r["subject"] == serial and r["type"] == "printer.added", timeout=20
    )
    # The print vanishes: the printer is idle and the run is in no list.
    since, mark = rig.sim.now(), rig.mark()
    rig.sim.faults.formlabs.extra_printers = [formlabs_printer(rig, serial)]
    await polled(rig, "formlabs", times=3, since=since, timeout=30)
    # The daemon did look the vanished print up (the window the OverflowError came from).
    await rig.until(
        lambda: (
            daemon.named("poll.crashed")
            or any(
                "/prints/" in r.path and f"printer={serial}" in r.path
                for r in rig.requests_since("formlabs", since)
            )
        ),
        timeout=20,
        what=f"the history lookup of {serial}'s vanished print",
    )
    assert not daemon.named("poll.crashed"), f"a poll died of the print{daemon.tail()}"
    await keeps_producing(rig, "lab", "factory", since=mark, ignore=frozenset({serial}))
    still_alive(daemon, rig)
    assert not daemon.named("task.crashed"), f"a task died of the print{daemon.tail()}"


async def test_colliding_serials_get_their_own_topics_and_ha_ids(make_rig: RigFactory) -> None:
    """Serials ``a/b``, ``a_b``, ``+`` and ``#`` are four printers on four state topics and four
    Home Assistant devices: none overwrites another's retained state."""
    rig = await make_rig(homeassistant_discovery=True)
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    serials = ["a/b", "a_b", "+", "#"]
    mark = rig.mark()
    rig.sim.faults.formlabs.extra_printers = [formlabs_printer(rig, s) for s in serials]
    topics = {s: state_topic("lab", s) for s in serials}
    assert len(set(topics.values())) == 4
    assert rig.mqtt is not None
    await rig.until(
        lambda: rig.mqtt is not None and all(rig.mqtt.on(t) for t in topics.values()),
        timeout=30,
        what=f"retained state on each of {sorted(topics.values())}",
    )
    for serial, topic in topics.items():
        payloads = {json.loads(m.payload).get("serial") for m in rig.mqtt.on(topic)}
        assert payloads == {serial}, f"{topic} carries states of {payloads}"
    levels = {topic_level(s) for s in serials}

    def all_devices(found: dict[str, bytes]) -> bool:
        return levels <= _ha_levels(found)

    configs = await retained_under(rig, "homeassistant/#", all_devices)
    assert levels <= _ha_levels(configs), (
        f"Home Assistant configs point at {sorted(_ha_levels(configs) & (levels | {'a', 'b'}))}, "
        f"want one device each for {sorted(levels)}"
    )
    nodes: dict[str, set[str]] = {}
    for topic, body in configs.items():
        if body:
            level = _ha_level(json.loads(body))
            if level in levels:
                nodes.setdefault(level, set()).add(topic.split("/")[2])
    assert all(len(v) == 1 for v in nodes.values()), nodes
    assert len({n for v in nodes.values() for n in v}) == 4, f"HA node ids shared: {nodes}"
    await keeps_producing(rig, "lab", "factory", since=mark, ignore=frozenset(serials))
    still_alive(daemon, rig)


def _ha_level(config: dict[str, Any]) -> str | None:
    """The serial topic level a Home Assistant discovery config reads its state from."""
    topic = str(config.get("state_topic", ""))
    parts = topic.split("/")
    return parts[2] if len(parts) >= 4 and parts[0] == PREFIX else None


def _ha_levels(found: dict[str, bytes]) -> set[str]:
    levels = set()
    for body in found.values():
        if body:
            level = _ha_level(json.loads(body))
            if level is not None:
                levels.add(level)
    return levels


def _slack_markup(value: Any) -> list[str]:
    """Every string of a Slack message that Slack parses for markup and mentions: all of them
    except the ``text`` of a ``plain_text`` text object, which Slack shows literally (Block Kit
    reference: text object), so escaping there would only show ``&lt;`` to people."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in _slack_markup(item)]
    if isinstance(value, dict):
        plain = value.get("type") == "plain_text"
        return [
            t
            for key, item in value.items()
            if not (plain and key == "text")
            for t in _slack_markup(item)
        ]
    return []


async def test_slack_text_does_not_ping_people(make_rig: RigFactory) -> None:
    """A printer named ``<!channel> <@U024BE7LH>`` reaches Slack escaped everywhere Slack
    parses markup, the top-level ``text`` included: nobody is pinged."""
    rig = await make_rig(slack=True)
    rig.write_pack(
        rule_pack()
        + '\n[[rule]]\nname = "added-to-slack"\non = ["printer.added"]\n'
        + f'notify = ["{SLACK}"]\ntitle = "{{printer.name}} joined"\n'
    )
    daemon = await rig.start_daemon()
    await rig.wait_events(1, timeout=30)
    alias = "<!channel> <@U024BE7LH>"
    rig.sim.faults.formlabs.extra_printers = [formlabs_printer(rig, "Mention-1", alias=alias)]
    await rig.until(
        lambda: any(b"U024BE7LH" in r.body for r in rig.slack.requests),
        timeout=30,
        what="the printer.added message at the Slack receiver",
    )
    body = next(r.body for r in rig.slack.requests if b"U024BE7LH" in r.body)
    message = json.loads(body)
    parsed = _slack_markup(message)
    unescaped = [m for m in ("<!channel>", "<@U024BE7LH>") if any(m in t for t in parsed)]
    assert not unescaped, f"Slack would ping for {unescaped}: text={message.get('text')!r}"
    assert "&lt;!channel&gt;" in str(message.get("text")), message.get("text")
    still_alive(daemon, rig)


# ------------------------------------------------------------------------ hostile token


TOKEN_CASES = {
    "deep-token": nested(DEEP),
    "non-ascii-token": json.dumps(
        {"access_token": "t\u00f6ken", "token_type": "Bearer", "expires_in": 3600},
        ensure_ascii=False,
    ),
}


@pytest.mark.parametrize("case", sorted(TOKEN_CASES))
async def test_hostile_token_response_is_a_source_failure(make_rig: RigFactory, case: str) -> None:
    """A token response nested 100,000 deep, or an ``access_token`` with a non-ASCII character,
    is a failure of that source (``source.down``), not of the daemon: the other source keeps
    producing events, and the source recovers once the vendor answers properly again."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    mark = rig.mark()
    rig.sim.faults.formlabs.token_body = TOKEN_CASES[case]
    rig.sim.expire_tokens()
    await rig.until(
        lambda: daemon.named("source.down", source="lab") or not daemon.running,
        timeout=20,
        what="source.down for lab",
    )
    assert daemon.running, f"the daemon exited with {daemon.returncode}{daemon.tail()}"
    down = daemon.named("source.down", source="lab")
    # Either way a response we cannot use (a contained crash counts as bad_response too).
    assert down[0]["error"] == "bad_response", down[0]
    await keeps_producing(rig, "factory", since=mark)
    still_alive(daemon, rig)
    assert not daemon.named("task.crashed"), f"a task died of the token{daemon.tail()}"
    rig.sim.faults.formlabs.token_body = None
    mark = rig.mark()
    await rig.wait_events(
        1, since=mark, where=lambda r: r["type"] == "source.recovered" and r["source"] == "lab"
    )
    still_alive(daemon, rig)


# ----------------------------------------------------------------------- hostile bodies


async def test_huge_and_endless_bodies_are_cut_off(make_rig: RigFactory) -> None:
    """A 1 GB ``/printers/`` body and then an endless one are cut off at
    ``[limits] response_max_size`` (1 MiB here, to keep the case fast): ``source.down
    error=bad_response``, memory stays under :data:`RSS_CAP`, the other source keeps
    producing events, and the source recovers when the vendor answers normally again."""
    rig = await make_rig(extra={"limits": {"response_max_size": "1MiB"}})
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    faults = rig.sim.faults.formlabs
    since, mark = rig.sim.now(), rig.mark()
    faults.huge_body_size = 1_000_000_000
    down = await rig.wait_log("source.down", source="lab", since=mark, timeout=30)
    assert down[0]["error"] == "bad_response", down[0]
    await polled(rig, "formlabs", times=2, since=since, timeout=30)
    still_alive(daemon, rig)

    faults.huge_body_size = 0
    failed = metric_value(rig.metrics_text(), POLL_FAILURES, source="lab", error="bad_response")
    faults.endless_body = True
    since = rig.sim.now()
    await polled(rig, "formlabs", times=2, since=since, timeout=30)
    await keeps_producing(rig, "factory", since=mark)
    still_alive(daemon, rig)
    # The endless body (no Content-Length) was streamed and cut at the size cap: the poll
    # failed as bad_response, and no request had to wait for the total deadline.
    metrics = rig.metrics_text()
    assert metric_value(metrics, POLL_FAILURES, source="lab", error="bad_response") > failed
    assert metric_value(metrics, API_REQUESTS, source="lab", code="timeout") == 0, (
        "the endless body ran into the deadline instead of the size cap"
    )

    faults.endless_body = False
    mark = rig.mark()
    await rig.wait_events(
        1, since=mark, where=lambda r: r["type"] == "source.recovered" and r["source"] == "lab"
    )
    still_alive(daemon, rig)
    await rig.verify()


async def test_trickling_vendor_hits_the_total_deadline_and_ready_does_not_wait(
    make_rig: RigFactory,
) -> None:
    """A vendor sending one byte every 0.5 s from the start does not keep the daemon from
    READY (``daemon.ready``), each request ends at the total deadline (``timeout = "2s"``,
    ``source.down``), the other source keeps producing events, and the source recovers."""
    rig = await make_rig()
    rig.sim.faults.formlabs.trickle_s = 0.5
    daemon = await rig.start_daemon(timeout=20)
    ready = daemon.named("daemon.ready")[0]["_seen"]
    await rig.wait_log("source.down", source="lab", timeout=20)
    down = daemon.named("source.down", source="lab")[0]["_seen"]
    # READY came before the first poll ended: it did not wait for it.
    assert ready < down, f"daemon.ready only after the first poll failed{daemon.tail()}"
    # The token request's attempts, each ended at the 2 s total deadline, with the backoff
    # between them (ceilings 0.5, 1, 2 s) + 2 s of slack: not the ~25 minutes a token
    # response would take at two bytes a second.
    bound = TOKEN_ATTEMPTS * 2.0 + sum(0.5 * 2**n for n in range(TOKEN_ATTEMPTS - 1)) + 2.0
    assert down - ready < bound, f"source.down {down - ready:.1f}s after ready{daemon.tail()}"
    timeouts = metric_value(rig.metrics_text(), API_REQUESTS, source="lab", code="timeout")
    assert timeouts >= 1, "the attempts did not end at the deadline"
    await keeps_producing(rig, "factory", since=0)
    still_alive(daemon, rig)
    rig.sim.faults.formlabs.trickle_s = 0.0
    await rig.wait_events(
        1, where=lambda r: r["type"] == "source.recovered" and r["source"] == "lab", timeout=40
    )
    still_alive(daemon, rig)


async def test_forged_date_header_is_not_trusted(make_rig: RigFactory) -> None:
    """After normal polls, responses dated 31 Dec 9999 are not trusted (``source.clock_untrusted``
    once per source) and turn no printer ``printer.offline``."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await rig.wait_events(3, timeout=30)
    mark = rig.mark()
    for vendor in ("formlabs", "carbon"):
        rig.sim.faults.for_vendor(vendor).date_header = NINE_NINE_NINE_NINE
    for source in ("lab", "factory"):
        untrusted = await rig.wait_log(
            "source.clock_untrusted", source=source, since=mark, timeout=20
        )
        assert untrusted[0]["limit_s"] == 86_400, untrusted[0]  # vendor_clock_skew = "1d"
    await keeps_producing(rig, "lab", "factory", since=mark)
    since = rig.sim.now()
    await polled(rig, "formlabs", times=3, since=since, timeout=20)
    still_alive(daemon, rig)
    for source in ("lab", "factory"):
        assert len(daemon.named("source.clock_untrusted", source=source)) == 1, (
            f"{source}: logged once until trusted again{daemon.tail()}"
        )
    await rig.verify()


# --------------------------------------------------------------------- hostile receiver


async def test_slow_loris_and_huge_replies_fail_only_that_delivery(make_rig: RigFactory) -> None:
    """A receiver answering one byte every 0.5 s, then one streaming 1 GB into its reply,
    blocks neither its sink (each attempt ends at the receiver's 2 s total deadline and is
    retried) nor MQTT, memory stays under :data:`RSS_CAP`, and everything arrives once the
    receiver behaves."""
    rig = await make_rig()
    daemon = await rig.start_daemon()
    await rig.wait_events(2, timeout=30)
    await rig.wait_all_delivered()
    rig.receiver.answer(Reply(trickle_s=0.5))
    before = len(rig.receiver.requests)
    mark = rig.mark()
    await rig.until(
        lambda: len(rig.receiver.requests) >= before + 3,
        timeout=30,
        what="three delivery attempts to the slow-loris receiver (one means it is stuck)",
    )
    await rig.wait_log("outbox.sink_failing", since=mark, timeout=15)
    fresh = await rig.wait_events(2, since=mark, timeout=30)
    await rig.until(
        lambda: {r["id"] for r in fresh} <= rig.mqtt_ids(),
        timeout=20,
        what="events detected meanwhile on MQTT",
    )
    still_alive(daemon, rig)

    rig.receiver.answer(Reply(stream_size=1_000_000_000))
    before = len(rig.receiver.requests)
    await rig.until(
        lambda: len(rig.receiver.requests) >= before + 2,
        timeout=30,
        what="two deliveries answered with a 1 GB reply",
    )
    still_alive(daemon, rig)
    rig.receiver.recover()
    await rig.verify(delivered_timeout=60)
    still_alive(daemon, rig)


# ---------------------------------------------------------------------------- MQTT ids


async def test_same_client_id_twice_backs_off_and_says_why(make_rig: RigFactory) -> None:
    """Two daemons configured with one MQTT client id on one broker log
    ``mqtt.session_taken_over`` and reconnect with backoff (at most a few attempts a second,
    not ~190), and both keep detecting changes."""
    rig = await make_rig(mqtt_client_id="printfleet-shared-id")
    first = await rig.start_daemon()
    other = rig.write_config(
        rig.config_text(state_dir=rig.workdir / "state-2", metrics_port=free_port()),
        rig.workdir / "second.toml",
    )
    second = await rig.spawn(other)
    await rig.until(
        lambda: any(d.named("mqtt.session_taken_over") for d in (first, second)),
        timeout=20,
        what="mqtt.session_taken_over in either daemon",
    )
    taken = next(r for d in (first, second) for r in d.named("mqtt.session_taken_over"))
    assert taken["client_id"] == "printfleet-shared-id", taken
    assert "client_id" in taken["hint"], taken
    broker = rig.broker
    assert broker is not None

    def broker_connects() -> int:
        """CONNECTs the broker accepted with the shared id (mosquitto's connection log)."""
        return broker.log.count(" as printfleet-shared-id ")

    start = len(first.log)
    connects_before = broker_connects()
    # Let both run through a stretch of real activity: eight changes detected by the first.
    await rig.until(
        lambda: len([r for r in first.log[start:] if is_event_line(r)]) >= 8,
        timeout=40,
        what="eight changes detected while the two fight over the session",
    )
    since = first.log[start]["_seen"]
    # Both keep detecting: the second (its own state directory) detects changes meanwhile too.
    await rig.until(
        lambda: any(is_event_line(r) and r["_seen"] >= since for r in second.log),
        timeout=20,
        what="a change detected by the second daemon while the two fight over the session",
    )
    span = time.time() - since
    # Counted by the broker: a connection taken over before the daemon logs mqtt.connected
    # (its first publish) still counts.
    connects = broker_connects() - connects_before
    print(f"{connects} MQTT connects of both daemons in {span:.1f}s of a shared client id")
    assert connects <= 3 * span + 4, f"{connects} MQTT connects in {span:.1f}s{first.tail()}"
    for daemon in (first, second):
        assert daemon.running, f"exited with {daemon.returncode}{daemon.tail()}"
        assert daemon.peak_rss() < RSS_CAP


async def test_default_client_ids_do_not_collide(make_rig: RigFactory) -> None:
    """Two daemons with the default MQTT client id on one host (different state directories)
    each keep one MQTT session: no takeover, no reconnects."""
    rig = await make_rig(mqtt_client_id=None)
    first = await rig.start_daemon()
    other = rig.write_config(
        rig.config_text(state_dir=rig.workdir / "state-2", metrics_port=free_port()),
        rig.workdir / "second.toml",
    )
    second = await rig.spawn(other)
    await rig.until(
        lambda: second.named("daemon.ready") and second.named("mqtt.connected"),
        timeout=30,
        what="the second daemon ready and connected",
    )
    start = len(first.log)
    await rig.until(
        lambda: len([r for r in first.log[start:] if is_event_line(r)]) >= 6,
        timeout=40,
        what="six changes detected with both daemons running",
    )
    for daemon in (first, second):
        assert daemon.running, f"exited with {daemon.returncode}{daemon.tail()}"
        assert len(daemon.named("mqtt.connected")) == 1, f"reconnected{daemon.tail(20)}"
        assert not daemon.named("mqtt.session_taken_over"), daemon.tail(20)


# ------------------------------------------------------------------------ state dir lock


async def test_second_daemon_on_one_state_dir_exits_1(make_rig: RigFactory) -> None:
    """A second ``printfleet run`` on a state directory in use exits 1 naming the directory and
    the first daemon's pid; the first keeps running, and ``snapshot`` still works."""
    rig = await make_rig()
    first = await rig.start_daemon()
    other = rig.write_config(rig.config_text(metrics_port=free_port()), rig.workdir / "second.toml")
    second = await rig.spawn(other)
    code = await second.wait_exit(20)
    expected = (
        f"state directory {rig.state_dir} is in use by another printfleet process (pid {first.pid})"
    )
    assert code == 1, f"exit {code}, want 1{second.tail()}"
    assert any(expected in line for line in second.stderr), f"want {expected!r}{second.tail()}"
    assert second.named("daemon.state_dir_locked"), second.tail()
    assert not second.named("daemon.ready"), "the second daemon must not start polling"
    # The second daemon exited: watch the first one's log, not the latest daemon's.
    await keeps_producing(rig, "lab", "factory", since=len(first.log), daemon=first)
    assert first.running
    snapshot = rig.cli("snapshot", "--source", "lab")
    assert snapshot.returncode == 0, snapshot.stderr


# ------------------------------------------------------------------------- secret files


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
async def test_secret_file_that_is_not_a_file_is_a_config_error(
    make_bare_rig: RigFactory, kind: str
) -> None:
    """A ``client_secret_file`` that is a FIFO or ``/dev/zero`` makes ``check`` and ``run``
    exit 2 at once, naming the file and saying it is not a regular file (no hang, no
    MemoryError traceback)."""
    rig = await make_bare_rig(carbon_printers=0)
    if kind == "fifo":
        secret = rig.workdir / "secret.fifo"
        os.mkfifo(secret)
    else:
        secret = Path("/dev/zero")
    config = rig.write_config(rig.config_text(secret_file=str(secret)), rig.workdir / "x.toml")
    # Today's code reads /dev/zero until MemoryError: cap the address space so that costs
    # 2 GiB at most on a shared machine, as systemd's MemoryMax would.
    checked = run_cli("check", "-c", str(config), preexec_fn=_memory_cap)
    assert checked.returncode == 2, (checked.returncode, checked.stdout, checked.stderr)
    assert str(secret) in checked.stdout + checked.stderr, checked.stderr
    assert "not a regular file" in checked.stdout + checked.stderr, checked.stderr
    assert "Traceback" not in checked.stderr, checked.stderr
    daemon = await rig.spawn(config, preexec_fn=_memory_cap)
    code = await daemon.wait_exit(20)
    assert code == 2, f"exit {code}{daemon.tail()}"
    assert any(str(secret) in line for line in daemon.stderr), daemon.tail()


async def test_world_readable_secret_file_is_warned_about(make_bare_rig: RigFactory) -> None:
    """A secret file readable by others starts anyway with ``config.secret_file_permissions``
    (the file, its mode, ``chmod 600``) at start-up, and ``check`` prints the same warning."""
    rig = await make_bare_rig(carbon_printers=0)
    secret = rig.workdir / "formlabs.secret"
    secret.chmod(0o644)
    checked = run_cli("check", "-c", str(rig.config_path))
    assert checked.returncode == 0, checked.stderr
    out = checked.stdout + checked.stderr
    assert str(secret) in out, out
    assert "chmod 600" in out, out
    daemon = await rig.start_daemon()
    warned = await rig.wait_log("config.secret_file_permissions", timeout=10)
    assert (rig.workdir / str(warned[0]["file"])).resolve() == secret.resolve(), warned[0]
    assert _octal(warned[0]["mode"]) == 0o644, warned[0]
    assert len(daemon.named("config.secret_file_permissions")) == 1, "once per file"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o644, "a warning, not a chmod"


def _memory_cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


def _octal(mode: object) -> int:
    """``0o644``, ``"0644"``, ``"644"`` or ``"0o644"`` as a number."""
    if isinstance(mode, int):
        return mode
    return int(str(mode).removeprefix("0o"), 8)
