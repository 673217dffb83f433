"""What a simulator run looks like: fleet sizes, clock speed, limits and lifecycle odds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

VENDORS = ("formlabs", "carbon")


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Immutable settings of one :class:`~printfleet.simulator.Simulator`.

    Probabilities are per print (``*_probability``) or per idle gap (``offline_probability``,
    ``maintenance_probability``). All durations are simulated seconds.
    """

    formlabs_printers: int = 20
    carbon_printers: int = 10
    speed: float = 60.0
    """Simulated seconds per real second for the default clock (ignored when ``now`` is given)."""
    seed: int = 1
    formlabs_hourly_limit: int = 1500
    """Per-account requests per hour (sliding window); token requests do not count."""
    formlabs_per_second_limit: int = 100
    """Per-client-IP requests per second, all Formlabs requests including token requests."""
    carbon_limit_per_10s: int = 100
    """Per-``iss`` requests per 10 s (sliding window); requests failing auth do not count."""
    token_expires_in: int = 86400
    """``expires_in`` of Formlabs tokens, in seconds of the protocol clock."""

    formlabs_accounts: int = 1
    carbon_accounts: int = 1
    """Printers are dealt round-robin over the accounts; each account has its own credentials."""
    vendors: tuple[str, ...] = VENDORS
    """Which vendor servers :meth:`Simulator.start` opens."""
    host: str = "127.0.0.1"
    formlabs_port: int = 0
    carbon_port: int = 0
    start: datetime | None = None
    """Simulated start instant for the default clock (default: the real time at construction)."""
    protocol_clock: Literal["simulated", "wall"] = "simulated"
    """Clock judging token lifetimes, JWT ``exp``, cursor expiry and rate-limit windows.

    ``simulated`` (default) keeps everything on one clock, as tests with a fake clock want.
    ``wall`` suits a demo where the daemon runs on real time while the fleet runs ``speed`` times
    faster: otherwise a JWT minted with ``exp = now + 600`` real seconds expires after 10 real
    seconds at ``speed=60``.
    """

    heartbeat_s: int = 30
    """Online printers ping (and refresh live print fields) every this many seconds."""
    cursor_ttl_s: int = 60
    picture_link_ttl_s: int = 3600
    """Signed picture links (thumbnails, post-print photos) stay valid between one and two of
    these after the record that carries them; then 403, like an expired S3 link."""
    per_page_default: int = 20
    per_page_max: int = 100

    error_probability: float = 0.07
    abort_probability: float = 0.05
    pause_probability: float = 0.10
    """Formlabs only: Carbon has no pause state."""
    resolution_probability: float = 0.05
    """Formlabs only: WAITING_FOR_RESOLUTION; a quarter of those end in ERROR."""
    offline_probability: float = 0.05
    maintenance_probability: float = 0.03
    """Carbon only: the undocumented ``MAINTENANCE`` printer_state during an idle gap."""
    history_s: int = 6 * 3600
    """Each printer is switched on between ``history_s / 12`` and ``history_s`` before the start
    and runs silently until then, so the fleet starts mid-life with history (no ground truth).
    Smaller values build big fleets faster (the cost is linear in it)."""
    churn: bool = False
    """Add and remove printers now and then (about every 6 simulated hours per vendor)."""

    # Documented Formlabs wire variants (shared/api/formlabs.md), each on a seeded share of
    # records so one fleet exercises every shape an adapter must read.
    formlabs_cartridge_list_share: float = 0.5
    """Share of single-cartridge printers whose ``cartridge_status`` is a one-element list
    without ``cartridge_slot`` (§6.1: "Form 3 sends a list"; §6.3: the slot is optional); the
    others send the bare object. Dual-cartridge printers always send the FRONT/BACK list."""
    formlabs_ungrouped_share: float = 0.05
    """Share of printers in no group: ``group`` is null on the printer, its runs and events."""
    formlabs_note_share: float = 0.2
    """Share of print runs that someone annotates after they end (``note`` a ``PrintRunNote``);
    the others keep ``note: null``."""
    formlabs_verdict_failure_share: float = 0.15
    """Share of rated FINISHED prints a person rates FAILURE (``print_run_success``); the rest
    SUCCESS. Failed and aborted prints are always rated FAILURE. Which prints get rated at all
    (30 %) is part of the seeded history."""
    formlabs_form_auto_share: float = 0.2
    """Share of single-cartridge printers with a Form Auto: their runs carry
    ``form_auto_serial`` and, once ended, ``harvest_status``."""
    formlabs_harvest_failed_share: float = 0.1
    """Share of finished Form Auto runs whose harvest fails (``FORM_CELL_HARVEST_FAILED``):
    the run stays on the printer, parts on the platform, until a person clears it."""
    formlabs_not_ready_share: float = 0.08
    """Share of idle gaps with a spell of ``READY_TO_PRINT_NOT_READY``."""
    formlabs_legacy_share: float = 0.2
    """Share of print runs rendered in the 0.8.0 shape, which still carries the boolean
    ``probably_finished`` that 0.8.1 dropped (§6.6, §6.12: removed fields may still be sent)."""

    def __post_init__(self) -> None:
        for vendor in self.vendors:
            if vendor not in VENDORS:
                raise ValueError(f"unknown vendor {vendor!r}; expected one of {VENDORS}")
        if self.formlabs_printers < 0 or self.carbon_printers < 0:
            raise ValueError("printer counts must be >= 0")
        if self.formlabs_accounts < 1 or self.carbon_accounts < 1:
            raise ValueError("each vendor needs at least one account")
        if self.speed <= 0:
            raise ValueError("speed must be > 0")
        if self.history_s < 12:
            raise ValueError("history_s must be >= 12 seconds")
        if self.heartbeat_s < 1:
            raise ValueError("heartbeat_s must be >= 1")
        for name in _SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


_SHARES = (
    "formlabs_cartridge_list_share",
    "formlabs_ungrouped_share",
    "formlabs_note_share",
    "formlabs_legacy_share",
    "formlabs_verdict_failure_share",
    "formlabs_form_auto_share",
    "formlabs_harvest_failed_share",
    "formlabs_not_ready_share",
)
