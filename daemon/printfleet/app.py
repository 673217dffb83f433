"""The composition root: the only module that names concrete sources, sinks and stores.

Start order: state-directory lock → HTTP client → store → metrics server → sinks → rule engine
→ pipeline → one task group in which every poller, outbox worker, the MQTT supervisor, the rule
timers and the silence watcher run supervised (a crash restarts that task, never the daemon);
READY is sent then. Each poller's first poll checks the credentials (rejected: exit code 3).
SIGHUP swaps rules, receivers and sources in place (:meth:`Daemon._reload`): only the pollers
of added, changed or removed sources start or stop. Shutdown runs in reverse, each step
bounded: stop polling → drain outbox workers for ``shutdown_grace`` (the rest stays in the
outbox) → publish MQTT ``offline`` and disconnect → stop metrics → close the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from printfleet import __version__, systemd
from printfleet.clock import Clock, SystemClock
from printfleet.config import Settings, load_settings, read_secret
from printfleet.config.loader import problem_at
from printfleet.config.schema import ReceiverConfig, SourceConfig
from printfleet.config.secrets import (
    report_secret_file_permissions,
    resolve_secret_file,
    secret_file_max_size,
)
from printfleet.core.events import ChangeEvent
from printfleet.core.fleet import FleetView
from printfleet.core.model import Snapshot
from printfleet.core.pictures import is_loopback_http
from printfleet.core.polling import PollPolicy
from printfleet.core.rules.acks import ACKS_KEY, acks_from_state
from printfleet.core.rules.engine import RuleEngine
from printfleet.core.source_set import SourceSetChange, diff_source_sets
from printfleet.core.startup import start_delays
from printfleet.core.thresholds import DiffSettings
from printfleet.digests import DigestRunner
from printfleet.errors import EXIT_AUTH, EXIT_OK, ConfigError, PrintfleetError, StoreError
from printfleet.health import HealthServer, bind_problem
from printfleet.metrics.fleet import FleetCollector
from printfleet.metrics.observer import Metrics
from printfleet.outbox import OutboxWorker
from printfleet.picture_links import SourcePictureLinks
from printfleet.pipeline import Pipeline
from printfleet.poller import SourcePoller
from printfleet.rulepacks.loader import load_rule_set, silences_from_state
from printfleet.sinks.factory import ReceiverSink, make_receiver_sink
from printfleet.sinks.mqtt.sink import MqttSink
from printfleet.sinks.pictures import PictureFetcher
from printfleet.sources.base import Source
from printfleet.sources.factory import make_source
from printfleet.statelock import StateDirLock, StateDirLocked
from printfleet.store import FILENAME, Store
from printfleet.supervisor import supervise

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
        queue_interval=p.queue_interval,
    )


@dataclass
class DaemonHooks:
    """Extra observers for embedding the daemon (the demo prints events as they happen)."""

    on_event: Callable[[ChangeEvent], None] = lambda event: None
    on_ready: Callable[[Daemon], None] = lambda daemon: None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Receiver:
    """One running ``[[receiver]]``: its sink, what it was built from, and its own lifetime.

    Each has its own exit stack so that a SIGHUP can close one receiver without the others.
    ``url`` and ``secret`` are the file contents it was built with: a rotated secret file is a
    changed receiver even when the config text is the same.
    """

    config: ReceiverConfig
    url: str
    secret: str | None
    sink: ReceiverSink
    stack: AsyncExitStack


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
        # Kept for SIGHUP, which builds, starts and stops receivers while the daemon runs.
        self._client: httpx.AsyncClient | None = None
        self._credentials_dir: Path | None = None
        self._receivers: dict[str, _Receiver] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._deliverers: dict[str, asyncio.Task[None]] = {}
        # Per source: what it was built from (compared on SIGHUP) and its running poll task.
        self._source_builds: dict[str, _SourceBuild] = {}
        self._poll_tasks: dict[str, asyncio.Task[None]] = {}
        self._auth_rejected: str | None = None
        # Fresh picture links for chat receivers, asked of the running sources (one cache).
        self.picture_links = SourcePictureLinks(
            lambda: {s.name: s for s in self.sources}, clock=self.clock
        )

    @property
    def poll_tasks(self) -> Mapping[str, asyncio.Task[None]]:
        """The running poll task of each source (a SIGHUP replaces only those it changes)."""
        return MappingProxyType(self._poll_tasks)

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
        credentials_dir = self._credentials_dir = _credentials_dir()
        client = self._client = httpx.AsyncClient(
            headers={"User-Agent": f"printfleet/{__version__}"},
            transport=self._transport,
            follow_redirects=False,
        )
        stack.push_async_callback(client.aclose)

        state_dir = settings.daemon.state_dir
        # Before the store opens: a second daemon here would poll the same accounts (doubling
        # the shared request budget) and deliver the same outbox entries.
        try:
            lock = StateDirLock.acquire(state_dir)
        except StateDirLocked as err:
            log.error(
                "daemon.state_dir_locked",
                state_dir=str(err.state_dir),
                pid=err.pid,
                hint="stop the other printfleet, or give this one its own [daemon] state_dir",
            )
            raise
        stack.callback(lock.release)
        self.store = Store.open(state_dir / FILENAME, clock=self.clock)
        stack.callback(self.store.close)

        rule_set = load_rule_set(settings, base_dir=self._base_dir())
        self.engine = RuleEngine(rule_set, state=self.store.load_state("rules"))
        self._refresh_silences()

        # One callback for all: SIGHUP adds and removes sources while the daemon runs.
        stack.push_async_callback(self._close_sources)
        for cfg in settings.source:
            self.sources.append(self._make_source(cfg))
            self._source_builds[cfg.name] = self._source_build(cfg)

        sinks: dict[str, Any] = {}
        secret_max = secret_file_max_size(settings)
        if settings.mqtt.enabled:
            password = read_secret(
                settings.mqtt.password,
                settings.mqtt.password_file,
                key="mqtt.password_file",
                config_file=self.config_file or Path("<settings>"),
                credentials_dir=credentials_dir,
                max_size=secret_max,
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
        # Receivers are closed at shutdown like every sink, in their own stacks (see _Receiver).
        stack.push_async_callback(self._close_receivers)
        for receiver in settings.receiver:
            running = await self._open_receiver(receiver, self._read_receiver_secrets(receiver))
            self._receivers[receiver.name] = running
            sinks[receiver.name] = running.sink
        configs = {r.name: r for r in settings.receiver}
        for name, sink in sinks.items():
            # MQTT has no [[receiver]] entry: its messages expire after the default 24 h.
            self.workers[name] = self._worker(sink, configs.get(name))

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
            digests=(
                DigestRunner(settings.digest, store, default_timezone=settings.rules.timezone)
                if settings.digest
                else None
            ),
        )

        if settings.metrics.enabled:
            self.registry.register(
                FleetCollector(
                    view=lambda: self.pipeline.view if self.pipeline else FleetView(),
                    budgets=lambda: {s.name: s.budget() for s in self.sources},
                    outbox=lambda: (store.pending_count(), store.dead_count()),
                    sinks=lambda: tuple(self.workers),
                )
            )
            self.health = HealthServer(settings.metrics.listen, self.registry, ready=self._ready)
            try:
                self.health.start()
            except OSError as err:
                # One line and exit 2 (not a traceback and exit 1, which systemd would
                # restart in a loop): a port in use is fixed in the config or on the host.
                message, fix = bind_problem(settings.metrics.listen, err)
                config_file = self.config_file or Path("<settings>")
                raise ConfigError(
                    problem_at(config_file, ("metrics", "listen"), message, fix)
                ) from None
            stack.callback(self.health.stop)

        self.metrics.track_tasks(
            [s.name for s in self.sources],
            [
                *(f"poll:{s.name}" for s in self.sources),
                *(f"outbox:{name}" for name in self.workers),
                *(["mqtt"] if self.mqtt is not None else []),
                "timers",
                "silences",
            ],
        )
        report_secret_file_permissions()
        for source in self.sources:
            self.pollers.append(self._resumed_poller(source))
        return EXIT_OK

    async def _serve(self) -> None:
        assert self.pipeline is not None
        pipeline = self.pipeline
        async with asyncio.TaskGroup() as tasks:
            # Every long-running task runs supervised: an exception in one is logged, counted
            # and the task restarted; it never cancels its siblings (only start-up problems and
            # signals end the process). Three groups, stopped in this order on shutdown:
            # producers, deliverers, MQTT.
            self._tasks = tasks
            delays = start_delays(len(self.pollers), self.settings.poll.interval.total_seconds())
            for poller, delay in zip(self.pollers, delays, strict=True):
                self._run_poller(poller, self._poller_task(poller, start_delay=delay))
            producers: list[asyncio.Task[Any]] = []
            producers.append(tasks.create_task(self._supervised("timers", pipeline.run_timers)))
            producers.append(tasks.create_task(self._supervised("silences", self._watch_silences)))
            interval = systemd.watchdog_interval()
            if interval:
                producers.append(tasks.create_task(_watchdog(interval)))
            for name in self.workers:
                self._start_deliverer(name)
            connection = (
                tasks.create_task(self._supervised("mqtt", self.mqtt.run))
                if self.mqtt is not None
                else None
            )
            # READY does not wait for a first poll: a vendor that stalls it would keep the
            # daemon (and systemd's start job) waiting forever. /readyz still says whether
            # every source was polled successfully.
            systemd.notify("READY=1", f"STATUS=watching {len(self.pollers)} source(s)")
            log.info("daemon.ready", sources=len(self.pollers), sinks=sorted(self.workers))
            self.hooks.on_ready(self)
            while not self.stop_event.is_set():
                reload_wait = asyncio.create_task(self._reload_requested.wait())
                stop_wait = asyncio.create_task(self.stop_event.wait())
                await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                reload_wait.cancel()
                stop_wait.cancel()
                if self._reload_requested.is_set() and not self.stop_event.is_set():
                    self._reload_requested.clear()
                    try:
                        await self._reload()
                    except Exception as err:  # after the swap: never let a reload end the daemon
                        log.error("reload.crashed", error_type=type(err).__name__, exc_info=err)
                        systemd.notify("READY=1")
            systemd.notify("STOPPING=1")
            log.info("daemon.stopping")
            polls = list(self._poll_tasks.values())
            self._poll_tasks.clear()
            await _cancel([*polls, *producers])
            # Deliver what is due while MQTT is still connected; the rest stays in the outbox.
            await self._drain()
            await _cancel(list(self._deliverers.values()))
            self._tasks = None
            if connection is not None:
                await _cancel([connection])  # publishes `offline` before disconnecting
        if self._auth_rejected is not None:
            raise _AuthRejectedAtStartup(self._auth_rejected)

    async def _supervised(self, task: str, start: Callable[[], Awaitable[None]]) -> None:
        await supervise(task, start, clock=self.clock, observer=self.metrics)

    def _poller_task(
        self, poller: SourcePoller, *, at_start_up: bool = True, start_delay: float = 0.0
    ) -> Callable[[], Awaitable[None]]:
        """The poller's task: the first poll checks the credentials, then poll forever.

        A restart after a crash goes straight to the loop (the first poll was done). A source
        added by SIGHUP (``at_start_up=False``) just polls: rejected credentials then are a
        ``source.auth_failed`` like any later rejection, not a reason to stop the daemon.
        ``start_delay``: seconds to wait before the first poll (many sources start spread
        over one interval, see :func:`~printfleet.core.startup.start_delays`); waited once,
        not again after a crash.
        """
        first = at_start_up
        delayed = start_delay <= 0

        async def start() -> None:
            nonlocal first, delayed
            if not delayed:
                await self.clock.sleep(start_delay)
                delayed = True
            if first:
                delay = await poller.poll_once()
                first = False  # only now: a first poll that crashed is tried again as first
                if poller.last_outcome == "auth":
                    # Rejected credentials at start-up stop the daemon with exit code 3
                    # instead of leaving a running, useless one.
                    log.error(
                        "daemon.auth_rejected",
                        source=poller.name,
                        hint="check the client id and secret (Formlabs) or secrets.json (Carbon)",
                    )
                    if self._auth_rejected is None:
                        self._auth_rejected = poller.name
                    self.stop()
                    return
                await self.clock.sleep(delay)
            await poller.run()

        return start

    def _refresh_silences(self) -> None:
        """Apply the ad-hoc silences `printfleet silence add` and the acks `printfleet ack`
        keep in the state store."""
        if self.store is None or self.engine is None:
            return
        try:
            self.engine.set_silences(silences_from_state(self.store.load_state("silences")))
            self.engine.set_acks(acks_from_state(self.store.load_state(ACKS_KEY)))
        except PrintfleetError as err:
            log.warning("silences.unreadable", error=str(err))

    async def _watch_silences(self, every: float = 30.0) -> None:
        # The CLI writes silences and acks into the store while the daemon runs; pick them up.
        while True:
            await self.clock.sleep(every)
            self._refresh_silences()

    async def _drain(self) -> None:
        grace = self.settings.daemon.shutdown_grace.total_seconds()
        if self.workers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.gather(*(w.drain(grace) for w in self.workers.values()))

    async def _reload(self) -> None:
        """SIGHUP: reload config, rule packs, receivers and sources; an invalid reload changes
        nothing.

        Everything is read and built first (settings, rules, every receiver's and every new or
        changed source's secret files, the new sinks and sources); only when all of it worked
        are receivers and sources swapped and the rules replaced. A removed receiver's worker
        stops; its entries stay in the outbox (durable), are reported with their count, and go
        out if the receiver comes back. Sources: see :meth:`_apply_sources`.
        """
        systemd.reloading()
        opened: dict[str, _Receiver] = {}
        built: dict[str, tuple[Source, _SourceBuild]] = {}
        try:
            if self.config_file is not None:
                fresh = load_settings(self.config_file)
            else:
                fresh = self.settings
            rule_set = load_rule_set(fresh, base_dir=self._base_dir())
            wanted = {r.name: r for r in fresh.receiver}
            changed: list[str] = []
            for name, receiver in wanted.items():
                url, secret = self._read_receiver_secrets(receiver)
                running = self._receivers.get(name)
                if (
                    running is not None
                    and running.config == receiver
                    and running.url == url.get_secret_value()
                    and running.secret == (secret.get_secret_value() if secret else None)
                ):
                    continue
                opened[name] = await self._open_receiver(receiver, (url, secret))
                if running is not None:
                    changed.append(name)
            builds = {cfg.name: self._source_build(cfg) for cfg in fresh.source}
            sources = diff_source_sets(self._source_builds, builds)
            for cfg in fresh.source:
                if cfg.name in sources.added or cfg.name in sources.changed:
                    built[cfg.name] = (self._make_source(cfg), builds[cfg.name])
        except Exception as err:
            for unused in opened.values():
                await unused.stack.aclose()
            for source, _ in built.values():
                await _close_quietly(source)
            if isinstance(err, ConfigError):
                log.error(
                    "reload.rejected",
                    problems=[str(p) for p in err.problems],
                    hint="the running rules, receivers, sources and config stay in force",
                )
            else:  # a bug or an odd file: the reload fails, the daemon does not
                log.error(
                    "reload.crashed",
                    error_type=type(err).__name__,
                    message=str(err)[:200],
                    hint="the running rules, receivers, sources and config stay in force",
                    exc_info=err,
                )
            systemd.notify("READY=1")
            return
        removed = sorted(set(self._receivers) - set(wanted))
        added = sorted(set(opened) - set(changed))
        for name in [*removed, *changed]:
            await self._close_receiver(name, removed=name in removed)
        for name, opened_receiver in opened.items():
            self._receivers[name] = opened_receiver
            self.workers[name] = self._worker(opened_receiver.sink, opened_receiver.config)
            self.metrics.track_tasks([], [f"outbox:{name}"])
            self._start_deliverer(name)
        assert self.engine is not None
        self.engine.replace_rules(rule_set)
        self._refresh_silences()
        await self._apply_sources(sources, built)
        restart = [
            section
            for section in type(fresh).model_fields
            if section not in ("receiver", "rules", "source")
            and getattr(fresh, section) != getattr(self.settings, section)
        ]
        self.settings = self.settings.model_copy(
            update={"receiver": fresh.receiver, "rules": fresh.rules, "source": fresh.source}
        )
        if restart:
            log.warning(
                "reload.restart_needed",
                sections=restart,
                hint="rules, receivers and sources were reloaded; these sections take effect "
                "after a restart (systemctl restart printfleet)",
            )
        log.info(
            "reload.done",
            rules=len(rule_set.rules),
            receivers=sorted(self._receivers),
            added=added,
            changed=sorted(changed),
            removed=removed,
            sources=sorted(self._source_builds),
            sources_added=list(sources.added),
            sources_changed=list(sources.changed),
            sources_removed=list(sources.removed),
        )
        systemd.notify("READY=1", f"STATUS=watching {len(self.pollers)} source(s)")

    # -- sources (built at start-up and on SIGHUP) -----------------------------------------

    def _source_build(self, config: SourceConfig) -> _SourceBuild:
        """What ``config`` builds a source from, to compare on SIGHUP (secret files by digest)."""
        digest = hashlib.sha256()
        # Past the size limit the content no longer matters: building the source refuses it.
        limit = secret_file_max_size(self.settings) + 1
        for path in (config.client_secret_file, config.secrets_file):
            if path is None:
                continue
            try:
                with resolve_secret_file(path, self._credentials_dir).open("rb") as handle:
                    digest.update(handle.read(limit))
            except OSError as err:
                # Differs from any content: the source counts as changed, and building it
                # reports the file the way start-up does.
                digest.update(f"unreadable:{err.errno}".encode())
            digest.update(b"\0")
        return _SourceBuild(config, digest.hexdigest())

    def _make_source(self, config: SourceConfig) -> Source:
        """The source of ``config``; ``[poll]`` and ``[limits]`` are those in force.

        Raises:
            ConfigError: a secret file is missing, unreadable, empty or malformed.
        """
        assert self._client is not None  # opened first
        settings = self.settings
        return make_source(
            config,
            client=self._client,
            clock=self.clock,
            offline_after=config.offline_after or settings.poll.offline_after,
            observer=self.metrics,
            credentials_dir=self._credentials_dir,
            limits=settings.limits,
        )

    def _resumed_poller(self, source: Source) -> SourcePoller:
        """The poller of ``source`` continuing from what the store holds of it (start-up, or a
        source added by SIGHUP: one that was configured before resumes without re-announcing
        its printers), its restored snapshot and counters made visible before the first poll."""
        assert self.store is not None
        assert self.pipeline is not None
        previous = self.store.load_snapshot(source.name)
        if previous is not None:
            self._restore_counters(self.store, source.name, previous)
        self.pipeline.seed(source.name, previous)
        return self._new_poller(source, previous)

    def _new_poller(self, source: Source, previous: Snapshot | None) -> SourcePoller:
        """A poller of ``source`` diffing against ``previous``, with the cursors, the open
        outage and the feed memory the store holds for it."""
        assert self.store is not None
        assert self.pipeline is not None
        store = self.store
        watermark_text = store.load_state(f"watermark:{source.name}")
        return SourcePoller(
            source,
            handle=self.pipeline.handle,
            clock=self.clock,
            policy=poll_policy(self.settings),
            diff_settings=diff_settings(self.settings),
            previous=previous,
            watermark=datetime.fromisoformat(watermark_text) if watermark_text else None,
            observer=self.metrics,
            outage=store.load_state(f"outage:{source.name}"),
            feed_memory=store.load_state(f"feed:{source.name}"),
        )

    def _run_poller(self, poller: SourcePoller, start: Callable[[], Awaitable[None]]) -> None:
        """Run ``start`` supervised as the poll task of ``poller`` (in the serving task group)."""
        assert self._tasks is not None
        self._poll_tasks[poller.name] = self._tasks.create_task(
            self._supervised(f"poll:{poller.name}", start)
        )

    async def _stop_poller(self, name: str) -> None:
        """Cancel the poll task of ``name`` and wait for it to end.

        A cycle is handed to the pipeline, which commits it, without an await in between
        (:meth:`Pipeline.handle` does not suspend), so the cancellation lands either before a
        cycle is taken (nothing of it is kept; the next poller fetches it again) or after it
        was committed in full: never in a half-committed cycle.
        """
        task = self._poll_tasks.pop(name, None)
        if task is not None:
            await _cancel([task])

    async def _apply_sources(
        self, change: SourceSetChange, built: dict[str, tuple[Source, _SourceBuild]]
    ) -> None:
        """Apply a reload's source changes; sources not named in ``change`` are not touched.

        Removed: its poller is stopped, its printers leave the fleet view (so their retained
        MQTT topics, Home Assistant entities included, are cleared and their gauges vanish),
        its other series are removed and /readyz no longer waits for it; what the store holds
        of it (snapshot, cursors, history) stays, so adding it back resumes where it was.
        Changed: its poller is rebuilt with the new settings and goes on from the last
        snapshot it took. Added: started as at start-up, except that rejected credentials
        are reported as ``source.auth_failed`` instead of stopping the daemon.
        """
        assert self.pipeline is not None
        for name in change.removed:
            await self._stop_poller(name)
            gone = [s for s in self.sources if s.name == name]
            self.sources = [s for s in self.sources if s.name != name]
            self.pollers = [p for p in self.pollers if p.name != name]
            del self._source_builds[name]
            self.pipeline.forget(name)
            self.metrics.forget_source(name)
            for source in gone:
                await _close_quietly(source)
            log.info("reload.source_removed", source=name)
        for name in change.changed:
            source, build = built[name]
            await self._stop_poller(name)
            old = next(p for p in self.pollers if p.name == name)
            poller = self._new_poller(source, old.previous)
            retired = [s for s in self.sources if s.name == name]
            self.sources = [source if s.name == name else s for s in self.sources]
            self.pollers = [poller if p.name == name else p for p in self.pollers]
            self._source_builds[name] = build
            for stale in retired:
                await _close_quietly(stale)
            self._run_poller(poller, self._poller_task(poller, at_start_up=False))
        for name in change.added:
            source, build = built[name]
            self.metrics.track_tasks([name], [f"poll:{name}"])
            poller = self._resumed_poller(source)
            self.sources = [*self.sources, source]
            self.pollers = [*self.pollers, poller]
            self._source_builds[name] = build
            self._run_poller(poller, self._poller_task(poller, at_start_up=False))

    async def _close_sources(self) -> None:
        for source in self.sources:
            await _close_quietly(source)

    # -- receivers (built at start-up and on SIGHUP) ---------------------------------------

    def _read_receiver_secrets(
        self, receiver: ReceiverConfig
    ) -> tuple[SecretStr, SecretStr | None]:
        """The receiver's URL and signing secret, read from their files when configured.

        Raises:
            ConfigError: a secret file is missing, unreadable or empty.
        """
        config_file = self.config_file or Path("<settings>")
        url = read_secret(
            receiver.url,
            receiver.url_file,
            key=f"receiver.{receiver.name}.url_file",
            config_file=config_file,
            credentials_dir=self._credentials_dir,
            max_size=secret_file_max_size(self.settings),
        )
        secret = read_secret(
            receiver.secret,
            receiver.secret_file,
            key=f"receiver.{receiver.name}.secret_file",
            config_file=config_file,
            credentials_dir=self._credentials_dir,
            max_size=secret_file_max_size(self.settings),
        )
        assert url is not None  # the schema requires url or url_file
        return url, secret

    async def _open_receiver(
        self, receiver: ReceiverConfig, secrets: tuple[SecretStr, SecretStr | None]
    ) -> _Receiver:
        """The receiver's sink, entered (deliver() refuses to send through an unopened sink)."""
        assert self._client is not None
        url, secret = secrets
        sink = make_receiver_sink(
            receiver,
            url,
            secret,
            client=self._client,
            clock=self.clock,
            version=__version__,
            config_file=self.config_file or Path("<settings>"),
            reply_max_size=self.settings.limits.reply_max_size,
            pictures=(
                PictureFetcher(
                    self.picture_links,
                    client=self._client,
                    allow_plain_loopback=_only_local_sources(self.settings),
                )
                if receiver.pictures
                else None
            ),
        )
        stack = AsyncExitStack()
        await stack.enter_async_context(sink)
        return _Receiver(
            receiver,
            url.get_secret_value(),
            secret.get_secret_value() if secret else None,
            sink,
            stack,
        )

    async def _close_receiver(self, name: str, *, removed: bool) -> None:
        """Stop the receiver's worker and close its sink; its outbox entries stay pending."""
        task = self._deliverers.pop(name, None)
        if task is not None:
            await _cancel([task])
        self.workers.pop(name, None)
        running = self._receivers.pop(name)
        await running.stack.aclose()
        if removed:
            try:
                pending: int | None = self.store.pending_count(name)[name] if self.store else 0
            except PrintfleetError:
                pending = None  # the store is failing; outbox list will say once it works
            log.warning(
                "reload.receiver_removed",
                sink=name,
                pending=pending,
                hint=f"its pending deliveries stay in the outbox (printfleet outbox list "
                f"--sink {name}); they are sent if the receiver is configured again",
            )

    async def _close_receivers(self) -> None:
        for name in list(self._receivers):
            await self._receivers.pop(name).stack.aclose()

    def _worker(self, sink: Any, receiver: ReceiverConfig | None) -> OutboxWorker:
        kwargs: dict[str, Any] = {"clock": self.clock, "observer": self.metrics}
        if receiver is not None:
            kwargs["max_age"] = receiver.max_age
        assert self.store is not None  # opened before any sink
        return OutboxWorker(self.store, sink, **kwargs)

    def _start_deliverer(self, name: str) -> None:
        """Run the worker of sink ``name`` in the daemon's task group (once it is serving)."""
        if self._tasks is None:
            return  # not serving yet: _serve starts every worker
        self._deliverers[name] = self._tasks.create_task(
            self._supervised(f"outbox:{name}", self.workers[name].run)
        )

    def _restore_counters(self, store: Store, source: str, previous: Snapshot) -> None:
        """Continue prints_total and resin_used_ml_total from the stored print history."""
        try:
            totals = store.history_totals(source)
        except StoreError as err:
            # Counters starting from 0 are a legal reset; not a reason to refuse to start.
            log.warning("metrics.restore_failed", source=source, error=str(err))
            return
        self.metrics.restore_history(source, totals, previous.printers)

    # -- wiring callbacks ------------------------------------------------------------------

    def _wake(self, sinks: set[str]) -> None:
        for name in sinks:
            worker = self.workers.get(name)
            if worker is not None:
                worker.wake()

    def _view_changed(self, view: FleetView) -> None:
        self.metrics.track_fleet(view)
        if self.health is not None:
            self.health.view_changed()  # pre-render /metrics off the loop
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
        # The sources, not only the pollers: /readyz is served while start-up still builds
        # the pollers (seconds with hundreds of sources), and no poller yet is not "ready".
        names = dict.fromkeys([*(s.name for s in self.sources), *(p.name for p in self.pollers)])
        for name in names:
            if name not in self.pipeline.view.health:
                problems.append(f"source {name} not polled yet")
        if self.mqtt is not None and not self.mqtt.connected:
            problems.append("mqtt disconnected")
        return (not problems, "; ".join(problems) or "ok")

    def _base_dir(self) -> Path:
        return self.config_file.parent if self.config_file else Path.cwd()


@dataclass(frozen=True, slots=True)
class _SourceBuild:
    """What a running source was built from: its config section and a digest of its secret
    files' content, so a rotated secret file is a changed source even when the config text
    is the same. Never logged (the config may hold a secret; the digest is of secrets)."""

    config: SourceConfig
    secrets_digest: str = field(repr=False)


async def _close_quietly(source: Source) -> None:
    """Close a source that is going away; a failing close must not fail the reload."""
    try:
        await source.aclose()
    except Exception as err:
        log.warning("source.close_failed", source=source.name, error_type=type(err).__name__)


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


def _only_local_sources(settings: Settings) -> bool:
    """Every source is a simulator on this host (plain http to loopback, as `printfleet demo`
    and the tests run): only then may picture links be plain http to loopback too."""
    return bool(settings.source) and all(
        is_loopback_http(source.base_url) for source in settings.source
    )
