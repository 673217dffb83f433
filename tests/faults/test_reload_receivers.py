"""SIGHUP reloads receivers: added, changed and removed ones take effect in the running daemon.

The real ``printfleet run`` process (tests/faults/harness.py) delivers to real HTTP receivers;
each step rewrites the config and the rule pack, sends SIGHUP and checks where the next events
go. A removed receiver's undelivered entries stay in the outbox and go out when it is configured
again; a reload with an unreadable secret file changes nothing.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.harness import HOOK_TYPES, FlakyReceiver, Rig, hook_wanted, rule_pack, toml_table

pytestmark = pytest.mark.fault

EXTRA = "extra"


def config_with(rig: Rig, **receivers: dict[str, Any]) -> str:
    """The rig's config plus one ``[[receiver]]`` per keyword (name → its keys)."""
    tables = [
        toml_table("[[receiver]]", {"name": name, **keys}) for name, keys in receivers.items()
    ]
    return rig.config_text() + "\n" + "\n".join(tables)


def pack_with(*receivers: str) -> str:
    """The rig's rule pack plus a rule sending the same events to each of ``receivers``."""
    on = ", ".join(json.dumps(t) for t in HOOK_TYPES)
    extra = "".join(
        f'\n[[rule]]\nname = "to-{name}"\non = [{on}]\nnotify = ["{name}"]\ntitle = "{{type}}"\n'
        for name in receivers
    )
    return rule_pack() + extra


async def reload(rig: Rig, config: str, pack: str, outcome: str = "reload.done") -> dict[str, Any]:
    """Write ``config`` and ``pack``, send SIGHUP, return the ``outcome`` log line."""
    rig.write_config(config)
    rig.write_pack(pack)
    mark = rig.mark()
    rig.daemon.send(signal.SIGHUP)
    (line, *_) = await rig.wait_log(outcome, since=mark, timeout=15)
    return line


async def next_event_reaches(rig: Rig, receiver: FlakyReceiver, what: str) -> str:
    """Wait for an event detected from now on to be delivered (2xx) at ``receiver``."""
    (fresh, *_) = await rig.wait_events(
        1, since=rig.mark(), where=lambda r: hook_wanted(r["type"]), timeout=30
    )
    await rig.until(
        lambda: fresh["id"] in {e["id"] for e in receiver.delivered()}, timeout=20, what=what
    )
    return str(fresh["id"])


async def test_sighup_adds_changes_and_removes_receivers(make_bare_rig: RigFactory) -> None:
    """A receiver added by SIGHUP starts receiving, a changed one is reopened with its new URL, a
    removed one stops and keeps its pending entries, which go out when it is added back; a
    reload naming a missing secret file is rejected and the running receivers keep working."""
    rig = await make_bare_rig(formlabs_printers=6, carbon_printers=0)
    daemon = await rig.start_daemon()
    async with (
        FlakyReceiver(rig.changes) as first,
        FlakyReceiver(rig.changes) as second,
    ):
        # Added.
        done = await reload(
            rig, config_with(rig, extra={"kind": "webhook", "url": first.url}), pack_with(EXTRA)
        )
        assert done["added"] == [EXTRA], done
        await next_event_reaches(rig, first, "an event at the receiver added by SIGHUP")

        # Rejected: a receiver whose secret file does not exist; nothing changes.
        broken = config_with(
            rig,
            extra={"kind": "webhook", "url": first.url},
            other={"kind": "webhook", "url": second.url, "secret_file": "missing.secret"},
        )
        rejected = await reload(rig, broken, pack_with(EXTRA, "other"), "reload.rejected")
        assert "missing.secret" in " ".join(rejected["problems"]), rejected
        await next_event_reaches(
            rig, first, "an event at the kept receiver after a rejected reload"
        )

        # Removed while failing: its entries stay pending and are reported.
        first.fail(503)
        await rig.until(lambda: first.refused() >= 1, timeout=30, what="a refused delivery")
        mark = rig.mark()
        await reload(rig, rig.config_text(), pack_with())
        (removed,) = daemon.named("reload.receiver_removed", sink=EXTRA)
        assert daemon.log.index(removed) >= mark
        assert removed["pending"] >= 1, removed
        listing = rig.cli("outbox", "list", "--sink", EXTRA)
        assert listing.returncode == 0, listing.stderr
        assert EXTRA in listing.stdout, listing.stdout
        refused = {
            json.loads(r.body)["id"]
            for r, s in zip(first.requests, first.statuses, strict=True)
            if s == 503
        }

        # Added back: what was pending is delivered.
        first.recover()
        done = await reload(
            rig, config_with(rig, extra={"kind": "webhook", "url": first.url}), pack_with(EXTRA)
        )
        assert done["added"] == [EXTRA], done
        await rig.until(
            lambda: refused <= {e["id"] for e in first.delivered()},
            timeout=30,
            what="the removed receiver's pending entries delivered after it came back",
        )

        # Changed: a new URL; the next events go to the new address.
        done = await reload(
            rig, config_with(rig, extra={"kind": "webhook", "url": second.url}), pack_with(EXTRA)
        )
        assert done["changed"] == [EXTRA], done
        await next_event_reaches(rig, second, "an event at the changed receiver's new URL")
    assert daemon.running
    tracebacks = [r for r in daemon.log if "exception" in r]
    assert not tracebacks, tracebacks[:2]
