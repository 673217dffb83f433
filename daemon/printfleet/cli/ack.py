"""``printfleet ack RULE [KEY=GLOB…]``, ``ack list``, ``ack remove ID…``: acknowledgements.

An ack stops the ``repeat`` reminders of the alerts of RULE that are firing now and that the
matchers accept (the same fields and globs as ``silence add``); new alerts still notify, and
the acknowledged ones still send their resolved notice (:mod:`printfleet.core.rules.acks`).

Acks are kept in the state database under ``"acks"``, beside the ad-hoc silences, and the
daemon picks them up the same way (every 30 s). Which alerts fire is read from the rule
engine's persisted state in the same database, so ``ack`` can say what it acknowledged, and
refuses (exit 1) when nothing matching is firing. ``silence list`` shows acks too.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from printfleet.cli.silence import (
    MAX_COLUMN_WIDTH,
    SilenceStore,
    _open_store,
    render_table,
)
from printfleet.config import Settings
from printfleet.core.model import iso
from printfleet.core.rules.acks import ACKS_KEY, Ack, acks_from_state
from printfleet.core.rules.model import RuleSet
from printfleet.core.rules.names import event_names, parse_time
from printfleet.core.rules.windows import silence_fields
from printfleet.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, did_you_mean
from printfleet.rulepacks.loader import load_rule_set

#: The state key of the rule engine (its firing conditions tell what an ack covers).
RULES_STATE_KEY = "rules"
UNTIL_RESOLVED = "resolved"

LoadRules = Callable[..., RuleSet]


def ack_command(
    settings: Settings,
    action: str,
    args: argparse.Namespace,
    out: TextIO,
    *,
    now: datetime | None = None,
    open_store: Callable[[Settings], SilenceStore] = _open_store,
    load_rules: LoadRules = load_rule_set,
    base_dir: Path | None = None,
) -> int:
    """``ack add`` (``args.rule``, ``args.matchers: dict[str, str]``, ``args.until``:
    ``"resolved"`` or a timedelta, ``args.comment``, ``args.by``), ``ack list`` (``args.all``)
    and ``ack remove`` (``args.ids``).

    Returns 0; 1 when nothing matching is firing or an id is unknown; 2 for an unknown rule,
    a rule without ``repeat``, an invalid matcher or duration.

    Raises:
        RuleError: the rule packs are invalid (exit code 2 through the CLI).
        StoreError: the state database cannot be used.
    """
    now = now or datetime.now(UTC)
    rule_set = load_rules(settings, base_dir=base_dir) if action == "add" else None
    store = open_store(settings)
    try:
        current = list(acks_from_state(store.load_state(ACKS_KEY)))
        firing = firing_conditions(store.load_state(RULES_STATE_KEY))
        if action == "add":
            assert rule_set is not None
            return _add(store, current, firing, rule_set, args, out, now)
        if action == "list":
            rows = ack_rows(current, firing, now, show_expired=bool(getattr(args, "all", False)))
            if not rows:
                print("no acks", file=out)
                return EXIT_OK
            for line in render_table(rows, MAX_COLUMN_WIDTH):
                print(line, file=out)
            return EXIT_OK
        if action == "remove":
            ids = list(getattr(args, "ids", []) or [])
            removed, unknown = remove_acks(store, current, firing, ids, now)
            if removed:
                print(f"removed {', '.join(removed)}", file=out)
            for ack_id in unknown:
                print(f"no ack with id {ack_id!r} (see `printfleet ack list`)", file=out)
            return EXIT_ERROR if unknown else EXIT_OK
        print(f"unknown ack action {action!r}; use RULE, list or remove", file=out)
        return EXIT_CONFIG
    finally:
        store.close()


# -- what is firing --------------------------------------------------------------------------


def firing_conditions(state: Any) -> list[tuple[str, datetime, dict[str, Any]]]:
    """``(rule, firing since, event)`` of each firing condition in the engine's stored state."""
    result: list[tuple[str, datetime, dict[str, Any]]] = []
    conditions = state.get("conditions") if isinstance(state, Mapping) else None
    for item in conditions if isinstance(conditions, list) else ():
        try:
            if item["phase"] != "firing":
                continue
            since = parse_time(item["since"])
            event = item["event"]
        except (KeyError, TypeError, ValueError):
            continue
        if since is not None and isinstance(event, dict):
            result.append((str(item["rule"]), since, event))
    return result


def covered(
    ack: Ack, firing: Sequence[tuple[str, datetime, dict[str, Any]]], now: datetime
) -> list[str]:
    """The subjects of the firing conditions ``ack`` covers."""
    subjects = []
    for rule, since, event in firing:
        if rule != ack.rule:
            continue
        names = event_names(event)
        data = event.get("data")
        severity = str((data or {}).get("severity") or "info") if isinstance(data, dict) else "info"
        if ack.covers(rule, since, silence_fields(names, rule, severity), now):
            subjects.append(str(event.get("subject") or ""))
    return subjects


def _spent(ack: Ack, firing: Sequence[tuple[str, datetime, dict[str, Any]]], now: datetime) -> bool:
    """Whether ``ack`` can never cover anything again (ended, or all its alerts resolved)."""
    return ack.expired(now) or (ack.until_resolved and not covered(ack, firing, now))


# -- add, list, remove -------------------------------------------------------------------------


def _add(
    store: SilenceStore,
    current: list[Ack],
    firing: list[tuple[str, datetime, dict[str, Any]]],
    rule_set: RuleSet,
    args: argparse.Namespace,
    out: TextIO,
    now: datetime,
) -> int:
    name = str(getattr(args, "rule", "") or "")
    rules = {r.name: r for r in rule_set.rules}
    rule = rules.get(name)
    if rule is None:
        guess = did_you_mean(name, rules)
        hint = f"did you mean '{guess}'? " if guess else ""
        known = ", ".join(sorted(rules)) or "none loaded"
        print(f"unknown rule '{name}'; {hint}rules: {known}", file=out)
        return EXIT_CONFIG
    if rule.repeat is None:
        print(
            f"rule '{name}' has no repeat: it never reminds, so an ack would change nothing "
            "(a silence drops notifications: printfleet silence add)",
            file=out,
        )
        return EXIT_CONFIG
    until = getattr(args, "until", None) or UNTIL_RESOLVED
    duration: timedelta | None = None
    if until != UNTIL_RESOLVED:
        if not isinstance(until, timedelta) or until <= timedelta(0):
            print("--until must be 'resolved' or a duration longer than zero, e.g. 4h", file=out)
            return EXIT_CONFIG
        duration = until
    matchers = getattr(args, "matchers", {}) or {}
    try:
        ack = Ack(
            id=uuid.uuid4().hex[:8],
            rule=name,
            created_at=now,
            match={str(k): (str(v),) for k, v in dict(matchers).items()},
            ends_at=None if duration is None else now + duration,
            comment=str(getattr(args, "comment", None) or ""),
            created_by=str(getattr(args, "by", None) or ""),
        )
    except ValueError as err:
        print(f"invalid ack: {err}", file=out)
        return EXIT_CONFIG
    subjects = covered(ack, firing, now)
    if not subjects:
        print(
            f"no firing alert of rule '{name}' matches {ack.describe()}; nothing acknowledged "
            "(an ack covers alerts firing now; see `printfleet silence add` for the future)",
            file=out,
        )
        return EXIT_ERROR
    kept = [a for a in current if not _spent(a, firing, now)]
    kept.append(ack)
    store.commit(state={ACKS_KEY: [a.as_dict() for a in kept]})
    shown = ", ".join(subjects[:10]) + (
        f" and {len(subjects) - 10} more" if len(subjects) > 10 else ""
    )
    until_text = "resolved" if ack.ends_at is None else iso(ack.ends_at)
    print(
        f"acknowledged {len(subjects)} firing alert{'s' if len(subjects) != 1 else ''} of rule "
        f"'{name}' ({shown}) as ack {ack.id} until {until_text}; repeats stop within 30 s, "
        "the resolved notice still comes",
        file=out,
    )
    return EXIT_OK


def ack_rows(
    acks: Sequence[Ack],
    firing: Sequence[tuple[str, datetime, dict[str, Any]]],
    now: datetime,
    *,
    show_expired: bool,
) -> list[dict[str, str]]:
    """Rows of the ``silence list`` / ``ack list`` table (STATE ``ack``; ``ack-spent`` when
    it covers nothing any more, shown with ``--all``)."""
    rows = []
    for ack in acks:
        spent = _spent(ack, firing, now)
        if spent and not show_expired:
            continue
        rows.append(
            {
                "ID": ack.id,
                "STATE": "ack-spent" if spent else "ack",
                "UNTIL": "resolved" if ack.ends_at is None else iso(ack.ends_at),
                "MATCH": ack.describe(),
                "COMMENT": " ".join(p for p in (ack.comment, _by(ack)) if p),
            }
        )
    return rows


def _by(ack: Ack) -> str:
    return f"(by {ack.created_by})" if ack.created_by else ""


def remove_acks(
    store: SilenceStore,
    current: list[Ack],
    firing: Sequence[tuple[str, datetime, dict[str, Any]]],
    ids: Sequence[str],
    now: datetime,
) -> tuple[list[str], list[str]]:
    """Remove ``ids`` (pruning spent acks too); the removed and the unknown ids."""
    known = {a.id for a in current}
    removed = [i for i in ids if i in known]
    if removed:
        kept = [a for a in current if a.id not in ids and not _spent(a, firing, now)]
        store.commit(state={ACKS_KEY: [a.as_dict() for a in kept]})
    return removed, [i for i in ids if i not in known]
