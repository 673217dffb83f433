"""Everything the demo fleet emits, checked by the ecosystem's own validators.

The demo's fleet (``printfleet demo``: 16 Formlabs + 8 Carbon simulated printers, seed 7) is
watched for two simulated hours by the real sources and pollers over real HTTP, on a driven
fake clock (``tests.simtime``: nothing sleeps). Every event it produces is then:

* published as MQTT would publish it (``sinks.mqtt.topics.delivery_message``) and checked by
  the ``cloudevents`` SDK;
* rendered, bare (no rule text), into every receiver format and checked by that format's
  validator (``tests/ecosystem.py``);
* run through the shipped rule packs (``rules/*.toml``: rule-rendered titles and texts,
  hold-downs, resolved and grouped notifications), and every resulting delivery rendered into
  every format and checked again.

The counts are printed (``pytest -s``) in the form the issue asks for ("Teams 161/161").
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.ecosystem import (
    cloudevent_problems,
    discord_problems,
    slack_problems,
    teams_problems,
)
from tests.simtime import START, DrivenClock, SimDriver

from printfleet.config import Settings, SourceConfig
from printfleet.core.delivery import Delivery
from printfleet.core.events import ChangeEvent, encode_event, to_cloudevent
from printfleet.core.polling import PollPolicy
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.thresholds import DiffSettings
from printfleet.logs import forget_secrets
from printfleet.poller import Cycle, SourcePoller
from printfleet.rulepacks.loader import load_rule_set
from printfleet.simulator import Simulator, SimulatorConfig
from printfleet.sinks.formats import render
from printfleet.sinks.mqtt.topics import delivery_message
from printfleet.sources.factory import make_source

RULES = Path(__file__).resolve().parents[2] / "rules"
SPAN = timedelta(hours=2)
# The demo's fleet (cli/demo.py: 24 printers, two thirds Formlabs, seed 7).
DEMO = SimulatorConfig(formlabs_printers=16, carbon_printers=8, seed=7)

VALIDATORS = {
    "slack": slack_problems,
    "teams": teams_problems,
    "discord": discord_problems,
}


@dataclass(frozen=True, slots=True)
class Emitted:
    events: list[ChangeEvent]
    deliveries: list[Delivery]


async def watch_demo_fleet(tmp: Path) -> list[ChangeEvent]:
    """Every event the real pollers detect on the demo fleet in ``SPAN`` of simulated time."""
    clock = DrivenClock(START)
    events: list[ChangeEvent] = []

    async def handle(cycle: Cycle) -> None:
        events.extend(cycle.events)

    with Simulator(DEMO, now=clock.now) as sim:
        secrets = sim.write_carbon_secrets(tmp / "carbon-secrets.json")
        configs = [
            SourceConfig(
                name="lab",
                vendor="formlabs",
                client_id=sim.formlabs_client_id,
                client_secret=SecretStr(sim.formlabs_client_secret),
                base_url=sim.formlabs_url,
            ),
            SourceConfig(
                name="factory", vendor="carbon", secrets_file=secrets, base_url=sim.carbon_url
            ),
        ]
        async with httpx.AsyncClient() as client:
            sources = [
                make_source(c, client=client, clock=clock, offline_after=timedelta(minutes=5))
                for c in configs
            ]
            driver = SimDriver(clock)
            for source in sources:
                poller = SourcePoller(
                    source,
                    handle=handle,
                    clock=clock,
                    policy=PollPolicy(),
                    diff_settings=DiffSettings(),
                )
                driver.spawn(poller.run(), name=f"poller:{source.name}")
            try:
                await driver.run_until(START + SPAN)
            finally:
                await driver.aclose()
                for source in sources:
                    await source.aclose()
    return events


def rule_deliveries(events: list[ChangeEvent], tmp: Path) -> list[Delivery]:
    """What the shipped rule packs decide for ``events`` (timers run; pending ones flushed)."""
    url = tmp / "receiver.url"
    url.write_text("https://receiver.invalid/hook")
    settings = Settings.model_validate(
        {
            "daemon": {"state_dir": str(tmp / "state")},
            "receiver": [
                {"name": "ops-slack", "kind": "slack", "url_file": str(url)},
                {"name": "mes", "kind": "webhook", "url_file": str(url)},
            ],
            "rules": {"packs": [str(RULES / "*.toml")]},
        }
    )
    engine = RuleEngine(load_rule_set(settings))
    out: list[Delivery] = []

    def run_timers(until: datetime) -> None:
        while (deadline := engine.next_deadline()) is not None and deadline <= until:
            out.extend(engine.tick(deadline))

    now = START
    for event in sorted(events, key=lambda e: e.time):
        now = max(now, event.time)
        run_timers(now)
        out.extend(engine.process(to_cloudevent(event), now))
    run_timers(now + timedelta(days=8))  # the longest throttle/repeat in the shipped packs
    return out


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emitted]:
    """Two simulated hours of the demo fleet and the shipped packs' decisions (run once)."""
    tmp = tmp_path_factory.mktemp("demo-fleet")
    events = asyncio.run(watch_demo_fleet(tmp))
    yield Emitted(events, rule_deliveries(events, tmp))
    forget_secrets()


def check(payloads: list[Mapping[str, Any]]) -> dict[str, tuple[int, list[str]]]:
    """Per format: how many of ``payloads`` its validator accepts, and the first problems."""
    results: dict[str, tuple[int, list[str]]] = {}
    for kind in ("webhook", *VALIDATORS):
        ok, problems = 0, []
        for payload in payloads:
            body = render(kind, payload)[0]
            found = (
                cloudevent_problems(body)
                if kind == "webhook"
                else VALIDATORS[kind](json.loads(body))
            )
            ok += not found
            if found and len(problems) < 5:
                problems.append(f"{payload['event']['type']}: {found[0]}")
        results[kind] = (ok, problems)
    return results


def report(what: str, total: int, results: dict[str, tuple[int, list[str]]]) -> None:
    names = {"webhook": "CloudEvents", "slack": "Slack", "teams": "Teams", "discord": "Discord"}
    counts = ", ".join(f"{names[k]} {ok}/{total}" for k, (ok, _) in results.items())
    print(f"\n{what}: {counts}")


def test_the_demo_fleet_produces_a_varied_stream(emitted: Emitted) -> None:
    """The run is worth validating: both vendors, many event types, rule deliveries."""
    kinds = Counter(e.type.value for e in emitted.events)
    print(f"\n{len(emitted.events)} events, {len(emitted.deliveries)} rule deliveries: {kinds}")
    assert {e.source for e in emitted.events} == {"lab", "factory"}
    assert len(emitted.events) >= 100
    assert len(kinds) >= 8
    assert len(emitted.deliveries) >= 20
    assert any(d.payload.get("status") == "resolved" for d in emitted.deliveries)


def test_every_mqtt_event_payload_is_a_valid_cloudevent(emitted: Emitted) -> None:
    """Each event as MQTT publishes it is read by the cloudevents SDK without a problem."""
    bodies = [
        delivery_message(
            Delivery(
                id=e.id,
                sink="mqtt",
                event_id=e.id,
                key=f"{e.source}/{e.subject}",
                created_at=e.time,
                payload={"event": to_cloudevent(e)},
            ),
            prefix="printfleet",
            qos=1,
        )[1]
        for e in emitted.events
    ]
    assert bodies == [encode_event(e) for e in emitted.events]
    bad = [p for body in bodies if (p := cloudevent_problems(body))]
    print(f"\nMQTT CloudEvents {len(bodies) - len(bad)}/{len(bodies)}")
    assert bad == []


def test_every_event_renders_valid_bodies_in_every_format(emitted: Emitted) -> None:
    """Each event, bare, passes the CloudEvents, Slack, Teams and Discord validators."""
    payloads = [{"event": to_cloudevent(e), "status": "firing"} for e in emitted.events]
    results = check(payloads)
    report("events", len(payloads), results)
    assert {k: problems for k, (_, problems) in results.items() if problems} == {}
    assert all(ok == len(payloads) for ok, _ in results.values())


def test_every_rule_delivery_renders_valid_bodies_in_every_format(emitted: Emitted) -> None:
    """Each shipped-pack delivery (titles, texts, resolved, grouped) passes every validator."""
    payloads = [d.payload for d in emitted.deliveries]
    results = check(payloads)
    report("rule deliveries", len(payloads), results)
    assert {k: problems for k, (_, problems) in results.items() if problems} == {}
    assert all(ok == len(payloads) for ok, _ in results.values())
