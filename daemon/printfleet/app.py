"""The composition root: the only module that names concrete sources, sinks and stores.

Start order: HTTP client → store → metrics server → sinks → rule engine → pipeline →
first poll of every source (auth rejected here is exit code 3) → pollers, outbox workers,
MQTT supervisor and rule timers in one task group. Shutdown runs in reverse, each step
bounded: stop polling → drain outbox workers for ``shutdown_grace`` (the rest stays in the
outbox) → publish MQTT ``offline`` and disconnect → stop metrics → close the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry

from printfleet import __version__, systemd
from printfleet.clock import Clock, SystemClock
from printfleet.config import Settings, load_settings, read_secret
from printfleet.core.events import ChangeEvent
from printfleet.core.fleet import FleetView
from printfleet.core.polling import PollPolicy
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.thresholds import DiffSettings
from printfleet.errors import EXIT_AUTH, EXIT_OK, ConfigError, PrintfleetError
from printfleet.health import HealthServer
from printfleet.metrics.fleet import FleetCollector
from printfleet.metrics.observer import Metrics
from printfleet.outbox import OutboxWorker
from printfleet.pipeline import Pipeline
from printfleet.poller import SourcePoller
from printfleet.rulepacks.loader import load_rule_set, silences_from_state
from printfleet.sinks.mqtt.sink import MqttSink
from printfleet.sinks.webhook import WebhookSink
from printfleet.sources.base import Source
from printfleet.sources.factory import make_source
from printfleet.store import FILENAME, Store

log = structlog.get_logger("printfleet.app")


def diff_settings(settings: Settings) -> DiffSettings:
    return DiffSettings.from_config(settings.thresholds)


def poll_policy(settings: Settings) -> PollPolicy:
    p = settings.poll
    return PollPolicy(
        interval=p.interval,
        active_interval=p.active_interval,
        idle_interval=p.idle_interval,
        history_interval=p.history_interval,
    )


@dataclass
class DaemonHooks:
    """Extra observers for embedding the daemon (the demo prints events as they happen)."""

    on_event: Callable[[ChangeEvent], None] = lambda event: None
    on_ready: Callable[[Daemon], None] = lambda daemon: None
    extra: dict[str, Any] = field(default_factory=dict)


class Daemon:
    """One running printfleet: everything wired from one :class:`Settings`."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_file: Path | None = None,
        clock: Clock | None = None,
        hooks: DaemonHooks | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.config_file = config_file
        self.clock = clock or SystemClock()
        self.hooks = hooks or DaemonHooks()
        self._transport = transport
        self.stop_event = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.pipeline: Pipeline | None = None
        self.health: HealthServer | None = None
        self.store: Store | None = None
        self.sources: list[Source] = []
        self.pollers: list[SourcePoller] = []
        self.workers: dict[str, OutboxWorker] = {}
        self.mqtt: MqttSink | None = None
        self.engine: RuleEngine | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (or :meth:`stop`); return the exit code."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, self.stop)
            loop.add_signal_handler(signal.SIGINT, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        try:
            async with AsyncExitStack() as stack:
                code = await self._start(stack)
                if code != EXIT_OK:
                    return code
                await self._serve()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        log.info("daemon.stopped")
        return EXIT_OK

    def stop(self) -> None:
        self.stop_event.set()

    async def _start(self, stack: AsyncExitStack) -> int:
        settings = self.settings
        credentials_dir = _credentials_dir()
        client = httpx.AsyncClient(
            headers={"User-Agent": f"printfleet/{__version__}"},
            transport=self._transport,
            follow_redirects=False,
        )
        stack.push_async_callback(client.aclose)

        state_dir = settings.daemon.state_dir
        self.store = Store.open(state_dir / FILENAME, clock=self.clock)
        stack.callback(self.store.close)

        rule_set = load_rule_set(settings, base_dir=self._base_dir())
        self.engine = RuleEngine(rule_set, state=self.store.load_state("rules"))
        self._refresh_silences()

        for cfg in settings.source:
            source = make_source(
                cfg,
                client=client,
                clock=self.clock,
                offline_after=cfg.offline_after or settings.poll.offline_after,
                observer=self.metrics,
                credentials_dir=credentials_dir,
            )
            stack.push_async_callback(source.aclose)
            self.sources.append(source)

        sinks: dict[str, Any] = {}
        if settings.mqtt.enabled:
            password = read_secret(
                settings.mqtt.password,
                settings.mqtt.password_file,
                key="mqtt.password_file",
                config_file=self.config_file or Path("<settings>"),
                credentials_dir=credentials_dir,
            )
            self.mqtt = MqttSink(
                settings.mqtt,
                password=password,
                clock=self.clock,
                observer=self.metrics,
                state_dir=settings.daemon.state_dir,
            )
            await stack.enter_async_context(self.mqtt)
            sinks["mqtt"] = self.mqtt
        for receiver in settings.receiver:
            url = read_secret(
                receiver.url,
                receiver.url_file,
                key=f"receiver.{receiver.name}.url_file",
                config_file=self.config_file or Path("<settings>"),
                credentials_dir=credentials_dir,
            )
            secret = read_secret(
                receiver.secret,
                receiver.secret_file,
                key=f"receiver.{receiver.name}.secret_file",
                config_file=self.config_file or Path("<settings>"),
                credentials_dir=credentials_dir,
            )
            assert url is not None
            sink = WebhookSink(
                receiver.name,
                receiver.kind,
                url,
                client=client,
                secret=secret,
                headers=receiver.headers,
                timeout=receiver.timeout.total_seconds(),
                clock=self.clock,
                version=__version__,
            )
            # Entered like every sink: deliver() refuses to send through an unopened sink.
            await stack.enter_async_context(sink)
            sinks[receiver.name] = sink
        for name, sink in sinks.items():
            max_age = next(
                (r.max_age for r in settings.receiver if r.name == name),
                settings.receiver[0].max_age if settings.receiver else None,
            )
            kwargs: dict[str, Any] = {"clock": self.clock, "observer": self.metrics}
            if max_age is not None:
                kwargs["max_age"] = max_age
            self.workers[name] = OutboxWorker(self.store, sink, **kwargs)

        store = self.store
        self.pipeline = Pipeline(
            store=store,
            rules=self.engine,
            clock=self.clock,
            mqtt_prefix=settings.mqtt.topic_prefix if settings.mqtt.enabled else None,
            mqtt_qos=settings.mqtt.qos,
            observer=self.metrics,
            on_committed=self._wake,
            on_view=self._view_changed,
            on_event=self.hooks.on_event,
        )

        if settings.metrics.enabled:
            self.registry.register(
                FleetCollector(
                    view=lambda: self.pipeline.view if self.pipeline else FleetView(),
                    budgets=lambda: {s.name: s.budget() for s in self.sources},
                    outbox=lambda: (store.pending_count(), store.dead_count()),
                )
            )
            self.health = HealthServer(settings.metrics.listen, self.registry, ready=self._ready)
            self.health.start()
            stack.callback(self.health.stop)

        policy = poll_policy(settings)
        diffs = diff_settings(settings)
        for source in self.sources:
            previous = store.load_snapshot(source.name)
            watermark_text = store.load_state(f"watermark:{source.name}")
            watermark = datetime.fromisoformat(watermark_text) if watermark_text else None
            self.pipeline.seed(source.name, previous)
            self.pollers.append(
                SourcePoller(
                    source,
                    handle=self.pipeline.handle,
                    clock=self.clock,
                    policy=policy,
                    diff_settings=diffs,
                    previous=previous,
                    watermark=watermark,
                    observer=self.metrics,
                    outage=store.load_state(f"outage:{source.name}"),
                )
            )
        return EXIT_OK

    async def _serve(self) -> None:
        assert self.pipeline is not None
        # The first poll of each source runs before anything else so that rejected
        # credentials stop start-up with exit code 3 instead of a running, useless daemon.
        first_delays: dict[str, float] = {}
        for poller in self.pollers:
            first_delays[poller.name] = await poller.poll_once()
            if poller.health.last_error == "auth":
                log.error(
                    "daemon.auth_rejected",
                    source=poller.name,
                    hint="check the client id and secret (Formlabs) or secrets.json (Carbon)",
                )
                raise _AuthRejectedAtStartup(poller.name)
        systemd.notify("READY=1", f"STATUS=watching {len(self.pollers)} source(s)")
        log.info("daemon.ready", sources=len(self.pollers), sinks=sorted(self.workers))
        self.hooks.on_ready(self)
        async with asyncio.TaskGroup() as tasks:
            # Three groups, stopped in this order on shutdown: producers, deliverers, MQTT.
            producers: list[asyncio.Task[Any]] = [
                tasks.create_task(self._poll_forever(poller, first_delays[poller.name]))
                for poller in self.pollers
            ]
            producers.append(tasks.create_task(self.pipeline.run_timers()))
            producers.append(tasks.create_task(self._watch_silences()))
            interval = systemd.watchdog_interval()
            if interval:
                producers.append(tasks.create_task(_watchdog(interval)))
            deliverers = [tasks.create_task(w.run()) for w in self.workers.values()]
            connection = tasks.create_task(self.mqtt.run()) if self.mqtt is not None else None
            while not self.stop_event.is_set():
                reload_wait = asyncio.create_task(self._reload_requested.wait())
                stop_wait = asyncio.create_task(self.stop_event.wait())
                await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                reload_wait.cancel()
                stop_wait.cancel()
                if self._reload_requested.is_set() and not self.stop_event.is_set():
                    self._reload_requested.clear()
                    self._reload()
            systemd.notify("STOPPING=1")
            log.info("daemon.stopping")
            await _cancel(producers)
            # Deliver what is due while MQTT is still connected; the rest stays in the outbox.
            await self._drain()
            await _cancel(deliverers)
            if connection is not None:
                await _cancel([connection])  # publishes `offline` before disconnecting

    def _refresh_silences(self) -> None:
        """Apply the ad-hoc silences `printfleet silence add` keeps in the state store."""
        if self.store is None or self.engine is None:
            return
        try:
            self.engine.set_silences(silences_from_state(self.store.load_state("silences")))
        except PrintfleetError as err:
            log.warning("silences.unreadable", error=str(err))

    async def _watch_silences(self, every: float = 30.0) -> None:
        # The CLI writes silences into the store while the daemon runs; pick them up.
        while True:
            await self.clock.sleep(every)
            self._refresh_silences()

    async def _poll_forever(self, poller: SourcePoller, first_delay: float) -> None:
        await self.clock.sleep(first_delay)
        await poller.run()

    async def _drain(self) -> None:
        grace = self.settings.daemon.shutdown_grace.total_seconds()
        if self.workers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(w.drain(grace) for w in self.workers.values()))

    def _reload(self) -> None:
        """SIGHUP: reload config and rule packs; an invalid reload keeps the running set."""
        systemd.reloading()
        try:
            if self.config_file is not None:
                fresh = load_settings(self.config_file)
            else:
                fresh = self.settings
            rule_set = load_rule_set(fresh, base_dir=self._base_dir())
        except ConfigError as err:
            log.error(
                "reload.rejected",
                problems=[str(p) for p in err.problems],
                hint="the running rules and config stay in force",
            )
            systemd.notify("READY=1")
            return
        assert self.engine is not None
        self.engine.replace_rules(rule_set)
        self._refresh_silences()
        if fresh != self.settings:
            log.warning(
                "reload.config_changed",
                hint="rules were reloaded; changes to sources, sinks or listen addresses "
                "take effect after a restart",
            )
        log.info("reload.done", rules=len(rule_set.rules))
        systemd.notify("READY=1")

    # -- wiring callbacks ------------------------------------------------------------------

    def _wake(self, sinks: set[str]) -> None:
        for name in sinks:
            worker = self.workers.get(name)
            if worker is not None:
                worker.wake()

    def _view_changed(self, view: FleetView) -> None:
        self.metrics.track_fleet(view)
        if self.mqtt is not None:
            self.mqtt.publish_state(view)

    def _ready(self) -> tuple[bool, str]:
        if self.pipeline is None:
            return False, "starting"
        problems: list[str] = []
        now = self.clock.now()
        limit = max(self.settings.poll.idle_interval, self.settings.poll.interval) * 4
        for name, health in self.pipeline.view.health.items():
            if health.last_success_at is None or now - health.last_success_at > limit:
                problems.append(f"source {name} not polled successfully in {limit}")
        for poller in self.pollers:
            if poller.name not in self.pipeline.view.health:
                problems.append(f"source {poller.name} not polled yet")
        if self.mqtt is not None and not self.mqtt.connected:
            problems.append("mqtt disconnected")
        return (not problems, "; ".join(problems) or "ok")

    def _base_dir(self) -> Path:
        return self.config_file.parent if self.config_file else Path.cwd()


class _AuthRejectedAtStartup(PrintfleetError):
    def __init__(self, source: str) -> None:
        super().__init__(f"{source}: the vendor rejected the credentials at start-up")
        self.source = source


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _watchdog(interval: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def _credentials_dir() -> Path | None:
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None


def run_daemon(settings: Settings, *, config_file: Path) -> int:
    """``printfleet run``: configure logging, run until stopped, return the exit code."""
    from printfleet.logs import configure_logging

    configure_logging(settings.daemon.log_level, settings.daemon.log_format)
    log.info("daemon.starting", version=__version__, config=str(config_file), pid=os.getpid())
    try:
        return asyncio.run(Daemon(settings, config_file=config_file).run())
    except _AuthRejectedAtStartup:
        return EXIT_AUTH


def utcnow() -> datetime:
    return datetime.now(UTC)
