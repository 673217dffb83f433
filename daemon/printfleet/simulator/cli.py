"""``printfleet simulate``: the simulated vendor APIs on their own, until Ctrl-C.

Prints base URLs and credentials. The Carbon ``secrets.json`` goes to a private temp file
(removed on exit), or with ``--credentials-dir DIR`` to ``DIR/carbon-secrets.json`` beside the
Formlabs client secret in ``DIR/formlabs.secret``, kept after exit so a config can name them.

With ``--accounts N`` (N > 1) each vendor has N accounts, the printers dealt round-robin over
them. The lines above still describe the first account; one line per account follows,
``account <i> <client_id> <client_secret>`` (Formlabs) or ``account <i> <client_id>
<secrets_file>`` (Carbon, a file per account: ``carbon-secrets-<i>.json`` in the credentials
directory), i from 1, so a bench can read them with one pattern.

The command defaults to ``--protocol-clock wall``: a daemon pointed at it runs on
real time, and with a fast fleet clock its JWTs and cursors would otherwise expire at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from printfleet.simulator.config import SimulatorConfig
from printfleet.simulator.simulator import AccountInfo, Simulator
from printfleet.simulator.stats import request_stats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="printfleet simulate",
        description="Serve simulated Formlabs and Carbon cloud APIs over a moving fleet.",
    )
    parser.add_argument(
        "--vendor",
        choices=("formlabs", "carbon", "both"),
        default="both",
        help="which vendor APIs to serve (both)",
    )
    parser.add_argument(
        "--printers", type=_count, default=20, help="printers per vendor (20; 0: an empty account)"
    )
    parser.add_argument(
        "--accounts",
        type=_positive,
        default=1,
        help="accounts per vendor, the printers dealt round-robin over them (1)",
    )
    parser.add_argument(
        "--stats-file",
        type=Path,
        metavar="FILE",
        help="on exit, write JSON request counts per vendor to FILE, with the most requests "
        "received in any one real second (max_per_second)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="port for the first vendor; with both, Formlabs gets P and Carbon P+1 (0: free ports)",
    )
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per real second (60)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="fleet seed: the same seed gives the same printers and history (1)",
    )
    parser.add_argument(
        "--protocol-clock",
        choices=("simulated", "wall"),
        default="wall",
        help="clock judging token/JWT expiry, cursors and rate limits (wall)",
    )
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        metavar="DIR",
        help="write formlabs.secret and carbon-secrets.json (mode 0600) into DIR, created if "
        "needed, and keep them on exit (default: a temp secrets.json removed on exit)",
    )
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def write_credentials(sim: Simulator, directory: Path) -> dict[str, Path]:
    """Write the simulator's secrets into ``directory`` (0700, created); return what went where.

    The names are the ones config.example.toml uses, so a config can name them bare.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if "formlabs" in sim.config.vendors:
        path = directory / "formlabs.secret"
        _write_private(path, sim.formlabs_client_secret + "\n")
        written["formlabs"] = path
    if "carbon" in sim.config.vendors:
        path = directory / "carbon-secrets.json"
        _write_private(path, "")
        sim.write_carbon_secrets(path)
        written["carbon"] = path
    return written


def _write_private(path: Path, text: str) -> None:
    # Created 0600 before anything is written, so the secret is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


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
        formlabs_accounts=args.accounts,
        carbon_accounts=args.accounts,
    )


def _announce(
    sim: Simulator,
    secrets_path: str | None,
    out: TextIO,
    formlabs_file: Path | None = None,
    *,
    temporary: bool = False,
    carbon_files: Sequence[Path | str] = (),
) -> None:
    config = sim.config
    print(f"printfleet simulator: seed {config.seed}, speed x{config.speed:g}", file=out)
    if "formlabs" in config.vendors:
        print(f"Formlabs  base_url       {sim.formlabs_url}", file=out)
        print(f"          client_id      {sim.formlabs_client_id}", file=out)
        print(f"          client_secret  {sim.formlabs_client_secret}", file=out)
        if formlabs_file is not None:
            print(f"          client_secret_file {formlabs_file}", file=out)
        print(f"          printers       {config.formlabs_printers}", file=out)
        if config.formlabs_accounts > 1:
            print(f"          accounts       {config.formlabs_accounts}", file=out)
            for i, info in enumerate(_accounts(sim, "formlabs"), start=1):
                print(
                    f"          account        {i} {info.client_id} {info.client_secret}", file=out
                )
    if "carbon" in config.vendors:
        print(f"Carbon    base_url       {sim.carbon_url}", file=out)
        print(f"          client_id      {sim.carbon_secrets['client_id']}", file=out)
        print(f"          secrets_file   {secrets_path}", file=out)
        if temporary:
            print(
                "          (a temp file removed on exit; --credentials-dir DIR keeps it)", file=out
            )
        print(f"          printers       {config.carbon_printers}", file=out)
        if config.carbon_accounts > 1:
            print(f"          accounts       {config.carbon_accounts}", file=out)
            for i, info in enumerate(_accounts(sim, "carbon"), start=1):
                print(
                    f"          account        {i} {info.client_id} {carbon_files[i - 1]}", file=out
                )
    print("Ctrl-C to stop.", file=out, flush=True)


def _accounts(sim: Simulator, vendor: str) -> list[AccountInfo]:
    return [info for info in sim.accounts if info.vendor == vendor]


def _carbon_files(sim: Simulator, directory: Path | None) -> tuple[list[Path], list[Path]]:
    """One ``secrets.json`` per Carbon account past the first: (all files, temp files)."""
    files: list[Path] = []
    temporary: list[Path] = []
    for i in range(1, sim.config.carbon_accounts):
        if directory is not None:
            path = directory / f"carbon-secrets-{i + 1}.json"
        else:
            descriptor, name = tempfile.mkstemp(prefix="printfleet-carbon-", suffix=".json")
            os.close(descriptor)
            path = Path(name)
            temporary.append(path)
        sim.write_carbon_secrets(path, account=i)
        files.append(path)
    return files, temporary


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
    temporary = None  # the temp secrets file to remove on exit
    formlabs_file = None
    extras: list[Path] = []  # temp secrets files of further Carbon accounts
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        if args.credentials_dir is not None:
            try:
                written = write_credentials(sim, args.credentials_dir)
            except OSError as err:
                print(f"printfleet simulate: --credentials-dir: {err}", file=sys.stderr)
                return 1
            formlabs_file = written.get("formlabs")
            secrets_path = str(written["carbon"]) if "carbon" in written else None
        elif "carbon" in config.vendors:
            descriptor, temporary = tempfile.mkstemp(prefix="printfleet-carbon-", suffix=".json")
            os.close(descriptor)
            sim.write_carbon_secrets(temporary)
            secrets_path = temporary
        carbon_files: list[Path | str] = []
        if "carbon" in config.vendors:
            more, extra_temporary = _carbon_files(sim, args.credentials_dir)
            extras.extend(extra_temporary)
            carbon_files = [secrets_path or "", *more]
        _announce(
            sim,
            secrets_path,
            sys.stdout,
            formlabs_file,
            temporary=temporary is not None,
            carbon_files=carbon_files,
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        sim.stop()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
        removable: list[str | Path] = [*([temporary] if temporary is not None else []), *extras]
        for path in removable:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if args.stats_file is not None:
            args.stats_file.write_text(json.dumps(request_stats(sim.requests), indent=2) + "\n")
    return 0
