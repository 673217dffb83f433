"""How fast the differ compares two 10,000-printer snapshots with 1% of printers changed.

Baseline: ``deepdiff.DeepDiff`` on the same pair as plain dicts (``snapshot_to_json`` output),
the generic way to find what changed between two nested documents. The differ does more
(it classifies changes into events) and must still be far faster: target >= 50x.

Run alone with ``python -m tests.bench.bench_differ``; ``make bench`` collects :func:`run`.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from printfleet.core.codec import snapshot_to_json
from printfleet.core.diff import carry_forward, diff
from printfleet.core.model import (
    Material,
    Print,
    Printer,
    PrinterStatus,
    PrintStatus,
    Snapshot,
    Tank,
    Vendor,
)
from printfleet.core.thresholds import DiffSettings

PRINTERS = 10_000
CHANGED = 0.01
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=15)
SETTINGS = DiffSettings()


def _printer(i: int, *, changed: bool, kind: int = 0) -> Printer:
    """Printer ``i`` as the first snapshot shows it, or with one of several real changes."""
    rng = random.Random(i)  # same facts for both snapshots: equal but not identical objects
    serial = f"Form4-{i:05d}"
    printing = rng.random() < 0.6
    progress = round(rng.uniform(0.05, 0.95), 3)
    current = (
        Print(
            id=f"run-{i:05d}",
            name=f"part-{i}.form",
            status=PrintStatus.PRINTING,
            status_raw="PRINTING",
            printer_serial=serial,
            progress=progress,
            layer=int(progress * 2000),
            layers_total=2000,
            created_at=T0 - timedelta(hours=2),
            started_at=T0 - timedelta(hours=1, minutes=50),
            elapsed_s=6600.0,
            remaining_s=3600.0,
            material="Grey V5",
            user="ops@example.com",
        )
        if printing
        else None
    )
    status = PrinterStatus.PRINTING if printing else PrinterStatus.IDLE
    alerts: tuple[str, ...] = ("camera disconnected",) if rng.random() < 0.05 else ()
    remaining = round(rng.uniform(200, 1000), 1)
    if changed and kind == 0 and current is not None:  # progress crosses a milestone
        current = Print(**{**_fields(current), "progress": min(1.0, progress + 0.3)})
    elif changed and kind == 1 and current is not None:  # print finished
        current = Print(
            **{
                **_fields(current),
                "status": PrintStatus.FINISHED,
                "status_raw": "FINISHED",
                "progress": 1.0,
                "finished_at": T1 - timedelta(seconds=3),
            }
        )
        status = PrinterStatus.IDLE
    elif changed and kind == 2:  # an alert raised
        alerts = tuple(sorted({*alerts, "tank mixer missing"}))
    elif changed:  # status change (or a print starting on an idle printer)
        status = PrinterStatus.MAINTENANCE if current is None else PrinterStatus.PAUSED
        remaining = 100.0
    return Printer(
        serial=serial,
        name=f"Lab printer {i}",
        vendor=Vendor.FORMLABS,
        model="Form 4",
        model_code="FORM-4-0",
        status=status,
        status_raw=status.value,
        online=True,
        last_seen_at=T1 if changed else T0,
        group=f"group-{i % 20}",
        firmware="1.9.2",
        location="Building 2",
        current_print=current,
        materials=(
            Material(
                slot="main",
                serial=f"cart-{i}",
                material="FLGPGR05",
                name="Grey V5",
                capacity_ml=1000.0,
                remaining_ml=remaining,
            ),
        ),
        tank=Tank(
            serial=f"tank-{i}",
            material="FLGPGR05",
            tank_type="LT",
            layers_printed=rng.randrange(0, 60_000),
            first_filled_at=T0 - timedelta(days=rng.randrange(1, 300)),
        ),
        alerts=alerts,
        queue_length=rng.randrange(0, 4),
        raw={"serial": serial, "firmware_version": "1.9.2"},
    )


def _fields(p: Print) -> dict[str, Any]:
    return {name: getattr(p, name) for name in Print.__dataclass_fields__}


def build_pair(n: int = PRINTERS, changed: float = CHANGED) -> tuple[Snapshot, Snapshot]:
    """Two snapshots of ``n`` printers, ``changed`` of them different in the second."""
    step = round(1 / changed) if changed > 0 else n + 1
    prev = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T0,
        printers={p.serial: p for p in (_printer(i, changed=False) for i in range(n))},
    )
    cur = Snapshot(
        source="lab",
        vendor=Vendor.FORMLABS,
        taken_at=T1,
        printers={
            p.serial: p
            for p in (
                _printer(i, changed=i % step == step // 2, kind=(i // step) % 4) for i in range(n)
            )
        },
    )
    return prev, cur


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> list[dict[str, Any]]:
    """Rows for ``make bench``: the differ vs DeepDiff on the same 10k-printer pair."""
    from deepdiff import DeepDiff

    prev, cur = build_pair()
    cur = carry_forward(prev, cur, T1, SETTINGS)
    events = diff(prev, cur, T1, SETTINGS)
    changed = sum(1 for s, p in cur.printers.items() if prev.printers[s] != p)
    kinds = Counter(e.type.value for e in events)

    ours = _median_s(lambda: diff(prev, cur, T1, SETTINGS), repeat=15)
    with_carry = _median_s(
        lambda: diff(prev, carry_forward(prev, cur, T1, SETTINGS), T1, SETTINGS), repeat=15
    )
    prev_json = snapshot_to_json(prev)
    cur_json = snapshot_to_json(cur)
    found: list[Any] = []
    baseline = _median_s(lambda: found.append(DeepDiff(prev_json, cur_json)), repeat=3)
    _, same = build_pair(changed=0.0)  # equal to prev, but freshly built objects
    assert diff(prev, same, T1, SETTINGS) == []
    equal = _median_s(lambda: diff(prev, same, T1, SETTINGS), repeat=15)
    note = (
        f"{PRINTERS:,} printers, {changed} changed -> {len(events)} events "
        f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}); "
        f"DeepDiff reports {sum(len(v) for v in found[0].values())} changed paths"
    )
    return [
        {
            "name": f"diff {PRINTERS // 1000}k printers, 1% changed",
            "value": ours * 1000,
            "unit": "ms",
            "baseline": "deepdiff.DeepDiff (same pair as dicts)",
            "baseline_value": baseline * 1000,
            "ratio": baseline / ours,
            "target": ">= 50x",
            "note": note,
        },
        {
            "name": f"carry_forward + diff {PRINTERS // 1000}k printers, 1% changed",
            "value": with_carry * 1000,
            "unit": "ms",
            "baseline": "deepdiff.DeepDiff (same pair as dicts)",
            "baseline_value": baseline * 1000,
            "ratio": baseline / with_carry,
            "target": ">= 50x",
        },
        {
            "name": f"diff {PRINTERS // 1000}k printers, nothing changed",
            "value": equal * 1000,
            "unit": "ms",
            "baseline": None,
            "baseline_value": None,
            "ratio": None,
        },
    ]


if __name__ == "__main__":
    rows = run()
    width = max(len(r["name"]) for r in rows)
    print(f"{'benchmark':<{width}}  {'value':>10}  {'baseline':>10}  ratio")
    for r in rows:
        base = f"{r['baseline_value']:9.1f}ms" if r["baseline_value"] is not None else " " * 11
        ratio = f"{r['ratio']:.0f}x" if r["ratio"] is not None else "-"
        print(f"{r['name']:<{width}}  {r['value']:8.2f}ms  {base}  {ratio}")
    for r in rows:
        if r.get("note"):
            print(f"note: {r['note']}")
