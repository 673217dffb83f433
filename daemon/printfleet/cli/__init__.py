"""The ``printfleet`` command: argument parsing, and the only place exceptions become exit codes.

Exit codes (DESIGN §3), the one table (the subcommands and the daemon return these):
0 ok / clean shutdown; 2 invalid config, rules or arguments (each problem on its own line:
``file:line: key: what is wrong (fix: ...)``); 3 credentials rejected by a vendor at start-up;
130 a one-shot command interrupted with Ctrl-C; 1 anything else.

One module per command: :mod:`~printfleet.cli.check`, :mod:`~printfleet.cli.snapshot`,
:mod:`~printfleet.cli.rules` (``rules test``), :mod:`~printfleet.cli.silence`,
:mod:`~printfleet.cli.ack`, :mod:`~printfleet.cli.outbox`, :mod:`~printfleet.cli.receiver`
(``receiver test``), :mod:`~printfleet.cli.history` (``history export``),
:mod:`~printfleet.cli.demo`; ``run`` is :func:`printfleet.app.run_daemon`. A handler imports
its command's module when it runs, so ``printfleet check`` does not load the daemon's network
stack; these are plain imports — a missing module is a broken installation and fails like
any other bug.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from printfleet import __version__
from printfleet.config import Settings, config_path, load_settings
from printfleet.core.durations import parse_duration
from printfleet.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    AuthFailed,
    ConfigError,
    PrintfleetError,
)
from printfleet.logs import configure_logging, redact

log = structlog.get_logger("printfleet.cli")

Handler = Callable[[argparse.Namespace, list[str]], int]


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Run the ``printfleet`` command line with ``argv`` (default ``sys.argv[1:]``)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command != "simulate":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version, usage errors
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:  # `printfleet`, `printfleet rules`, ... without a command
        getattr(args, "help_parser", parser).print_help(sys.stderr)
        return EXIT_CONFIG
    level = {0: "warning", 1: "info"}.get(args.verbose, "debug")
    configure_logging(level, "auto", sys.stderr)
    try:
        return handler(args, extra)
    except ConfigError as err:  # includes RuleError
        for problem in err.problems:
            print(redact(str(problem)), file=sys.stderr)
        return EXIT_CONFIG
    except AuthFailed as err:
        print(f"printfleet: credentials rejected: {redact(str(err))}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        # Ctrl-C is how a foreground daemon, demo or simulator is meant to stop.
        return EXIT_OK if args.long_running else EXIT_INTERRUPTED
    except PrintfleetError as err:
        print(f"printfleet: {redact(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # `printfleet snapshot | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception:
        log.exception("cli.crashed", command=args.command)
        return EXIT_ERROR


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (DESIGN §3)."""
    parser = argparse.ArgumentParser(
        prog="printfleet",
        description="Watch fleets of resin 3D printers through their vendors' cloud APIs.",
    )
    parser.add_argument("--version", action="version", version=f"printfleet {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    parser.set_defaults(command=None, long_running=False)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $PRINTFLEET_CONFIG, else /etc/printfleet/config.toml)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", parents=[config], help="run the daemon in the foreground")
    run.set_defaults(command="run", handler=_run, long_running=True)

    demo = commands.add_parser(
        "demo", help="the daemon wired to a simulated fleet: zero config, events live"
    )
    demo.add_argument(
        "--printers",
        type=_count,
        default=24,
        metavar="N",
        help="simulated printers in all; with --vendor both two thirds are Formlabs "
        "(default 24; 0: accounts with no printers)",
    )
    demo.add_argument(
        "--speed",
        type=_positive_float,
        default=60.0,
        metavar="X",
        help="simulated seconds per real second, for the fleet and the daemon (default 60)",
    )
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=None,
        metavar="S",
        help="stop after this much real time, e.g. 90s, 5m (default: until Ctrl-C)",
    )
    demo.add_argument(
        "--vendor",
        choices=("formlabs", "carbon", "both"),
        default="both",
        help="which vendor APIs to simulate (default both)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=7,
        metavar="S",
        help="fleet seed: the same seed gives the same printers and history (default 7)",
    )
    demo.add_argument(
        "--mqtt",
        dest="mqtt_url",
        type=_broker_url,
        default=None,
        metavar="URL",
        help="broker to publish to when it answers (default: $PRINTFLEET_MQTT__URL, "
        "else mqtt://127.0.0.1:1883)",
    )
    demo.add_argument(
        "--no-mqtt", dest="mqtt", action="store_false", help="do not publish to MQTT at all"
    )
    demo.set_defaults(command="demo", handler=_demo, long_running=True)

    simulate = commands.add_parser(
        "simulate",
        help="the simulated vendor APIs alone (prints URLs and credentials)",
        epilog="Other options are passed to the simulator "
        "(python -m printfleet.simulator --help lists them).",
    )
    simulate.add_argument(
        "--vendor",
        choices=("formlabs", "carbon", "both"),
        help="which vendor APIs to serve (default both)",
    )
    simulate.add_argument(
        "--printers",
        type=_count,
        metavar="N",
        help="printers per vendor (default 20; 0: an empty account)",
    )
    simulate.add_argument(
        "--accounts",
        type=int,
        metavar="N",
        help="accounts per vendor, printers dealt round-robin over them; each account's "
        "credentials are printed on an `account <i> ...` line (default 1)",
    )
    simulate.add_argument(
        "--stats-file",
        metavar="FILE",
        help="on exit, write request counts per vendor as JSON to FILE, with the most "
        "requests received in any one second (max_per_second)",
    )
    simulate.add_argument(
        "--port",
        type=int,
        metavar="P",
        help="port of the first vendor; with both, Formlabs gets P and Carbon P+1 "
        "(default 0: free ports)",
    )
    simulate.add_argument(
        "--speed",
        type=_positive_float,
        metavar="X",
        help="simulated seconds per real second (default 60)",
    )
    simulate.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="fleet seed: the same seed gives the same printers and history (default 1)",
    )
    simulate.add_argument(
        "--credentials-dir",
        metavar="DIR",
        help="write formlabs.secret and carbon-secrets.json into DIR and keep them "
        "(default: a temporary secrets file, removed on exit)",
    )
    simulate.set_defaults(command="simulate", handler=_simulate, long_running=True)

    check = commands.add_parser(
        "check", parents=[config], help="validate the config and all rule packs"
    )
    check.add_argument(
        "--probe",
        action="store_true",
        help="also bind [metrics] listen for a moment, as run will (fails while a running "
        "daemon holds it)",
    )
    check.set_defaults(command="check", handler=_check)

    snapshot = commands.add_parser(
        "snapshot", parents=[config], help="fetch once and print the normalized fleet as JSON"
    )
    snapshot.add_argument("--source", metavar="NAME", help="only this [[source]]")
    snapshot.add_argument("--raw", action="store_true", help="include the vendor's raw fields")
    snapshot.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON line per source (default: one JSON object keyed by source name)",
    )
    snapshot.set_defaults(command="snapshot", handler=_snapshot)

    rules = commands.add_parser("rules", help="rule pack tools")
    rules.set_defaults(help_parser=rules)
    rules_commands = rules.add_subparsers(title="rules commands", metavar="COMMAND")
    rules_test = rules_commands.add_parser(
        "test", parents=[config], help="which rules fire for each event (nothing is sent)"
    )
    rules_test.add_argument(
        "events",
        metavar="EVENTS.jsonl",
        help="one CloudEvent per line, e.g. saved with "
        "mosquitto_sub -t 'printfleet/events/#' > events.jsonl; - reads standard input",
    )
    rules_test.set_defaults(command="rules test", handler=_rules_test)

    outbox = commands.add_parser("outbox", help="inspect pending and dead-letter deliveries")
    outbox.set_defaults(help_parser=outbox)
    outbox_commands = outbox.add_subparsers(title="outbox commands", metavar="ACTION")
    for action, text in (
        ("list", "list pending (or --dead) deliveries"),
        ("replay", "send dead-letter deliveries again"),
        ("drop", "delete deliveries"),
    ):
        sub = outbox_commands.add_parser(action, parents=[config], help=text)
        sub.add_argument("--sink", metavar="S", help="only deliveries to this sink")
        sub.add_argument("--dead", action="store_true", help="the dead-letter table")
        sub.add_argument("--id", dest="ids", nargs="+", action="extend", default=[], metavar="ID")
        sub.set_defaults(command=f"outbox {action}", action=action, handler=_outbox)

    receiver = commands.add_parser("receiver", help="receiver tools")
    receiver.set_defaults(help_parser=receiver)
    receiver_commands = receiver.add_subparsers(title="receiver commands", metavar="COMMAND")
    receiver_test = receiver_commands.add_parser(
        "test",
        parents=[config],
        help="send one test notification to a [[receiver]] now and print its answer",
        description="Sends a test notification (a printer.alert for subject printfleet-test) "
        "through the receiver's real sink: formats, signing and delivery as the daemon's, but "
        "directly, not through the outbox (nothing is queued or retried, so it works while "
        "the daemon runs). Exit 0: accepted; 1: not accepted (the reason is printed); 2: no "
        "such receiver or a config problem.",
    )
    receiver_test.add_argument("name", metavar="NAME", help="the [[receiver]] name")
    receiver_test.add_argument(
        "--severity",
        choices=("info", "warning", "critical"),
        default="info",
        help="the test's severity, to check a push service's priority for it (default info)",
    )
    receiver_test.set_defaults(command="receiver test", handler=_receiver_test)

    history = commands.add_parser("history", help="the print history, for reports")
    history.set_defaults(help_parser=history)
    history_commands = history.add_subparsers(title="history commands", metavar="ACTION")
    export = history_commands.add_parser(
        "export",
        parents=[config],
        help="prints that ended, oldest first, as JSON lines (or --csv)",
    )
    export.add_argument(
        "--since",
        type=_since,
        metavar="DURATION_OR_ISO",
        help="only prints that ended since then: 7d, 12h, or 2026-11-01 (UTC unless a zone)",
    )
    export.add_argument(
        "--until",
        type=_since,
        metavar="DURATION_OR_ISO",
        help="only prints that ended before then (same forms as --since)",
    )
    export.add_argument("--source", metavar="NAME", help="only this source's prints")
    export.add_argument(
        "--csv", action="store_true", help="CSV with a header row instead of JSON lines"
    )
    export.set_defaults(command="history export", handler=_history_export)

    silence = commands.add_parser("silence", help="ad-hoc silences (maintenance)")
    silence.set_defaults(help_parser=silence)
    silence_commands = silence.add_subparsers(title="silence commands", metavar="ACTION")
    add = silence_commands.add_parser(
        "add", parents=[config], help="silence matching printers for a while"
    )
    add.add_argument(
        "matchers",
        nargs="+",
        type=_matcher,
        metavar="KEY=GLOB",
        help="e.g. source=lab serial='Form4-*'",
    )
    add.add_argument(
        "--duration", type=_duration, default=timedelta(hours=1), help="e.g. 30m, 2h (default 1h)"
    )
    add.add_argument("--comment", help="why (shown by `silence list`)")
    add.add_argument("--author", default=_user(), help="who (default: your user name)")
    add.add_argument(
        "--hold",
        action="store_true",
        help="hold instead of drop: one summary per receiver when the silence ends",
    )
    add.set_defaults(action="add", ids=[], all=False)
    listing = silence_commands.add_parser("list", parents=[config], help="active silences")
    listing.add_argument("--all", action="store_true", help="include expired silences")
    listing.set_defaults(action="list", ids=[], matchers=[], duration=None, comment=None)
    remove = silence_commands.add_parser("remove", parents=[config], help="end silences early")
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.set_defaults(action="remove", matchers=[], duration=None, comment=None, all=False)
    for sub in (add, listing, remove):
        sub.set_defaults(command=f"silence {sub.get_default('action')}", handler=_silence)

    ack = commands.add_parser(
        "ack",
        parents=[config],
        help="acknowledge firing alerts: stop their repeats (ack list, ack remove ID)",
        usage="printfleet ack [-c FILE] RULE [KEY=GLOB ...] [--until resolved|DURATION] "
        "[--comment TEXT] [--by NAME]\n       printfleet ack [-c FILE] list [--all]\n"
        "       printfleet ack [-c FILE] remove ID ...",
        description="printfleet ack RULE [KEY=GLOB ...] stops the repeat notifications of the "
        "alerts of RULE firing now (new alerts still notify; the resolved notice still comes). "
        "printfleet ack list shows acks; printfleet ack remove ID... ends them.",
    )
    ack.add_argument(
        "words",
        nargs="+",
        metavar="WORD",
        help="a rule name and matchers as for silence add, e.g. offline serial='Form4-*'",
    )
    ack.add_argument(
        "--until",
        type=_until,
        default="resolved",
        metavar="resolved|DURATION",
        help="resolved (default: until the acknowledged alerts resolve) or a duration, e.g. 4h",
    )
    ack.add_argument("--comment", metavar="TEXT", help="why (shown by `silence list`)")
    ack.add_argument("--by", metavar="NAME", default=_user(), help="who (default: your user name)")
    ack.add_argument("--all", action="store_true", help="list: include spent acks")
    ack.set_defaults(command="ack", handler=_ack)
    return parser


def _until(text: str) -> str | timedelta:
    return "resolved" if text.strip().lower() == "resolved" else _duration(text)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def broker_address(url: str) -> tuple[str, int]:
    """Host and port of an ``mqtt://`` or ``mqtts://`` URL (default port 1883 / 8883).

    Raises:
        ValueError: not an MQTT URL with a host, saying what is expected.
    """
    from printfleet.config.schema import InvalidValue, parse_broker_url

    try:
        broker = parse_broker_url(url)
    except InvalidValue as err:
        raise ValueError(f"{err} ({err.fix})") from None
    return broker.host, broker.port


def _broker_url(text: str) -> str:
    try:
        broker_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _since(text: str) -> datetime | timedelta:
    from printfleet.cli.history import parse_since

    try:
        return parse_since(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seconds(text: str) -> float:
    return _duration(text).total_seconds()


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the passwd database
        return ""


def _matcher(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=GLOB, e.g. serial='Form4-*'")
    return key.strip(), value


# --------------------------------------------------------------------------- handlers


def _settings(args: argparse.Namespace) -> tuple[Path, Settings]:
    path = config_path(args.config)
    return path, load_settings(path)


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.app import run_daemon

    path, settings = _settings(args)
    return int(run_daemon(settings, config_file=path))


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.demo import run_demo

    return int(
        run_demo(
            printers=args.printers,
            speed=args.speed,
            duration=args.duration,
            vendor=args.vendor,
            mqtt=args.mqtt,
            mqtt_url=args.mqtt_url,
            seed=args.seed,
        )
    )


def _simulate(args: argparse.Namespace, extra: list[str]) -> int:
    argv: list[str] = []
    options = ("vendor", "printers", "accounts", "port", "speed", "seed", "credentials_dir")
    for option in (*options, "stats_file"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option.replace('_', '-')}", str(value)]
    code = _simulator_main()([*argv, *extra])
    return EXIT_OK if code is None else int(code)


def _simulator_main() -> Callable[[list[str]], int | None]:
    from printfleet.simulator.cli import main as simulator_main

    return simulator_main


def _check(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.check import check_command
    from printfleet.rulepacks import load_rule_set

    path, settings = _settings(args)
    return check_command(path, settings, load_rule_set, sys.stdout, probe=args.probe)


def _snapshot(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.snapshot import fetch_snapshots, select_sources
    from printfleet.sources.factory import make_source

    path, settings = _settings(args)
    sources = select_sources(path, settings, args.source)
    return asyncio.run(
        fetch_snapshots(
            settings,
            sources,
            make_source=make_source,
            raw=args.raw,
            jsonl=args.jsonl,
            out=sys.stdout,
        )
    )


def _rules_test(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.rules import rules_test

    path, settings = _settings(args)
    events = args.events if args.events == "-" else Path(args.events)
    if isinstance(events, Path) and not events.is_file():
        raise PrintfleetError(f"{events}: no such file (expected one event per line, or -)")
    return int(rules_test(settings, events, sys.stdout, base_dir=path.parent))


def _outbox(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.outbox import outbox_command

    _, settings = _settings(args)
    return int(
        outbox_command(
            settings, args.action, sink=args.sink, dead=args.dead, ids=args.ids, out=sys.stdout
        )
    )


def _receiver_test(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.receiver import receiver_test

    path, settings = _settings(args)
    return int(receiver_test(path, settings, args.name, sys.stdout, severity=args.severity))


def _ack(args: argparse.Namespace, extra: list[str]) -> int:
    """``ack RULE [KEY=GLOB…]``, ``ack list``, ``ack remove ID…`` (the first word decides;
    a rule named ``list`` or ``remove`` cannot be acknowledged from the command line)."""
    from printfleet.cli.ack import ack_command

    first, *rest = args.words
    if first in ("list", "remove"):
        action, args.ids, args.matchers = first, rest, {}
        if action == "remove" and not rest:
            print("printfleet ack remove: give the ids to remove (see ack list)", file=sys.stderr)
            return EXIT_CONFIG
    else:
        action, args.rule, args.ids = "add", first, []
        try:
            args.matchers = dict(_matcher(word) for word in rest)
        except argparse.ArgumentTypeError as err:
            print(f"printfleet ack: {err}", file=sys.stderr)
            return EXIT_CONFIG
    path, settings = _settings(args)
    return int(ack_command(settings, action, args, sys.stdout, base_dir=path.parent))


def _history_export(args: argparse.Namespace, extra: list[str]) -> int:
    from printfleet.cli.history import history_export

    _, settings = _settings(args)
    return history_export(
        settings,
        since=args.since,
        until=args.until,
        source=args.source,
        as_csv=args.csv,
        out=sys.stdout,
        err=sys.stderr,
    )


def _silence(args: argparse.Namespace, extra: list[str]) -> int:
    """``args`` as passed on: ``matchers: dict[str, str]``, ``duration: timedelta | None``,
    ``comment: str | None``, ``author: str`` (add), ``all: bool`` (list), ``ids: list[str]``."""
    from printfleet.cli.silence import silence_command

    _, settings = _settings(args)
    args.matchers = dict(args.matchers)
    return int(silence_command(settings, args.action, args, sys.stdout))
