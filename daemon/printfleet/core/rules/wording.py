"""The default wording of a notification whose rule has no ``title``/``text`` template.

Kept apart from the engine so the words a user reads can be found and changed in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_DEFAULT_TITLES: Mapping[str, str] = MappingProxyType(
    {
        "printer.added": "{name} added",
        "printer.removed": "{name} removed",
        "printer.status_changed": "{name} is now {status}",
        "printer.offline": "{name} is offline",
        "printer.online": "{name} is back online",
        "printer.alert": "{name}: {alert}",
        "print.started": "{name}: {print} started",
        "print.progress": "{name}: {print} at {progress}",
        "print.paused": "{name}: {print} paused",
        "print.resumed": "{name}: {print} resumed",
        "print.finished": "{name}: {print} finished",
        "print.failed": "{name}: {print} failed",
        "print.aborted": "{name}: {print} aborted",
        "material.low": "{name}: resin low",
        "tank.attention": "{name}: tank needs attention",
        "source.unreachable": "{source}: vendor API unreachable",
        "source.recovered": "{source}: vendor API reachable again",
        "source.auth_failed": "{source}: credentials rejected",
    }
)
GROUP_PHRASES: Mapping[str, str] = MappingProxyType(
    {
        "printer.added": "printers added",
        "printer.removed": "printers removed",
        "printer.status_changed": "printers changed status",
        "printer.offline": "printers offline",
        "printer.online": "printers back online",
        "printer.alert": "printers with alerts",
        "print.started": "prints started",
        "print.progress": "prints progressed",
        "print.paused": "prints paused",
        "print.resumed": "prints resumed",
        "print.finished": "prints finished",
        "print.failed": "prints failed",
        "print.aborted": "prints aborted",
        "material.low": "printers low on resin",
        "tank.attention": "tanks need attention",
        "source.unreachable": "sources unreachable",
        "source.recovered": "sources recovered",
        "source.auth_failed": "sources with rejected credentials",
    }
)
NO_VALUE = "—"


def default_title(names: Mapping[str, Any]) -> str:
    """The title of a rule that has no ``title`` template."""
    printer = _mapping(names.get("printer"))
    print_ = _mapping(names.get("print"))
    progress = print_.get("progress")
    values = {
        "name": str(printer.get("name") or names.get("subject") or NO_VALUE),
        "status": str(printer.get("status") or NO_VALUE),
        "print": str(print_.get("name") or "print"),
        "progress": f"{progress:.0%}" if isinstance(progress, int | float) else NO_VALUE,
        "alert": str(names.get("alert") or "alert"),
        "source": str(names.get("source") or NO_VALUE),
    }
    pattern = _DEFAULT_TITLES.get(str(names.get("type")), "{name}: " + str(names.get("type")))
    return pattern.format_map(values)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def default_text(names: Mapping[str, Any]) -> str:
    """The text of a rule that has no ``text`` template."""
    return f"{names.get('type')} for {names.get('subject')} at {names.get('time')}"
