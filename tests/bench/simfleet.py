"""Today's simulator with several accounts per vendor, in a child process counting what it serves.

``printfleet simulate`` serves one account per vendor; the scale benchmarks need 20 accounts of
5,000 printers or 500 of 20, and a count the daemon cannot fudge: printer records served (the
same definition for every daemon version under test) and requests per second per vendor host.
So the parent starts ``python -m tests.bench.simfleet`` with the fleet's shape; the child builds
the :class:`~printfleet.simulator.Simulator` (speed 1, wall protocol clock, the vendors' real
rate limits), writes every account's credentials into a private directory, prints one JSON line
describing the accounts, then answers each ``stats`` line on stdin with one JSON line of counts.
EOF on stdin (the parent gone) stops it.

Counting wraps the two printer-list handlers and the gateway in the child only: records =
printers in a 200 answer to Formlabs ``GET /printers/`` plus the rows of a Carbon ``GET
/printers`` page; requests = every request a vendor host answered (token requests and 429s
included, as the vendors' per-IP limits count them), by wall-clock second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class FleetShape:
    formlabs_accounts: int
    formlabs_per_account: int
    carbon_accounts: int
    carbon_per_account: int
    seed: int = 1
    history_s: int = 6 * 3600

    @property
    def printers(self) -> int:
        return (
            self.formlabs_accounts * self.formlabs_per_account
            + self.carbon_accounts * self.carbon_per_account
        )

    def describe(self) -> str:
        parts = []
        if self.formlabs_accounts:
            parts.append(f"{self.formlabs_accounts} Formlabs x {self.formlabs_per_account:,}")
        if self.carbon_accounts:
            parts.append(f"{self.carbon_accounts} Carbon x {self.carbon_per_account:,}")
        return " + ".join(parts) + " printers"


@dataclass
class Stats:
    records: dict[str, int]
    requests: dict[str, int]
    per_second: dict[str, dict[int, int]]  # vendor -> wall second -> requests answered
    cpu_s: float  # the simulator process's own CPU


class SimFleet:
    """The running child: its accounts and a way to read its counters."""

    def __init__(
        self, shape: FleetShape, proc: subprocess.Popen[str], info: dict[str, Any]
    ) -> None:
        self.shape = shape
        self.proc = proc
        self.info = info
        self.accounts: list[dict[str, str]] = info["accounts"]
        self.urls: dict[str, str] = info["urls"]
        self._lock = threading.Lock()

    def stats(self) -> Stats:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            data = json.loads(self.proc.stdout.readline())
        return Stats(
            records=data["records"],
            requests=data["requests"],
            per_second={
                v: {int(s): n for s, n in d.items()} for v, d in data["per_second"].items()
            },
            cpu_s=data["cpu_s"],
        )


@contextlib.contextmanager
def running(
    shape: FleetShape, workdir: Path, python: list[str], log: IO[str], cwd: Path
) -> Iterator[SimFleet]:
    """Start the child fleet (``python`` is an interpreter command); stop it on exit."""
    creds = workdir / "credentials"
    proc = subprocess.Popen(
        [
            *python,
            "-m",
            "tests.bench.simfleet",
            "--dir",
            str(creds),
            "--formlabs",
            f"{shape.formlabs_accounts}x{shape.formlabs_per_account}",
            "--carbon",
            f"{shape.carbon_accounts}x{shape.carbon_per_account}",
            "--seed",
            str(shape.seed),
            "--history-s",
            str(shape.history_s),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the simulator exited early (code {proc.wait()})")
        yield SimFleet(shape, proc, json.loads(line))
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the child ---------------------------------------------------------------------------------


def _shape(text: str) -> tuple[int, int]:
    accounts, _, per = text.partition("x")
    return int(accounts), int(per or 0)


def _install_counters(records: Counter[str], per_second: dict[str, Counter[int]]) -> None:
    from printfleet.simulator import carbon, formlabs, gateway

    fl_printers = formlabs.FormlabsApi._printers
    cb_printers = carbon.CarbonApi._printers
    handle = gateway.Gateway.handle

    def counted_formlabs(self: Any, account: Any, now: int) -> Any:
        response = fl_printers(self, account, now)
        if response.status == 200:
            records["formlabs"] += len(account.printers)
        return response

    def counted_carbon(self: Any, request: Any, account: Any, moment: Any) -> Any:
        response = cb_printers(self, request, account, moment)
        if response.status == 200:
            limit = carbon._int_param(request, "limit", 100, 1, 1000)
            offset = carbon._int_param(request, "offset", 0, 0, None)
            records["carbon"] += max(0, min(limit, len(account.printers) - offset))
        return response

    def counted_handle(self: Any, request: Any) -> Any:
        response = handle(self, request)
        per_second[self.api.vendor][int(time.time())] += 1
        return response

    formlabs.FormlabsApi._printers = counted_formlabs  # type: ignore[method-assign]
    carbon.CarbonApi._printers = counted_carbon  # type: ignore[method-assign]
    gateway.Gateway.handle = counted_handle  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.simfleet")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--formlabs", type=_shape, default=(1, 0), help="ACCOUNTSxPRINTERS")
    parser.add_argument("--carbon", type=_shape, default=(1, 0), help="ACCOUNTSxPRINTERS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--history-s", type=int, default=6 * 3600)
    args = parser.parse_args(argv)

    from printfleet.simulator.config import SimulatorConfig
    from printfleet.simulator.simulator import Simulator

    records: Counter[str] = Counter()
    per_second: dict[str, Counter[int]] = {"formlabs": Counter(), "carbon": Counter()}
    _install_counters(records, per_second)
    (fl_accounts, fl_per), (cb_accounts, cb_per) = args.formlabs, args.carbon
    vendors = tuple(v for v, n in (("formlabs", fl_per), ("carbon", cb_per)) if n)
    started = time.monotonic()
    sim = Simulator(
        SimulatorConfig(
            formlabs_printers=fl_accounts * fl_per,
            carbon_printers=cb_accounts * cb_per,
            formlabs_accounts=max(1, fl_accounts),
            carbon_accounts=max(1, cb_accounts),
            vendors=vendors,
            speed=1.0,
            seed=args.seed,
            history_s=args.history_s,
            protocol_clock="wall",
        )
    )
    sim.start()
    build_s = time.monotonic() - started
    args.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    accounts: list[dict[str, str]] = []
    carbon_index = 0
    for i, account in enumerate(sim.accounts):
        if account.vendor not in vendors:
            continue
        entry = {"vendor": account.vendor, "name": f"{account.vendor[:2]}{i:03d}"}
        if account.vendor == "formlabs":
            path = args.dir / f"formlabs-{i}.secret"
            path.write_text(account.client_secret + "\n")
            entry.update(client_id=account.client_id, secret_file=str(path))
        else:
            path = args.dir / f"carbon-{i}.json"
            sim.write_carbon_secrets(path, account=carbon_index)
            carbon_index += 1
            entry.update(secrets_file=str(path))
        path.chmod(0o600)
        accounts.append(entry)
    urls = {v: sim.formlabs_url if v == "formlabs" else sim.carbon_url for v in vendors}
    print(json.dumps({"accounts": accounts, "urls": urls, "build_s": build_s}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "stats":
                times = os.times()
                print(
                    json.dumps(
                        {
                            "records": dict(records),
                            "requests": {v: sum(c.values()) for v, c in per_second.items()},
                            "per_second": {v: dict(c) for v, c in per_second.items()},
                            "cpu_s": times.user + times.system,
                        }
                    ),
                    flush=True,
                )
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
