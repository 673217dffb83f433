"""The MQTT sink: the broker connection, its reconnect loop, and events at QoS 1.

It publishes events, retained fleet state, availability and Home Assistant discovery.

The topic contract is :mod:`.topics`; the retained-state mirror is :mod:`.retained`.

Two paths, two guarantees:

* **Events** come from the outbox through :meth:`MqttSink.deliver`, which returns only once
  the broker acknowledged the publish (PUBACK at QoS 1) and otherwise raises
  :class:`~printfleet.errors.DeliveryFailed` so the outbox keeps the delivery. When there is no
  connection it fails at once (retryable); nothing is queued inside this sink.
* **Retained state** is latest-wins: :meth:`MqttSink.publish_state` only records the newest
  :class:`~printfleet.core.fleet.FleetView`; the connection task hands it to the
  :class:`~printfleet.sinks.mqtt.retained.RetainedMirror`, which publishes only what differs
  from what the broker last *acknowledged*, and everything again after each (re)connect.

:meth:`MqttSink.run` is the visible reconnect loop. Each attempt uses a fresh
``aiomqtt.Client``: a reused aiomqtt 2.x client whose previous connection dropped
unexpectedly keeps its resolved CONNACK future, so its next ``async with`` returns before the
broker has accepted (and would hide a refusal); a fresh client also drops paho's queue of
unacknowledged publishes, leaving the outbox as the only thing that retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError
from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.config import MqttConfig, schema
from printfleet.config.schema import Broker
from printfleet.core.backoff import backoff as backoff_delay
from printfleet.core.delivery import Delivery
from printfleet.core.fleet import FleetView
from printfleet.errors import ConfigError, DeliveryFailed, Problem
from printfleet.lifecycle import Lifecycle
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sinks.mqtt.retained import RetainedMirror
from printfleet.sinks.mqtt.topics import OFFLINE, ONLINE, delivery_message, status_topic

#: MQTT v5 CONNACK "Unsupported protocol version" (paho also maps a 3.1.1 broker's rc 1 to it).
_UNSUPPORTED_PROTOCOL = 0x84
#: MQTT v5 DISCONNECT "Session taken over": another client connected with our client id.
SESSION_TAKEN_OVER: Final = 0x8E
#: A connection must stay up this long before the reconnect backoff starts again from 1 s,
#: so a session taken over every few milliseconds cannot reconnect more than a few times a
#: second (two daemons sharing a client id used to swap the session ~190 times a second).
STABLE_AFTER: Final = 30.0
#: A drop this soon after connecting, without a reason code, is reported as a probable
#: takeover (3.1.1 has no reason codes; mosquitto 2.0 usually closes before 142 is sent).
QUICK_DROP: Final = 1.0
TAKEOVER_HINT: Final = "set [mqtt] client_id or use a different state_dir"
#: Held-back progress comes due printer by printer; waking at most this often for it walks a
#: large fleet's view at most once a second (each printer is then at most this much late).
FLUSH_EVERY: Final = 1.0


def default_client_id(state_dir: Path | None = None, host: str | None = None) -> str:
    """``printfleet-<host>-<8 hex of SHA-256 of the resolved state_dir>``: two daemons on one
    host (each with its own state directory, e.g. the service and a test instance) never
    share a client id, and one daemon keeps its id (and broker session) across restarts."""
    host = host or socket.gethostname()
    if state_dir is None:
        return f"printfleet-{host}"
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode("utf-8", "surrogatepass"))
    return f"printfleet-{host}-{digest.hexdigest()[:8]}"


def _reason_code(err: BaseException) -> int | None:
    """The MQTT reason code behind ``err`` (aiomqtt chains the disconnect's MqttCodeError)."""
    seen: BaseException | None = err
    while seen is not None:
        rc = getattr(seen, "rc", None)
        if rc is not None:
            value = getattr(rc, "value", rc)
            return value if isinstance(value, int) else None
        seen = seen.__cause__ or seen.__context__
    return None


def parse_broker_url(url: str) -> Broker:
    """``[mqtt] url`` as a :class:`Broker` (see :func:`printfleet.config.schema.parse_broker_url`).

    Raises:
        ConfigError: naming ``mqtt.url`` and the fix (never the URL: it may hold a password).
    """
    try:
        return schema.parse_broker_url(url)
    except schema.InvalidValue as err:
        raise ConfigError(
            Problem(file="config", key="mqtt.url", message=str(err), fix=err.fix)
        ) from None


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
        state_dir: Path | None = None,
        backoff: Callable[[int], float] | None = None,
        rng: random.Random | None = None,
        heartbeat: float = 60.0,
        publish_timeout: float = 10.0,
        keepalive: int = 30,
        log: Any = None,
    ) -> None:
        """Args:
        config: the ``[mqtt]`` section.
        password: the broker password (resolved from ``password``/``password_file``).
        clock: waits between reconnect attempts, and times ``[mqtt] state_min_interval``.
        observer: reserved for sink-level observations; delivery outcomes are counted by
            the outbox, which knows whether a failure is retried or dead-lettered.
        client_id: MQTT client id (default ``config.client_id``, else
            :func:`default_client_id` of ``state_dir``).
        state_dir: the daemon's state directory, which the default client id is derived from.
        backoff: seconds to wait before reconnect attempt ``n`` (1-based); by default
            1 s doubling to 60 s, with half jitter (:func:`printfleet.core.backoff.backoff`).
        rng: the random source of the default backoff's jitter (default: a new
            ``random.Random()``, never the global one; seed it in tests).
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
        self._client_id = client_id or config.client_id or default_client_id(state_dir)
        self._rng = rng if rng is not None else random.Random()
        self._backoff = backoff if backoff is not None else self._default_backoff
        self._publish_timeout = publish_timeout
        self._keepalive = keepalive
        self._log = (log or structlog.get_logger("printfleet.mqtt")).bind(sink=self.name)
        self._prefix = config.topic_prefix
        self.status_topic = status_topic(self._prefix)

        self._protocol = aiomqtt.ProtocolVersion.V5
        self._client: aiomqtt.Client | None = None  # set only while connected
        self._inflight: set[asyncio.Timeout] = set()
        self._aborted: set[asyncio.Timeout] = set()
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._life = Lifecycle("this MqttSink")
        self._connected_once = False
        self._disconnect_logged = False

        self._waiters: list[asyncio.Future[None]] = []
        self._view: FleetView | None = None
        self._view_generation = 0
        self._synced_generation = 0
        self._state_changed = asyncio.Event()
        self._mirror = RetainedMirror(
            config, heartbeat=heartbeat, clock=clock, publish_timeout=publish_timeout
        )

    def __repr__(self) -> str:
        return f"<MqttSink {self._broker.host}:{self._broker.port} prefix={self._prefix!r}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> MqttSink:
        self._life.open()
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
        """Return once the broker acknowledged every retained message of the latest view
        that is due (progress held back by ``state_min_interval`` follows when it is due)."""
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
        self._life.close()
        self._stop.set()
        if self._running:
            try:
                async with asyncio.timeout(grace):
                    await self._stopped.wait()
            except TimeoutError:
                self._log.warning("mqtt.close_timeout", grace=grace)

    # -- the reconnect loop --------------------------------------------------------------

    def _default_backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=1.0, cap=60.0, rng=self._rng, jitter="half")

    async def run(self) -> None:
        """Stay connected until :meth:`aclose`: connect, announce ``online``, keep retained
        state in sync; on a lost connection back off and reconnect."""
        if self._running:
            raise RuntimeError("MqttSink.run() is already running")
        self._life.check_not_closed()
        self._running = True
        attempt = 0
        try:
            while not self._stop.is_set():
                client = self._new_client()
                connected_at: float | None = None
                try:
                    async with client:
                        connected_at = self._clock.monotonic()
                        await self._serve(client)
                    return
                except MqttConnectError as err:
                    if self._refused_protocol(err):
                        continue  # retry at once with MQTT 3.1.1
                    self._note_disconnected(err)
                except aiomqtt.MqttError as err:
                    self._note_disconnected(err)
                    if connected_at is not None:
                        up_for = self._clock.monotonic() - connected_at
                        self._note_takeover(err, up_for)
                        if up_for >= STABLE_AFTER:
                            attempt = 0  # a stable connection: start the backoff over
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
        except Exception as err:
            # A bug (not a lost connection) ends this connection while it is still up: the
            # clean DISCONNECT that follows suppresses the Last Will, so say `offline` now or
            # subscribers would read `online` while the supervisor waits to restart us.
            if not isinstance(err, aiomqtt.MqttError):
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

    def _note_takeover(self, err: BaseException, up_for: float) -> None:
        """Log ``mqtt.session_taken_over`` when the broker (probably) gave our session to
        another client with the same id: reason code 142 (MQTT 5), or a drop without a reason
        within :data:`QUICK_DROP` seconds of connecting."""
        if _reason_code(err) == SESSION_TAKEN_OVER:
            cause = "broker reason code 142 (Session taken over)"
        elif up_for < QUICK_DROP:
            # mosquitto 2.0 closes the old connection right after queueing DISCONNECT 142, so
            # the reason code rarely arrives; 3.1.1 has none at all.
            cause = f"dropped {up_for:.2f}s after connecting, without a reason code"
        else:
            return
        self._log.warning(
            "mqtt.session_taken_over", client_id=self._client_id, cause=cause, hint=TAKEOVER_HINT
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
        if self._life.is_closed:
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
        self._mirror.reconnected()
        self._synced_generation = -1
        self._state_changed.set()

    async def _sync_loop(self, client: aiomqtt.Client) -> None:
        while True:
            await self._state_changed_or_due(self._mirror.next_due)
            self._state_changed.clear()
            generation = self._view_generation
            sent, printers = await self._mirror.sync(client, self._view)
            if sent:
                self._log.debug("mqtt.state_synced", messages=sent, printers=printers)
            self._synced_generation = generation
            self._wake()

    async def _state_changed_or_due(self, due: float | None) -> None:
        """Wait for a new view, or until held-back progress is due (then the same view is
        synced again and the mirror publishes what it held back)."""
        if due is None:
            await self._state_changed.wait()
            return
        changed = asyncio.create_task(self._state_changed.wait())
        wait = max(due - self._clock.monotonic(), FLUSH_EVERY)
        timer = asyncio.create_task(self._clock.sleep(wait))
        try:
            await asyncio.wait({changed, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            timer.cancel()
            await asyncio.gather(changed, timer, return_exceptions=True)

    def retained_topics(self) -> Iterable[str]:
        """Every retained topic currently acknowledged by the broker (for tests and tools)."""
        return self._mirror.topics()
