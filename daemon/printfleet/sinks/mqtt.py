"""The MQTT sink: events at QoS 1, retained fleet state, availability and Home Assistant discovery.

Topics (DESIGN §6, ``<prefix>`` = ``[mqtt] topic_prefix``; ``<source>``, ``<serial>`` and slot
names have ``/``, ``+`` and ``#`` replaced by ``_`` so each stays one topic level):

=========================================  ========  ==========================================
topic                                      retained  payload
=========================================  ========  ==========================================
``<prefix>/status``                        yes       ``online`` / ``offline`` (also the Last Will)
``<prefix>/<source>/<serial>/state``       yes       ``Printer.as_dict()`` + ``current_print``
``<prefix>/<source>/<serial>/<field>``     yes       one scalar, see :func:`field_values`
``<prefix>/events/<type with . -> />``     no        the CloudEvent bytes, QoS ``[mqtt] qos``
``<ha_prefix>/.../config``                 yes       Home Assistant discovery (homeassistant.py)
=========================================  ========  ==========================================

Two paths, two guarantees:

* **Events** come from the outbox through :meth:`MqttSink.deliver`, which returns only once
  the broker acknowledged the publish (PUBACK at QoS 1) and otherwise raises
  :class:`~printfleet.errors.DeliveryFailed` so the outbox keeps the delivery. When there is no
  connection it fails at once (retryable); nothing is queued inside this sink.
* **Retained state** is latest-wins: :meth:`MqttSink.publish_state` only records the newest
  :class:`~printfleet.core.fleet.FleetView`; the connection task publishes the retained
  messages whose payload differs from what the broker last *acknowledged* (TeslaMate's
  "remember only what was published"), clears (empty retained payload) the topics of printers
  that disappeared, and republishes everything after each (re)connect, because a restarted
  broker may have lost its retained store.

Heartbeat-only changes (a newer ``last_seen_at`` with otherwise equal printer facts) are
published at most every ``heartbeat`` seconds per printer, so an idle fleet of 10,000 printers
does not rewrite 10,000 state messages on every poll.

:meth:`MqttSink.run` is the visible reconnect loop. Each attempt uses a fresh
``aiomqtt.Client``: a reused aiomqtt 2.x client whose previous connection dropped
unexpectedly keeps its resolved CONNACK future, so its next ``async with`` returns before the
broker has accepted (and would hide a refusal); a fresh client also drops paho's queue of
unacknowledged publishes, leaving the outbox as the only thing that retries.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from pydantic import SecretStr

from printfleet import __version__
from printfleet.clock import Clock
from printfleet.config import MqttConfig
from printfleet.core.delivery import Delivery
from printfleet.core.events import EventType
from printfleet.core.fleet import FleetView
from printfleet.core.model import Printer, iso
from printfleet.errors import ConfigError, DeliveryFailed, Problem
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sinks import homeassistant

ONLINE: Final = b"online"
OFFLINE: Final = b"offline"
NULL: Final = "null"

#: Retained publishes kept in flight at once while syncing state.
SYNC_WINDOW: Final = 16

#: MQTT v5 CONNACK "Unsupported protocol version" (paho also maps a 3.1.1 broker's rc 1 to it).
_UNSUPPORTED_PROTOCOL = 0x84

_SCHEMES: Mapping[str, tuple[bool, int]] = {
    "mqtt": (False, 1883),
    "tcp": (False, 1883),
    "mqtts": (True, 8883),
    "ssl": (True, 8883),
}


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the broker is, from ``[mqtt] url``."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> Broker:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (``tcp://``/``ssl://`` also accepted).

    Raises:
        ConfigError: the URL has another scheme or no host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(
            Problem(
                file="config",
                key="mqtt.url",
                message=f"not a broker URL: {url!r}",
                fix="write mqtt://host:1883, or mqtts://host:8883 for TLS",
            )
        )
    tls, default_port = _SCHEMES[scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ConfigError(
            Problem(file="config", key="mqtt.url", message=f"invalid port in {url!r}")
        ) from None
    return Broker(host=parts.hostname, port=port, tls=tls)


def topic_level(text: str) -> str:
    """``text`` made safe as one topic level (no ``/``, ``+``, ``#``, NUL; never empty)."""
    for bad in ("/", "+", "#", "\x00"):
        text = text.replace(bad, "_")
    return text or "_"


def printer_topic(prefix: str, source: str, serial: str) -> str:
    """``<prefix>/<source>/<serial>``: the root of one printer's retained topics."""
    return f"{prefix}/{topic_level(source)}/{topic_level(serial)}"


def event_topic(prefix: str, event_type: str) -> str:
    """``<prefix>/events/print/finished`` for ``print.finished``."""
    try:
        suffix = EventType(event_type).topic_suffix
    except ValueError:
        suffix = "/".join(topic_level(p) for p in event_type.split("."))
    return f"{prefix}/events/{suffix}"


def _percent(ratio: float | None) -> str:
    return NULL if ratio is None else f"{ratio * 100:.1f}"


def _integer(value: float | None) -> str:
    return NULL if value is None else str(round(value))


def field_values(printer: Printer) -> dict[str, str]:
    """The per-field scalars of ``printer`` (key -> payload text), as published.

    * ``status``: the normalized status (``PRINTING``); ``online``: ``true``/``false``;
    * ``progress``: percent of the current print with one decimal (``42.5``);
    * ``print_name``, ``print_status``, ``remaining_s`` (whole seconds), ``layer``,
      ``layers_total``: of the current print;
    * ``material_remaining``: percent left with one decimal; a printer with several material
      slots gets ``material_remaining/<slot>`` per slot instead;
    * ``last_seen``: RFC 3339 UTC time of the vendor's last heartbeat.

    ``null`` stands for "unknown / no current print" (an empty payload would delete the
    retained message rather than say so).
    """
    job = printer.current_print
    values = {
        "status": printer.status.value,
        "online": "true" if printer.online else "false",
        "progress": _percent(job.progress if job else None),
        "print_name": job.name if job else NULL,
        "print_status": job.status.value if job else NULL,
        "remaining_s": _integer(job.remaining_s if job else None),
        "layer": _integer(job.layer if job else None),
        "layers_total": _integer(job.layers_total if job else None),
        "last_seen": iso(printer.last_seen_at) or NULL,
    }
    materials = printer.materials
    if len(materials) == 1:
        values[homeassistant.MATERIAL_FIELD] = _percent(materials[0].remaining_ratio)
    else:
        for material in materials:
            key = f"{homeassistant.MATERIAL_FIELD}/{topic_level(material.slot)}"
            values[key] = _percent(material.remaining_ratio)
    return values


def state_payload(printer: Printer) -> bytes:
    """The normalized printer JSON of the ``state`` topic (``current_print`` included)."""
    data = printer.as_dict()
    data["current_print"] = printer.current_print.as_dict() if printer.current_print else None
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def delivery_message(delivery: Delivery, *, prefix: str, qos: int) -> tuple[str, bytes, int, bool]:
    """``(topic, payload, qos, retain)`` of one delivery.

    The payload is the CloudEvent exactly as :func:`~printfleet.core.events.encode_event`
    writes it, unless the delivery carries a ``body`` (a rule's own message: text, bytes, or
    JSON-ready data). ``topic`` defaults to the event's topic below ``prefix``.

    Raises:
        DeliveryFailed: (not retryable) when the payload has neither ``event`` nor ``body``.
    """
    payload = delivery.payload
    event = payload.get("event")
    if "body" in payload:
        body = payload["body"]
        if isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    elif isinstance(event, Mapping):
        # Same bytes as encode_event(); check_circular=False only skips a cycle check that a
        # JSON-decoded dict cannot need (a few microseconds per event).
        data = json.dumps(
            event, separators=(",", ":"), ensure_ascii=False, check_circular=False
        ).encode()
    else:
        raise DeliveryFailed("mqtt", "delivery has neither an event nor a body", retryable=False)
    topic = payload.get("topic")
    if not topic:
        if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
            raise DeliveryFailed("mqtt", "delivery has no topic and no event type", retryable=False)
        topic = event_topic(prefix, event["type"])
    return str(topic), data, int(payload.get("qos", qos)), bool(payload.get("retain", False))


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def default_backoff(attempt: int) -> float:
    """Seconds before reconnect ``attempt`` (1, 2, ...): 1 s doubling to 60 s, with jitter."""
    return min(60.0, 2.0 ** (attempt - 1)) * random.uniform(0.5, 1.0)


@dataclass(slots=True)
class _Retained:
    """What the broker holds for one printer, and what it was rendered from.

    Payloads are not kept (at 10,000 printers with Home Assistant discovery they are ~100 MB),
    only a hash of each acknowledged one: a changed printer is re-rendered and only messages
    whose hash differs go out. Discovery configs are re-rendered only when their inputs
    (``identity``) change, or after a reconnect.
    """

    printer: Printer | None = None  # None: not confirmed on this connection yet
    last_seen: datetime | None = None
    identity: tuple[Any, ...] | None = None  # discovery inputs; None: not confirmed
    # message key -> hash of the acknowledged payload; None: published on an earlier
    # connection and not yet republished on this one (still to be cleared if unwanted).
    digests: dict[str, int | None] = field(default_factory=dict)


PrinterKey = tuple[str, str]  # (source, serial)


class MqttSink:
    """Publishes events, retained fleet state and availability to one MQTT broker.

    Lifecycle: ``async with MqttSink(...) as sink`` (or call :meth:`aclose`), with
    :meth:`run` running as a task for as long as the sink is open. :meth:`aclose` announces
    ``offline`` (retained) before disconnecting cleanly; a crash leaves that to the Last Will.
    """

    name = "mqtt"

    def __init__(
        self,
        config: MqttConfig,
        *,
        password: SecretStr | None,
        clock: Clock,
        observer: Observer = NULL_OBSERVER,
        client_id: str | None = None,
        backoff: Callable[[int], float] = default_backoff,
        heartbeat: float = 60.0,
        publish_timeout: float = 10.0,
        keepalive: int = 30,
        log: Any = None,
    ) -> None:
        """Args:
        config: the ``[mqtt]`` section.
        password: the broker password (resolved from ``password``/``password_file``).
        clock: waits between reconnect attempts.
        observer: reserved for sink-level observations; delivery outcomes are counted by
            the outbox, which knows whether a failure is retried or dead-lettered.
        client_id: MQTT client id (default ``config.client_id``, else ``printfleet-<host>``).
        backoff: seconds to wait before reconnect attempt ``n`` (1-based).
        heartbeat: minimum seconds between republishing a printer whose only change is a
            newer ``last_seen_at``.
        publish_timeout: how long a publish may wait for its PUBACK.
        keepalive: MQTT keepalive in seconds (bounds how long a silently dead connection
            goes unnoticed).
        log: a structlog logger (default ``printfleet.mqtt``).
        """
        self._config = config
        self._broker = parse_broker_url(config.url)
        if password is not None and not config.username:
            raise ConfigError(
                Problem(
                    file="config",
                    key="mqtt.password",
                    message="a broker password needs a user name",
                    fix="set [mqtt] username",
                )
            )
        self._password = password
        self._clock = clock
        self._observer = observer
        self._client_id = client_id or config.client_id or f"printfleet-{socket.gethostname()}"
        self._backoff = backoff
        self._heartbeat = heartbeat
        self._publish_timeout = publish_timeout
        self._keepalive = keepalive
        self._log = (log or structlog.get_logger("printfleet.mqtt")).bind(sink=self.name)
        self._prefix = config.topic_prefix
        self.status_topic = f"{self._prefix}/status"

        self._protocol = aiomqtt.ProtocolVersion.V5
        self._client: aiomqtt.Client | None = None  # set only while connected
        self._inflight: set[asyncio.Timeout] = set()
        self._aborted: set[asyncio.Timeout] = set()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._closed = False
        self._connected_once = False
        self._disconnect_logged = False

        self._waiters: list[asyncio.Future[None]] = []
        self._view: FleetView | None = None
        self._view_generation = 0
        self._synced_generation = 0
        self._state_changed = asyncio.Event()
        self._retained: dict[PrinterKey, _Retained] = {}

    def __repr__(self) -> str:
        return f"<MqttSink {self._broker.host}:{self._broker.port} prefix={self._prefix!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> MqttSink:
        if self._closed:
            raise RuntimeError("this MqttSink is closed; create a new one")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def connected(self) -> bool:
        """Whether a broker connection is up right now."""
        return self._client is not None

    async def wait_connected(self) -> None:
        """Return once connected (start-up ordering, tests; bound it with a timeout)."""
        await self._wait_until(lambda: self._client is not None)

    async def wait_disconnected(self) -> None:
        """Return once no connection is up (tests, readiness checks)."""
        await self._wait_until(lambda: self._client is None)

    async def wait_state_synced(self) -> None:
        """Return once the broker acknowledged every retained message of the latest view."""
        await self._wait_until(lambda: self._synced_generation == self._view_generation)

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(future)
            await future

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def aclose(self, grace: float = 5.0) -> None:
        """Announce ``offline`` (retained), disconnect cleanly and stop :meth:`run`.

        Waits at most ``grace`` seconds for the run loop to finish. Idempotent.
        """
        self._closed = True
        self._stop.set()
        if self._running:
            try:
                async with asyncio.timeout(grace):
                    await self._stopped.wait()
            except TimeoutError:
                self._log.warning("mqtt.close_timeout", grace=grace)

    # -- the reconnect loop --------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until :meth:`aclose`: connect, announce ``online``, keep retained
        state in sync; on a lost connection back off and reconnect."""
        if self._running:
            raise RuntimeError("MqttSink.run() is already running")
        if self._closed:
            raise RuntimeError("this MqttSink is closed")
        self._running = True
        attempt = 0
        try:
            while not self._stop.is_set():
                client = self._new_client()
                try:
                    async with client:
                        attempt = 0
                        await self._serve(client)
                    return
                except MqttConnectError as err:
                    if self._refused_protocol(err):
                        continue  # retry at once with MQTT 3.1.1
                    self._note_disconnected(err)
                except aiomqtt.MqttError as err:
                    self._note_disconnected(err)
                attempt += 1
                await self._wait_or_stop(self._backoff(attempt))
        finally:
            self._client = None
            self._running = False
            self._stopped.set()

    def _new_client(self) -> aiomqtt.Client:
        tls = None
        if self._broker.tls:
            ca = self._config.ca_file
            tls = aiomqtt.TLSParameters(ca_certs=str(ca) if ca else None)
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._config.username,
            password=self._password.get_secret_value() if self._password else None,
            identifier=self._client_id,
            protocol=self._protocol,
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            tls_params=tls,
            keepalive=self._keepalive,
            timeout=self._publish_timeout,
            # paho writes small packets in pieces; with Nagle on, a pipelined publish can
            # wait for the broker's delayed ACK (~40 ms). Measured: 1k -> 10k msgs/s.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        )
        # Retained-state syncs keep many publishes in flight on purpose.
        client.pending_calls_threshold = 10_000
        return client

    def _refused_protocol(self, err: MqttConnectError) -> bool:
        code = getattr(err.rc, "value", err.rc)
        if self._protocol is aiomqtt.ProtocolVersion.V5 and code in (1, _UNSUPPORTED_PROTOCOL):
            self._log.warning("mqtt.protocol_fallback", protocol="3.1.1", reason=str(err))
            self._protocol = aiomqtt.ProtocolVersion.V311
            return True
        return False

    async def _serve(self, client: aiomqtt.Client) -> None:
        """One connection: announce ``online``, sync retained state, return on stop."""
        await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        self._mark_unconfirmed()
        self._client = client
        self._disconnect_logged = False
        self._log.info(
            "mqtt.connected",
            host=self._broker.host,
            port=self._broker.port,
            protocol="5" if self._protocol is aiomqtt.ProtocolVersion.V5 else "3.1.1",
            reconnect=self._connected_once,
        )
        self._connected_once = True
        self._wake()
        tasks = {
            asyncio.create_task(self._sync_loop(client), name="mqtt-state-sync"),
            asyncio.create_task(self._watch(client), name="mqtt-watch"),
            asyncio.create_task(self._stop.wait(), name="mqtt-stop"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and (error := task.exception()) is not None:
                    raise error
        except asyncio.CancelledError:
            # Cancelled without aclose(): still tell subscribers we are going away.
            self._detach()
            await self._announce_offline(client)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._detach()
        await self._announce_offline(client)

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Raise MqttError when the connection drops (the message iterator's only way out,
        since this client subscribes to nothing)."""
        async for _ in client.messages:
            pass
        raise aiomqtt.MqttError("message iterator ended")

    async def _announce_offline(self, client: aiomqtt.Client) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout):
                await client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            self._log.info("mqtt.offline_announced")
        except (aiomqtt.MqttError, TimeoutError) as err:
            self._log.warning("mqtt.offline_not_announced", error=str(err))

    def _detach(self) -> None:
        """Forget the connection: new deliveries fail fast, waiting ones give up now."""
        if self._client is None:
            return
        self._client = None
        now = asyncio.get_running_loop().time()
        for scope in self._inflight:
            self._aborted.add(scope)
            scope.reschedule(now)
        self._wake()

    def _note_disconnected(self, err: Exception) -> None:
        self._detach()
        if not self._disconnect_logged:
            self._disconnect_logged = True
            self._log.warning(
                "mqtt.disconnected",
                host=self._broker.host,
                port=self._broker.port,
                error=str(err) or type(err).__name__,
            )

    async def _wait_or_stop(self, seconds: float) -> None:
        stop = asyncio.create_task(self._stop.wait())
        sleep = asyncio.create_task(self._clock.sleep(seconds))
        try:
            await asyncio.wait({stop, sleep}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            sleep.cancel()
            await asyncio.gather(stop, sleep, return_exceptions=True)

    # -- events --------------------------------------------------------------------------

    async def deliver(self, delivery: Delivery) -> None:
        """Publish one delivery and wait for the broker's acknowledgement.

        Raises:
            DeliveryFailed: retryable when not connected, when the connection drops before
                the PUBACK, or when none arrives within ``publish_timeout``; not retryable
                for a delivery that can never be published (no event, wildcard topic).
        """
        if self._closed:
            raise DeliveryFailed(self.name, "sink is closed", retryable=True)
        topic, data, qos, retain = delivery_message(
            delivery, prefix=self._prefix, qos=self._config.qos
        )
        client = self._client
        if client is None:
            raise DeliveryFailed(self.name, "not connected to the broker", retryable=True)
        scope = asyncio.timeout(self._publish_timeout)
        self._inflight.add(scope)
        try:
            async with scope:
                await client.publish(topic, data, qos=qos, retain=retain, timeout=math.inf)
        except TimeoutError:
            lost = scope in self._aborted
            reason = "connection lost before PUBACK" if lost else "no PUBACK in time"
            raise DeliveryFailed(self.name, reason, retryable=True) from None
        except aiomqtt.MqttError as err:
            raise DeliveryFailed(self.name, f"publish failed: {err}", retryable=True) from err
        except ValueError as err:  # paho: wildcard in topic, payload too large
            raise DeliveryFailed(self.name, f"cannot publish: {err}", retryable=False) from err
        finally:
            self._inflight.discard(scope)
            self._aborted.discard(scope)

    # -- retained state ------------------------------------------------------------------

    def publish_state(self, view: FleetView) -> None:
        """Make ``view`` the fleet state to mirror in retained topics (latest wins, no I/O).

        The connection task publishes what changed as soon as it can; while disconnected the
        newest view simply waits for the next connection.
        """
        self._view = view
        self._view_generation += 1
        self._state_changed.set()

    def _mark_unconfirmed(self) -> None:
        """After a (re)connect: everything must be republished, and old topics stay known."""
        for entry in self._retained.values():
            entry.printer = entry.identity = None
            entry.digests = dict.fromkeys(entry.digests)
        self._synced_generation = -1
        self._state_changed.set()

    async def _sync_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._state_changed.wait()
            self._state_changed.clear()
            generation = self._view_generation
            await self._sync(client)
            self._synced_generation = generation
            self._wake()

    async def _sync(self, client: aiomqtt.Client) -> None:
        """Publish the retained messages that differ from what the broker acknowledged."""
        rendered: list[tuple[PrinterKey, Printer, tuple[Any, ...] | None]] = []
        gone: list[PrinterKey] = []
        sent = 0

        def changes() -> Iterator[tuple[PrinterKey, str, bytes]]:
            # Rendered as the publishers ask, so a full republish of a large fleet never
            # holds every payload at once (~130,000 messages at 10,000 printers).
            wanted: set[PrinterKey] = set()
            snapshots = self._view.snapshots if self._view is not None else {}
            for source, snapshot in snapshots.items():
                for serial, printer in snapshot.printers.items():
                    key = (source, serial)
                    wanted.add(key)
                    entry = self._retained.get(key)
                    if entry is not None and self._still_current(entry, printer):
                        continue
                    identity = self._identity(printer)
                    rendered.append((key, printer, identity))
                    yield from self._printer_changes(key, printer, entry, identity)
            gone.extend(key for key in self._retained if key not in wanted)
            for key in gone:
                yield from [(key, name, b"") for name in self._retained[key].digests]

        remaining = changes()

        async def publisher() -> None:
            nonlocal sent
            for key, name, payload in remaining:  # shared: each message goes out once
                await client.publish(self._topic(key, name), payload, qos=1, retain=True)
                sent += 1
                digests = self._retained.setdefault(key, _Retained()).digests
                if payload:
                    digests[name] = hash(payload)
                else:
                    digests.pop(name, None)

        # A sliding window of publishes awaiting their PUBACK (not batches: a batch waits
        # for its slowest PUBACK, and a broker that delays ACKs (Nagle) stalls every batch).
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(SYNC_WINDOW):
                    group.create_task(publisher())
        except BaseExceptionGroup as failed:
            raise _first_error(failed) from None
        for key, printer, identity in rendered:
            entry = self._retained.setdefault(key, _Retained())
            entry.printer, entry.last_seen, entry.identity = printer, printer.last_seen_at, identity
        for key in gone:
            if not self._retained[key].digests:
                del self._retained[key]
        if sent:
            self._log.debug("mqtt.state_synced", messages=sent, printers=len(rendered))

    def _printer_changes(
        self,
        key: PrinterKey,
        printer: Printer,
        entry: _Retained | None,
        identity: tuple[Any, ...] | None,
    ) -> list[tuple[PrinterKey, str, bytes]]:
        """The messages of one printer that differ from what the broker holds (a list: the
        publishers update ``entry.digests`` while the caller is still yielding them).

        Discovery configs are rendered only when ``entry`` does not hold them for the same
        ``identity``."""
        kept_discovery = entry is not None and entry.identity == identity
        messages = self._printer_messages(key[0], printer, discovery=not kept_discovery)
        have = entry.digests if entry is not None else {}
        out = [(key, n, p) for n, p in messages.items() if have.get(n) != hash(p)]
        out += [
            (key, n, b"")
            for n in have
            if n not in messages and not (kept_discovery and n.startswith(_HA))
        ]
        return out

    def _still_current(self, entry: _Retained, printer: Printer) -> bool:
        old = entry.printer
        if old is None or (old is not printer and old != printer):
            return False
        seen = printer.last_seen_at
        if seen is None or seen == entry.last_seen:
            return True
        if entry.last_seen is None:
            return False
        return (seen - entry.last_seen).total_seconds() < self._heartbeat

    def _identity(self, printer: Printer) -> tuple[Any, ...] | None:
        """What the printer's discovery configs are rendered from (None: discovery is off)."""
        if not self._config.homeassistant_discovery:
            return None
        slots = tuple(m.slot for m in printer.materials)  # which material entities exist
        return (
            printer.name,
            printer.vendor,
            printer.model,
            printer.firmware,
            printer.location,
            slots,
        )

    def _printer_messages(
        self, source: str, printer: Printer, *, discovery: bool
    ) -> dict[str, bytes]:
        """Message key -> payload of one printer (discovery configs when ``discovery``)."""
        messages = {"state": state_payload(printer)}
        for name, value in field_values(printer).items():
            messages[sys.intern(name)] = value.encode()
        if not discovery or not self._config.homeassistant_discovery:
            return messages
        base = printer_topic(self._prefix, source, printer.serial)
        configs = homeassistant.discovery_configs(
            source=source,
            printer=printer,
            field_topics={name: f"{base}/{name}" for name in messages if name != "state"},
            availability_topic=self.status_topic,
            sw_version=__version__,
        )
        for entity, body in configs.items():
            messages[sys.intern(_HA + entity)] = body
        return messages

    def _topic(self, key: PrinterKey, name: str) -> str:
        source, serial = key
        if name.startswith(_HA):
            node = homeassistant.node_id(source, serial)
            return homeassistant.config_topic(
                self._config.homeassistant_prefix, node, name[len(_HA) :]
            )
        return f"{printer_topic(self._prefix, source, serial)}/{name}"

    def retained_topics(self) -> Iterable[str]:
        """Every retained topic currently acknowledged by the broker (for tests and tools)."""
        for key, entry in self._retained.items():
            yield from (self._topic(key, n) for n, d in entry.digests.items() if d is not None)


# Message keys of discovery configs: ``ha:<component>/<key>``; the others are field names.
_HA: Final = "ha:"
