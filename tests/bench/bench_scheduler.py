"""How soon printfleet notices a print finishing or failing, for the same number of requests.

A 50-printer Formlabs fleet (simulator, fixed seed) is watched for ``HOURS`` simulated hours by
the real source and poller over real HTTP, in simulated time (``tests.simtime``). First the
adaptive scheduler (``PollPolicy()``, the daemon's defaults) runs and its ``GET /printers/``
polls are counted (N). Then the same fleet (same seed, same start) is watched by a fixed-interval
scheduler polling every ``span / N`` seconds, so both spend the same number of printer polls;
the poll cycle itself (history every 60 s, lookups of vanished prints) is identical.

Detection delay = simulated time of the poll cycle whose events contained the outcome minus
the ground-truth instant the print reached FINISHED / ERROR. Ratios are baseline / printfleet
(> 1 means printfleet notices sooner). Target: median >= 2x lower than the baseline.

Caveat worth knowing when reading the figures: the simulator's ``estimated_time_remaining_ms`` is
exact, so a poll aimed at a print's estimated end sees it finish at once. Real estimates drift;
the policy then falls back to the active interval while a print is overdue (``end_window``).

Run alone with ``python -m tests.bench.bench_scheduler``; ``make bench`` collects :func:`run`.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import structlog

from printfleet.core.polling import PollPolicy
from tests.simtime import FleetRun, run_fleet

PRINTERS = 50
SEED = 5
HOURS = 10
# Keep polling this long after the scored span, so outcomes near its end are still seen.
DRAIN = timedelta(minutes=15)
OUTCOMES = ("print.finished", "print.failed")


def detection_delays(run: FleetRun, kinds: Sequence[str] = OUTCOMES) -> tuple[list[float], int]:
    """Delays (simulated seconds) of every ground-truth outcome in the scored span, and misses."""
    seen: dict[tuple[str, str, str], float] = {}
    for d in run.detections:
        event = d.event
        if event.type.value in kinds and event.print is not None:
            key = (event.type.value, event.subject, event.print.id)
            seen.setdefault(key, d.seen_at.timestamp())
    delays: list[float] = []
    missed = 0
    end = run.end - DRAIN
    for truth in run.truth:
        if truth.kind.value not in kinds or truth.time > end or truth.print_id is None:
            continue
        at = seen.get((truth.kind.value, truth.serial, truth.print_id))
        if at is None:
            missed += 1
        else:
            delays.append(at - truth.time.timestamp())
    return delays, missed


def _p95(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else 0.0


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def _row(
    name: str, value: float, baseline: float, unit: str, target: str, **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 2),
        "unit": unit,
        "baseline": "fixed interval, same polls",
        "baseline_value": round(baseline, 2),
        "ratio": round(baseline / value, 2) if value > 0 else None,
        "target": target,
        **extra,
    }


def run() -> list[dict[str, Any]]:
    """Adaptive vs fixed-interval detection delay; one row per figure."""
    _quiet()
    span = timedelta(hours=HOURS) + DRAIN
    started = time.perf_counter()
    adaptive = asyncio.run(run_fleet(printers=PRINTERS, seed=SEED, span=span, policy=PollPolicy()))
    polls = adaptive.printer_polls()
    interval = span.total_seconds() / polls
    fixed = asyncio.run(
        run_fleet(
            printers=PRINTERS,
            seed=SEED,
            span=span,
            policy=PollPolicy(),
            fixed_interval=interval,
        )
    )
    real = time.perf_counter() - started
    ours, ours_missed = detection_delays(adaptive)
    base, base_missed = detection_delays(fixed)
    finished_ours, _ = detection_delays(adaptive, ("print.finished",))
    finished_base, _ = detection_delays(fixed, ("print.finished",))
    failed_ours, _ = detection_delays(adaptive, ("print.failed",))
    failed_base, _ = detection_delays(fixed, ("print.failed",))
    note = (
        f"{PRINTERS} Formlabs printers, seed {SEED}, {HOURS} simulated h; adaptive "
        f"{polls} printer polls ({adaptive.printer_polls() / span.total_seconds() * 3600:.0f}/h, "
        f"{len(adaptive.requests)} requests in all) vs fixed every {interval:.1f} s "
        f"({fixed.printer_polls()} polls, {len(fixed.requests)} requests); "
        f"{len(ours)} outcomes scored ({len(finished_ours)} finished, {len(failed_ours)} failed), "
        f"missed {ours_missed} adaptive / {base_missed} fixed; {real:.0f} s real"
    )
    return [
        _row(
            "outcome detection delay, median",
            statistics.median(ours),
            statistics.median(base),
            "s",
            ">= 2x lower",
            note=note,
        ),
        _row("outcome detection delay, p95", _p95(ours), _p95(base), "s", "report"),
        _row(
            "finished detection delay, median",
            statistics.median(finished_ours),
            statistics.median(finished_base),
            "s",
            "report",
        ),
        _row(
            "failed detection delay, median",
            statistics.median(failed_ours) if failed_ours else 0.0,
            statistics.median(failed_base) if failed_base else 0.0,
            "s",
            "report",
        ),
        {
            "name": "printer polls per hour (both)",
            "value": round(polls / span.total_seconds() * 3600, 1),
            "unit": "/h",
            "baseline": "fixed interval",
            "baseline_value": round(fixed.printer_polls() / span.total_seconds() * 3600, 1),
            "ratio": None,
            "target": "equal",
        },
    ]


def main() -> None:
    rows = run()
    header = ("benchmark", "value", "unit", "baseline value", "ratio", "target")
    print(" | ".join(header))
    for r in rows:
        ratio = f"{r['ratio']}x" if r.get("ratio") is not None else "-"
        cells = (r["name"], r["value"], r["unit"], r["baseline_value"], ratio, r["target"])
        print(" | ".join(str(c) for c in cells))
    for r in rows:
        if r.get("note"):
            print(f"\n{r['note']}")


if __name__ == "__main__":
    main()
