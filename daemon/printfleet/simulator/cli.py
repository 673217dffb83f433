"""``printfleet simulate``: the simulated vendor APIs on their own, until Ctrl-C.

Prints base URLs and credentials, and writes the Carbon ``secrets.json`` to a private temp file
(removed on exit). The command defaults to ``--protocol-clock wall``: a daemon pointed at it runs on
real time, and with a fast fleet clock its JWTs and cursors would otherwise expire at once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
from typing import TextIO

from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.simulator import Simulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="printfleet simulate",
        description="Serve simulated Formlabs and Carbon cloud APIs over a moving fleet.",
    )
    parser.add_argument("--vendor", choices=("formlabs", "carbon", "both"), default="both")
    parser.add_argument("--printers", type=int, default=20, help="printers per vendor (20)")
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the first vendor; with both, Formlabs gets P and Carbon P+1 (0: free ports)",
    )
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per real second (60)"
    )
    parser.add_argument("--seed", type=int, default=1, help="fleet seed (1)")
    parser.add_argument(
        "--protocol-clock",
        choices=("simulated", "wall"),
        default="wall",
        help="clock judging token/JWT expiry, cursors and rate limits (wall)",
    )
    return parser


def _config(args: argparse.Namespace) -> SimulatorConfig:
    vendors: tuple[str, ...] = (
        ("formlabs", "carbon") if args.vendor == "both" else (str(args.vendor),)
    )
    first, second = args.port, (args.port + 1 if args.port else 0)
    return SimulatorConfig(
        formlabs_printers=args.printers if "formlabs" in vendors else 0,
        carbon_printers=args.printers if "carbon" in vendors else 0,
        speed=args.speed,
        seed=args.seed,
        vendors=vendors,
        formlabs_port=first,
        carbon_port=first if vendors == ("carbon",) else second,
        protocol_clock=args.protocol_clock,
    )


def _announce(sim: Simulator, secrets_path: str | None, out: TextIO) -> None:
    config = sim.config
    print(f"printfleet simulator: seed {config.seed}, speed x{config.speed:g}", file=out)
    if "formlabs" in config.vendors:
        print(f"Formlabs  base_url       {sim.formlabs_url}", file=out)
        print(f"          client_id      {sim.formlabs_client_id}", file=out)
        print(f"          client_secret  {sim.formlabs_client_secret}", file=out)
        print(f"          printers       {config.formlabs_printers}", file=out)
    if "carbon" in config.vendors:
        print(f"Carbon    base_url       {sim.carbon_url}", file=out)
        print(f"          client_id      {sim.carbon_secrets['client_id']}", file=out)
        print(f"          secrets_file   {secrets_path}", file=out)
        print(f"          printers       {config.carbon_printers}", file=out)
    print("Ctrl-C to stop.", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until interrupted; 0 on a clean stop, 1 if it cannot start."""
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        sim = Simulator(config)
        sim.start()
    except (OSError, ValueError) as err:
        print(f"printfleet simulate: {err}", file=sys.stderr)
        return 1
    secrets_path = None
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if "carbon" in config.vendors:
            descriptor, secrets_path = tempfile.mkstemp(prefix="printfleet-carbon-", suffix=".json")
            os.close(descriptor)
            sim.write_carbon_secrets(secrets_path)
        _announce(sim, secrets_path, sys.stdout)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        sim.stop()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        if secrets_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(secrets_path)
    return 0
