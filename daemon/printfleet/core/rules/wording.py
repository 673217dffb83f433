"""What a notification says: its title and text, from the rule's templates or the defaults.

Kept apart from the engine so the words a user reads can be found and changed in one place,
and so a template failing on surprising data falls back the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from printfleet.core.rules.model import Renderer, Rule

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
        "print.rated": "{name}: {print} rated {verdict}",
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
        "print.rated": "prints rated",
        "material.low": "printers low on resin",
        "tank.attention": "tanks need attention",
        "source.unreachable": "sources unreachable",
        "source.recovered": "sources recovered",
        "source.auth_failed": "sources with rejected credentials",
    }
)
NO_VALUE = "—"
_MAX_GROUP_LINES = 20


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
        "verdict": str(names.get("verdict") or NO_VALUE).lower(),
    }
    pattern = _DEFAULT_TITLES.get(str(names.get("type")), "{name}: " + str(names.get("type")))
    return pattern.format_map(values)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def default_text(names: Mapping[str, Any]) -> str:
    """The text of a rule that has no ``text`` template."""
    return f"{names.get('type')} for {names.get('subject')} at {names.get('time')}"


def render_notification(rule: Rule, names: Mapping[str, Any], status: str) -> tuple[str, str]:
    """The title and text of one notification (``Resolved:`` in front when it resolves)."""
    title = safe_render(rule.title or default_title, names, default_title)
    text = safe_render(rule.text or default_text, names, default_text)
    if status == "resolved":
        title = f"Resolved: {title}"
    return title, text


def render_group(
    rule: Rule, names: Mapping[str, Any], status: str, members: Sequence[str]
) -> tuple[str, str]:
    """The title and text of a group batch; ``members`` are the names of its subjects.

    A batch of one reads like a single notification; a larger one counts its subjects in the
    title and lists the first of them in the text, unless ``group_title``/``group_text`` say
    otherwise.
    """
    count = len(members)
    if count == 1:
        return render_notification(rule, names, status)
    phrase = GROUP_PHRASES.get(str(names.get("type")), f"x {names.get('type')}")
    title = f"{count} {phrase}"
    if rule.group_title is not None:
        title = safe_render(rule.group_title, names, title)
    if status == "resolved":
        title = f"Resolved: {title}"
    shown = list(members[:_MAX_GROUP_LINES])
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    text = ", ".join(shown) + more
    if rule.group_text is not None:
        text = safe_render(rule.group_text, names, text)
    return title, text


def safe_render(renderer: Renderer, names: Mapping[str, Any], fallback: str | Renderer) -> str:
    """Render; a template that fails on surprising data falls back (string or default)."""
    try:
        return renderer(names)
    except Exception:  # templates are validated at load; data surprises must not drop alerts
        return fallback if isinstance(fallback, str) else fallback(names)
