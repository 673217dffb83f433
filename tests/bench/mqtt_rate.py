"""How many retained printer-state messages a running daemon publishes: count them at the broker.

:func:`count_retained` is what the scale benchmark and ``python -m tests.bench.mqtt_rate URL
SECONDS`` use to compare ``[mqtt] state_min_interval`` settings (and versions) by the traffic
Home Assistant and every other subscriber actually receives.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from printfleet.config.schema import parse_broker_url

#: Every per-printer topic: ``<prefix>/<source>/<serial>/state`` and the field topics below it
#: (``progress``, ``material_remaining/FRONT``, ...). It also matches ``<prefix>/events/a/b``,
#: which :func:`count_retained` leaves out; ``<prefix>/status`` has too few levels to match.
TOPIC = "printfleet/+/+/#"
EVENTS = "printfleet/events/"


@dataclass
class RetainedCount:
    """What :func:`count_messages` saw.

    Attributes:
        live: per-printer messages published while counting (what :func:`count_retained`
            returns); clears (empty payloads) included.
        state: of ``live``, those on ``.../state`` topics (one per printer publish).
        flood: messages that arrived with the retain flag set (not counted in ``live``; none
            is expected, as the subscription asks the broker not to replay its store).
        seconds: how long ``live`` was counted for.
        topics: how many distinct topics ``live`` fell on.
        by_field: ``live`` by what follows ``<source>/<serial>/`` (``state``, ``progress``...).
    """

    live: int = 0
    state: int = 0
    flood: int = 0
    seconds: float = 0.0
    topics: int = 0
    by_field: Counter[str] = field(default_factory=Counter)

    @property
    def per_second(self) -> float:
        return self.live / self.seconds if self.seconds else 0.0


async def count_messages(broker_url: str, seconds: float, topic: str = TOPIC) -> RetainedCount:
    """Subscribe to ``topic`` and count for ``seconds`` after the SUBACK (see
    :func:`count_retained` for what counts)."""
    broker = parse_broker_url(broker_url)
    count = RetainedCount()
    async with aiomqtt.Client(
        broker.host,
        broker.port,
        protocol=aiomqtt.ProtocolVersion.V5,
        identifier=f"printfleet-bench-rate-{time.monotonic_ns()}",
        # QoS 0: the broker forwards without waiting on us, so counting costs the daemon nothing.
    ) as client:
        # Retain Handling 2: no replay of the broker's store (~130,000 messages at 10,000
        # printers, which a Python reader takes minutes to drain), only what is published now.
        # QoS 0: the broker forwards without waiting on us, and does not drop QoS 0 messages
        # for a connected client the way it caps its queue of QoS 1 ones.
        await client.subscribe(topic, options=SubscribeOptions(qos=0, retainHandling=2))
        seen: set[str] = set()
        started = time.monotonic()
        deadline = started + seconds
        try:
            async with asyncio.timeout(seconds):
                async for message in client.messages:
                    name = message.topic.value
                    if name.startswith(EVENTS):
                        continue
                    if message.retain:
                        # MQTT forwards a live publish to an existing subscription with the
                        # retain flag cleared (no Retain As Published): a set flag is the
                        # broker replaying its store, which says nothing about the rate.
                        count.flood += 1
                        continue
                    count.live += 1
                    seen.add(name)
                    what = name.split("/", 3)[-1]
                    count.by_field[what] += 1
                    if what == "state":
                        count.state += 1
        except TimeoutError:
            pass
        count.seconds = min(time.monotonic(), deadline) - started
        count.topics = len(seen)
    return count


def count_retained(broker_url: str, seconds: float) -> int:
    """Retained per-printer messages the broker received from publishers during ``seconds``.

    Subscribes to ``printfleet/+/+/#`` (every ``<source>/<serial>/state`` and field topic;
    ``printfleet/events/...`` are left out, and ``printfleet/status`` does not match) with MQTT 5
    Retain Handling 2, so the broker does not replay the retained messages it already stores
    (the initial retained flood), and counts, for ``seconds`` from the SUBACK, every message the
    broker forwards *live*: the daemon publishes all of these retained (state, fields, clears),
    and the broker forwards them to a standing subscription with the retain flag cleared. A
    message arriving with the retain flag set anyway is counted as flood, not here. Home
    Assistant discovery configs are under another prefix and not counted either.

    Divide by ``seconds`` for messages/s. Blocking (runs its own event loop); from async code
    await :func:`count_messages` instead.
    """
    return asyncio.run(count_messages(broker_url, seconds)).live


def main(argv: list[str]) -> int:
    url, seconds = argv[0], float(argv[1]) if len(argv) > 1 else 60.0
    count = asyncio.run(count_messages(url, seconds))
    print(
        f"{count.live} live retained messages in {count.seconds:.1f} s "
        f"({count.per_second:.0f}/s; {count.state} state, {count.topics} topics; "
        f"{count.flood} replayed on subscribe)"
    )
    print(dict(count.by_field.most_common(12)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
