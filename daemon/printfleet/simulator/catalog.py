"""Vocabulary the simulator speaks: vendor enum strings, models, materials and name generators.

The enum strings are private copies taken from ``shared/api/formlabs.md`` and ``carbon.md`` (not
imported from ``printfleet.core``), so an adapter bug cannot be mirrored by the fake.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Formlabs StatusEnum (print run status), formlabs.md §6.10 -----------------------------------
QUEUED = "QUEUED"
PREPRINT = "PREPRINT"
PREHEAT = "PREHEAT"
PRECOAT = "PRECOAT"
PRINTING = "PRINTING"
PAUSING = "PAUSING"
PAUSED = "PAUSED"
WAITING_FOR_RESOLUTION = "WAITING_FOR_RESOLUTION"
POSTCOAT = "POSTCOAT"
ABORTING = "ABORTING"
ABORTED = "ABORTED"
ERROR = "ERROR"
FINISHED = "FINISHED"

TERMINAL = frozenset({FINISHED, ABORTED, ERROR})
RUN_STATUSES = frozenset(
    {
        QUEUED,
        PREPRINT,
        PREHEAT,
        PRINTING,
        PAUSING,
        PAUSED,
        WAITING_FOR_RESOLUTION,
        POSTCOAT,
        ABORTING,
        ABORTED,
        ERROR,
        FINISHED,
        PRECOAT,
    }
)

# Formlabs ``printer_status.status`` is a free string (formlabs.md §6.2). Besides the coarse
# words (IDLE, PRINTING, PAUSED, ERROR, WAITING_FOR_RESOLUTION) some printers echo the run's
# phase; ``FILLING`` (resin filling the tank before a print) is a printer word, not a StatusEnum.
FILLING = "FILLING"
PRINTER_PHASE_WORDS = frozenset({FILLING, PREHEAT, PRECOAT, POSTCOAT, PAUSING, ABORTING})

# --- Formlabs event types and their labels, formlabs.md §6.10 ------------------------------------
#: An event type of the simulator's own (formlabs.md documents none for cartridges): what a
#: daemon does not map must still reach users (printfleet: ``vendor.event``).
CARTRIDGE_SWAPPED = "CARTRIDGE_SWAPPED"

EVENT_LABELS: dict[str, str] = {
    CARTRIDGE_SWAPPED: "Cartridge Swapped",
    "PRINT_START": "Print Started",
    "PRINT_FINISHED": "Print finished",
    "PRINT_ERROR": "Print error",
    "PRINT_ABORTED": "Print aborted",
    "PRINT_PAUSED": "Print Paused",
    "PRINT_RESUMED": "Print Resumed",
    "RESIN_LOW": "Resin Low",
    "PRINT_RESOLUTION_REQUEST": "Print Resolution Request",
    "PRINT_RESOLUTION": "Print Resolution",
    "PRINTER_REGISTERED": "Printer Registered",
    "PRINTER_DEREGISTERED": "Printer Deregistered",
}

# --- Carbon ModelPrint.status (carbon.md §6, §8: only `finished` is documented) -----------------
CARBON_QUEUED = "queued"
CARBON_PRINTING = "printing"
CARBON_FINISHED = "finished"
CARBON_FAILED = "failed"
CARBON_CANCELED = "canceled"

#: The ``status`` filter values ``/prints`` accepts: the documented default ``finished`` and the
#: words third-party code filters on (carbon.md §6, §8.2). The simulator refuses every other
#: value with a 400, so a client sending an invented word (``failed``?) is caught in tests.
#: The failed and canceled prints it renders keep the samples' assumed words, which no
#: accepted filter selects: like the real API as far as anyone knows, their outcome cannot be
#: asked for.
CARBON_FILTER_STATUSES: frozenset[str] = frozenset(
    {CARBON_QUEUED, CARBON_PRINTING, CARBON_FINISHED}
)

CARBON_STATUS_OF_RUN: dict[str, str] = {
    QUEUED: CARBON_QUEUED,
    FINISHED: CARBON_FINISHED,
    ERROR: CARBON_FAILED,
    ABORTED: CARBON_CANCELED,
}
"""Engine run status -> Carbon print status; every other (active) status is ``printing``."""

# Carbon printer_state: only PRINTING is documented; IDLE/OFFLINE are the samples' assumptions and
# MAINTENANCE/STANDBY are deliberately undocumented strings that exercise the adapter's leniency.
CARBON_STATE_PRINTING = "PRINTING"
CARBON_STATE_IDLE = "IDLE"
CARBON_STATE_OFFLINE = "OFFLINE"
CARBON_STATE_MAINTENANCE = "MAINTENANCE"
UNKNOWN_IDLE_STATUS = "STANDBY"
UNKNOWN_PREPRINT_STATUS = "PREPRINT_CHECKS"


@dataclass(frozen=True, slots=True)
class Model:
    """A printer model: vendor code, firmware and the consumables it takes."""

    code: str
    label: str
    firmware: str
    tank_type: str | None
    dual_cartridge: bool
    extra_phases: bool  # PREHEAT before and POSTCOAT after printing (Form 4 family)
    seconds_per_layer: tuple[float, float]


FORMLABS_MODELS: tuple[tuple[Model, float], ...] = (
    (Model("FORM-4-0", "Form 4", "2.1.2", "FORM4_RESIN_TANK", False, True, (4.0, 7.0)), 0.40),
    (Model("FORM-3-2", "Form 3+", "1.15.4", "FORM3_RESIN_TANK", False, False, (8.0, 14.0)), 0.15),
    (Model("FORM-3-1", "Form 3", "1.15.4", "FORM3_RESIN_TANK", False, False, (8.0, 14.0)), 0.10),
    (Model("FRMB-3-1", "Form 3B+", "1.15.4", "FORM3_RESIN_TANK", False, False, (8.0, 14.0)), 0.15),
    (Model("FRML-3-0", "Form 3L", "1.15.4", "FORM3L_RESIN_TANK", True, False, (9.0, 15.0)), 0.20),
)
CARBON_MODELS: tuple[tuple[Model, float], ...] = (
    (Model("L1", "Line", "1.19.3-1012.4", None, False, False, (1.5, 3.0)), 0.5),
    (Model("M2", "Midsole Line", "1.19.3-1012.4", None, False, False, (1.5, 3.0)), 0.4),
    (Model("M2", "Cell", "1.18.0-977.2", None, False, False, (1.5, 3.0)), 0.1),
)

FORMLABS_MATERIALS: tuple[tuple[str, str], ...] = (
    ("FLGPGR05", "Grey V5"),
    ("FLGPCL05", "Clear V5"),
    ("FLGPBK05", "Black V5"),
    ("FLGPWH05", "White V5"),
    ("FLTO2001", "Tough 2000"),
    ("FLDUCL02", "Durable"),
)
CARBON_RESINS: tuple[str, ...] = ("EPU 41", "EPU 43", "RPU 70", "UMA 90", "FPU 50", "DPR 10")

JOB_NAMES: tuple[str, ...] = (
    "bracket",
    "gear_test",
    "housing_left",
    "housing_right",
    "crown_batch",
    "lattice_insert",
    "midsole_batch",
    "fixture_clip",
    "splint",
    "manifold",
    "enclosure_lid",
    "hinge",
    "knob_set",
    "aligner_model",
)

# Free text of PrintRunNote.note (the first is the vendor sample's).
FORMLABS_NOTES: tuple[str, ...] = (
    "All 14 units passed fit check.",
    "Supports left marks on the top face.",
    "Re-run with thicker layers next time.",
    "Delivered to QA.",
)

USERS: tuple[tuple[int, str, str, str], ...] = (
    (48213, "mara.quinn", "Mara", "Quinn"),
    (51907, "dev.okafor", "Dev", "Okafor"),
    (52011, "j.lee", "Jun", "Lee"),
    (53377, "m.ortiz", "Marta", "Ortiz"),
)

GROUP_NAMES: tuple[str, ...] = ("Prototyping Lab", "Dental", "Production", "R&D")
LOCATIONS: tuple[str | None, ...] = (
    "Building 2, bench A",
    "Building 2, bay 2",
    "Lab 1",
    "Clean room",
    None,
)

ERROR_MESSAGES: tuple[str, ...] = (
    "Resin could not be dispensed. Check the cartridges.",
    "Print failed: parts detached from the build platform.",
    "Resin tank not detected.",
    "Unexpected motor fault (Z axis).",
)
RESOLUTION_MESSAGES: tuple[str, ...] = (
    "Confirm the build platform is clear.",
    "Check the resin tank and press Continue.",
)
CARBON_ALERTS: tuple[str, ...] = ("oxygen shortage",)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ADJECTIVES = _words(
    "Nimble Amber Gentle Sweet Brave Calm Clever Crimson Dapper Eager Fancy Fuzzy Golden Happy "
    "Jolly Keen Lively Lucky Mellow Misty Noble Plucky Quiet Rapid Rosy Rustic Shiny Silent "
    "Silver Snowy Spry Steady Sunny Swift Tidy Vivid Witty Zesty Bold Bright Cosmic Daring Dusty "
    "Frosty Grand Hidden Icy Jade Kind Lunar Merry Neat Olive Proud Quick Royal Sandy Tender "
    "Urban Velvet Wild Young Azure Capable"
)
_ANIMALS = _words(
    "Heron Lynx Bison Badger Beaver Otter Falcon Panda Koala Lemur Marmot Ocelot Puffin Quokka "
    "Raven Salmon Tapir Urchin Vole Walrus Yak Zebra Alpaca Bobcat Cheetah Dingo Egret Ferret "
    "Gecko Hare Ibex Jackal Kestrel Llama Magpie Newt Oriole Pelican Quail Robin Sparrow Toucan "
    "Wombat Wren Finch Gazelle Hedgehog Iguana Jaguar Kiwi Lark Mole Narwhal Owl Parrot Rabbit "
    "Seal Tiger Weasel Fox Crane Dolphin Matcha Moose"
)


def _scramble(index: int, modulus: int, salt: int) -> int:
    """A bijection on [0, modulus): distinct indexes give distinct, random-looking numbers."""
    multiplier = 1_000_003  # prime, so coprime to every modulus used here (powers of 2, 6, 36)
    return (index * multiplier + salt) % modulus


def _base36(value: int, width: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = []
    for _ in range(width):
        value, rest = divmod(value, 36)
        out.append(digits[rest])
    return "".join(reversed(out))


def formlabs_serial(index: int, salt: int) -> str:
    """Word-pair printer serials like the vendor's (``NimbleHeron``); unique per index."""
    pairs = len(_ADJECTIVES) * len(_ANIMALS)
    cycle, position = divmod(index, pairs)
    scrambled = _scramble(position, pairs, salt)
    adjective, animal = divmod(scrambled, len(_ANIMALS))
    suffix = str(cycle + 1) if cycle else ""
    return f"{_ADJECTIVES[adjective]}{_ANIMALS[animal]}{suffix}"


def carbon_serial(index: int, salt: int) -> str:
    """Six characters from ``[0-9A-Z]`` (the spec's pattern); unique per index."""
    return _base36(_scramble(index, 36**6, salt), 6)


def consumable_serial(prefix: str, index: int, salt: int) -> str:
    """``TNK-4A7B21C9`` / ``CRT-5F02D8E1`` style serials; unique per index."""
    return f"{prefix}-{_scramble(index, 1 << 32, salt):08X}"


def carbon_print_id(index: int, salt: int, letters: str) -> str:
    """Seven upper-case alphanumerics like ``KT7Q3MA``; unique per index."""
    return letters + _base36(_scramble(index, 36**5, salt), 5)


# Formlabs HarvestStatusEnum (formlabs.md §6.10) words the simulator sends.
HARVEST_FINISHED = "FORM_CELL_HARVEST_FINISHED"
HARVEST_FAILED = "FORM_CELL_HARVEST_FAILED"
HARVEST_ABORTED = "FORM_CELL_HARVEST_ABORTED"
