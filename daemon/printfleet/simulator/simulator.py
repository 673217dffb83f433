"""The facade: one simulated fleet served as both vendor APIs on their own ports."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from printfleet.simulator import queues
from printfleet.simulator.carbon import CarbonApi
from printfleet.simulator.clock import SimClock, utc
from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.engine import Engine
from printfleet.simulator.faults import Faults
from printfleet.simulator.fleet import QueueItem
from printfleet.simulator.formlabs import FormlabsApi
from printfleet.simulator.gateway import Gateway, RequestRecord, VendorApi
from printfleet.simulator.population import populate
from printfleet.simulator.rng import derive_seed
from printfleet.simulator.server import HttpServer
from printfleet.simulator.truth import GroundTruthEvent


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """Credentials of one simulated vendor account.

    Formlabs: ``client_secret`` is the OAuth client secret. Carbon: it is the PEM private key, and
    ``secrets`` is the ``secrets.json`` content the vendor hands out.
    """

    vendor: str
    name: str
    client_id: str
    client_secret: str = field(repr=False)  # secrets never show up in reprs or logs

    @property
    def secrets(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self.client_secret}


class Simulator:
    """A simulated fleet behind real HTTP servers speaking the Formlabs and Carbon APIs.

    The fleet is built (deterministically from ``config.seed``) at construction; :meth:`start`
    opens the servers and returns at once, so it works from sync code and from asyncio tests.
    Every request first advances the fleet to ``now()``. All methods are thread-safe.

    Args:
        config: fleet size, limits, odds; defaults to :class:`SimulatorConfig()`.
        now: a time source returning aware UTC datetimes (e.g. a fake clock shared with the
            daemon); the fleet starts at its first reading (``config.start`` and ``config.speed``
            are then unused). Default: real time scaled by ``config.speed`` from
            ``config.start``.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config = config or SimulatorConfig()
        start = utc(config.start) if config.start is not None else datetime.now(UTC)
        if now is not None:
            start = now()
        self._clock = SimClock(now, start=start, speed=config.speed, protocol=config.protocol_clock)
        self._lock = threading.RLock()
        self._requests: list[RequestRecord] = []
        self._faults = Faults()
        self._engine = Engine(config, int(start.timestamp()))
        populate(self._engine, int(start.timestamp()))
        self._apis: dict[str, VendorApi] = {
            "formlabs": FormlabsApi(self._engine, config, self._faults),
            "carbon": CarbonApi(self._engine, config, self._faults),
        }
        self._servers: dict[str, HttpServer] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open one server per configured vendor (``config.vendors``) and start serving."""
        if self._servers:
            raise RuntimeError("simulator already started")
        ports = {"formlabs": self.config.formlabs_port, "carbon": self.config.carbon_port}
        try:
            for vendor in self.config.vendors:
                api = self._apis[vendor]
                gateway = Gateway(
                    api,
                    self._faults,
                    engine=self._engine,
                    clock=self._clock,
                    lock=self._lock,
                    log=self._requests,
                    seed=derive_seed(self.config.seed, "faults", vendor),
                )
                server = HttpServer(gateway.handle, self.config.host, ports[vendor])
                api.base_url = f"http://{self.config.host}:{server.port}"
                server.start()
                self._servers[vendor] = server
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Close the servers (open connections too). Idempotent."""
        servers, self._servers = self._servers, {}
        for server in servers.values():
            server.stop()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def faults(self) -> Faults:
        """The fault knobs: ``faults.formlabs`` and ``faults.carbon`` (mutable at any time)."""
        return self._faults

    # --- where and who --------------------------------------------------------------------------

    def _url(self, vendor: str) -> str:
        server = self._servers.get(vendor)
        if server is None:
            raise RuntimeError(f"the {vendor} server is not running (call start())")
        return f"http://{self.config.host}:{server.port}"

    @property
    def formlabs_url(self) -> str:
        """Base URL for the Formlabs source, e.g. ``http://127.0.0.1:PORT``."""
        return self._url("formlabs")

    @property
    def carbon_url(self) -> str:
        """Base URL for the Carbon source, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self._url("carbon") + "/v1"

    @property
    def accounts(self) -> list[AccountInfo]:
        """Credentials of every simulated account, Formlabs first."""
        return [
            AccountInfo(a.vendor, a.name, a.client_id, a.secret)
            for vendor in ("formlabs", "carbon")
            for a in self._engine.accounts[vendor]
        ]

    def _first(self, vendor: str) -> AccountInfo:
        for info in self.accounts:
            if info.vendor == vendor:
                return info
        raise RuntimeError(f"no {vendor} account (vendor not in config.vendors)")

    @property
    def formlabs_client_id(self) -> str:
        """Client ID of the first Formlabs account."""
        return self._first("formlabs").client_id

    @property
    def formlabs_client_secret(self) -> str:
        """Client secret of the first Formlabs account."""
        return self._first("formlabs").client_secret

    @property
    def carbon_secrets(self) -> dict[str, str]:
        """``secrets.json`` content of the first Carbon account (secret = PEM private key)."""
        return self._first("carbon").secrets

    def write_carbon_secrets(self, path: str | os.PathLike[str], account: int = 0) -> Path:
        """Write a Carbon account's ``secrets.json`` (mode 0600) and return its path."""
        infos = [info for info in self.accounts if info.vendor == "carbon"]
        target = Path(path)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(infos[account].secrets, handle, indent=2)
        return target

    # --- time -----------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulator's current instant (aware UTC)."""
        return self._clock.now()

    def advance_to(self, moment: datetime) -> None:
        """Move simulated time forward to ``moment`` and run the fleet up to it (deterministic)."""
        with self._lock:
            self._clock.advance_to(utc(moment))
            self._engine.advance_to(int(self._clock.now().timestamp()))

    # --- observation ----------------------------------------------------------------------------

    @property
    def ground_truth(self) -> list[GroundTruthEvent]:
        """Every real transition since the start, oldest first (brings the fleet up to now)."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            return list(self._engine.truth)

    @property
    def feed(self) -> list[dict[str, Any]]:
        """Every Formlabs ``/events/`` entry written so far, oldest first, as plain facts
        (``id``, ``time``, ``type``, ``printer``, ``print_id``, ``cartridge``): what the
        vendor's feed witnessed, for tests scoring the daemon's second witness."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            return [
                {
                    "id": e.id,
                    "time": datetime.fromtimestamp(e.created_at, UTC),
                    "type": e.type,
                    "printer": e.printer,
                    "print_id": e.run.guid if e.run is not None else None,
                    "cartridge": e.cartridge,
                }
                for account in self._engine.accounts["formlabs"]
                for e in account.events
            ]

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request served so far: (time, vendor, method, path+query, status; 0 = reset)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, vendor: str | None = None, path_prefix: str | None = None) -> int:
        """How many requests matched ``vendor`` and a request target starting ``path_prefix``."""
        with self._lock:
            return sum(
                1
                for record in self._requests
                if (vendor is None or record.vendor == vendor)
                and (path_prefix is None or record.path.startswith(path_prefix))
            )

    def serials(self, vendor: str) -> list[str]:
        """Serials of the vendor's printers right now, in registration order."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            return [p.serial for p in self._engine.printers(vendor)]

    # --- interventions --------------------------------------------------------------------------

    def expire_tokens(self, vendor: str | None = None) -> None:
        """Invalidate every token issued so far (Formlabs) / reject each seen JWT once (Carbon)."""
        with self._lock:
            for name, api in self._apis.items():
                if vendor is None or vendor == name:
                    api.expire_tokens()

    def add_printer(self, vendor: str, account: int = 0) -> str:
        """Register a new printer now (ground truth ``printer.added``); returns its serial."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            target = self._engine.accounts[vendor][account]
            return self._engine.add_printer(vendor, target).serial

    def fleet_control_groups(self, account: int = 0) -> dict[str, list[str]]:
        """Formlabs Fleet Control group ids with the serials of their printers, right now."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            target = self._engine.accounts["formlabs"][account]
            groups: dict[str, list[str]] = {g.id: [] for g in target.groups if g.has_fleet_control}
            for printer in target.printers.values():
                if printer.group is not None and printer.group.id in groups:
                    groups[printer.group.id].append(printer.serial)
            return groups

    def queue_items(self, group_id: str, account: int = 0) -> list[QueueItem]:
        """The jobs waiting in a Formlabs Fleet Control group's queue, oldest first."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            return list(self._engine.accounts["formlabs"][account].queues.get(group_id, []))

    def set_queue(self, group_id: str, count: int, *, age_s: int = 0, account: int = 0) -> None:
        """Replace a Formlabs group's queue with ``count`` jobs created ``age_s`` ago."""
        with self._lock:
            now = int(self._clock.now().timestamp())
            self._engine.advance_to(now)
            target = self._engine.accounts["formlabs"][account]
            group = next(g for g in target.groups if g.id == group_id)
            target.queues[group_id] = []
            queues.add(target, group, now - age_s, count)

    def remove_printer(self, vendor: str, serial: str) -> None:
        """Deregister a printer now (ground truth ``printer.removed``)."""
        with self._lock:
            self._engine.advance_to(int(self._clock.now().timestamp()))
            printer = self._engine.printer(vendor, serial)
            if printer is None:
                raise KeyError(f"no {vendor} printer {serial!r}")
            self._engine.remove_printer(printer)
