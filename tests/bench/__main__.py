"""`make bench`: run every benchmark, print one table, write BENCHMARKS.md.

Each ``tests/bench/bench_*.py`` module exposes ``run() -> list[dict]`` returning rows with
``name``, ``value``, ``unit``, ``baseline``, ``baseline_value``, ``ratio`` (and optionally
``target`` and ``note``). A module that fails is reported as a failed row; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: `make bench` must finish within 15 minutes: the scale module, whose parts are the longest
#: and can run with or without the 7be2331 baseline, goes last and gets the rest of this budget.
BUDGET_S = 14.5 * 60
LAST = ("bench_scale",)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {system}, Python {platform.python_version()}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench")
    parser.add_argument("only", nargs="*", help="benchmark module names (default: all)")
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    modules = sorted(p.stem for p in HERE.glob("bench_*.py"))
    modules.sort(key=lambda m: m in LAST)
    if args.only:
        modules = [m for m in modules if any(o in m for o in args.only)]
    else:
        os.environ["PRINTFLEET_BENCH_DEADLINE"] = f"{time.time() + BUDGET_S:.0f}"
    rows: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    started = time.perf_counter()
    for name in modules:
        print(f"… {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"tests.bench.{name}")
            if not hasattr(module, "run"):
                continue
            for row in module.run():
                rows.append({"module": name, **row})
        except Exception as err:  # a broken benchmark must not hide the others
            traceback.print_exc()
            rows.append({"module": name, "name": f"{name} FAILED", "note": repr(err)})
        durations[name] = time.perf_counter() - t0
        print(f"  {name}: {durations[name]:.1f}s", file=sys.stderr, flush=True)
    header = ["benchmark", "value", "unit", "baseline", "baseline value", "ratio", "target"]
    table = [header] + [
        [
            str(r.get("name")),
            _fmt(r.get("value")),
            str(r.get("unit", "")),
            str(r.get("baseline") or "—"),
            _fmt(r.get("baseline_value")),
            (_fmt(r.get("ratio")) + "x") if r.get("ratio") is not None else "—",
            str(r.get("target", "")),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in table
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print("\n".join(lines))
    elapsed = time.perf_counter() - started
    took = ", ".join(f"{n.removeprefix('bench_')} {s:.0f} s" for n, s in durations.items())
    print(f"\n{len(rows)} figures in {elapsed:.0f} s ({took})", file=sys.stderr)
    if not args.no_write and not args.only:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        notes = [f"- {r['name']}: {r['note']}" for r in rows if r.get("note")]
        text = [
            "# Benchmarks",
            "",
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit or 'unknown'}, "
            f"{elapsed:.0f} s in all ({took}).",
            f"Machine: {_machine()}.",
            "Command: `make bench` (runs `python -m tests.bench`). Ratios are "
            "oriented so that > 1x means printfleet is better. Rows whose baseline is "
            "7be2331 run that commit's daemon (built once by `tests/bench/baseline.py` into "
            "`.bench-cache/`, with its own rule packs) against the same simulated fleet.",
            "",
            *lines,
            "",
            *(["Notes:", "", *notes, ""] if notes else []),
        ]
        (ROOT / "BENCHMARKS.md").write_text("\n".join(text))
    return 1 if any("FAILED" in str(r.get("name")) for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
