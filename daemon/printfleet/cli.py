"""The ``printfleet`` command: argument parsing, and the only place exceptions become exit codes.

Exit codes (DESIGN §3): 0 ok / clean shutdown; 2 invalid config or rules (each problem on its
own line: ``file:line: key: what is wrong (fix: ...)``); 3 credentials rejected by a vendor at
start-up; 130 a one-shot command interrupted with Ctrl-C; 1 anything else.

Commands implemented in other modules are imported inside their handler, so a module that is
missing or broken cannot stop ``printfleet check`` from working.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import structlog

from printfleet import __version__
from printfleet.config import CREDENTIALS_ENV, Settings, SourceConfig, config_path, load_settings
from printfleet.core.durations import parse_duration
from printfleet.errors import AuthFailed, ConfigError, PrintfleetError, Problem, SourceError
from printfleet.logs import configure_logging, redact

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_INTERRUPTED = 130

# Shown by `check` for sources without base_url; the same defaults as SourceConfig.base_url's
# description and printfleet.sources.factory (not imported: `check` must not need the adapters).
DEFAULT_BASE_URLS = {
    "formlabs": "https://api.formlabs.com",
    "carbon": "https://api.carbon3d.com/v1",
}

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
    demo.add_argument("--printers", type=_positive_int, default=24, metavar="N")
    demo.add_argument(
        "--speed", type=_positive_float, default=60.0, metavar="X", help="simulated time factor"
    )
    demo.add_argument(
        "--duration", type=_seconds, default=None, metavar="S", help="stop after (e.g. 90s, 5m)"
    )
    demo.add_argument("--vendor", choices=("formlabs", "carbon", "both"), default="both")
    demo.add_argument("--no-mqtt", dest="mqtt", action="store_false", help="do not publish")
    demo.set_defaults(command="demo", handler=_demo, long_running=True)

    simulate = commands.add_parser(
        "simulate",
        help="the simulated vendor APIs alone (prints URLs and credentials)",
        epilog="Other options are passed to the simulator "
        "(python -m printfleet.simulator --help lists them).",
    )
    simulate.add_argument("--vendor", choices=("formlabs", "carbon", "both"))
    simulate.add_argument("--printers", type=_positive_int, metavar="N")
    simulate.add_argument("--port", type=int, metavar="P")
    simulate.add_argument("--speed", type=_positive_float, metavar="X")
    simulate.add_argument("--seed", type=int, metavar="S")
    simulate.set_defaults(command="simulate", handler=_simulate, long_running=True)

    check = commands.add_parser(
        "check", parents=[config], help="validate the config and all rule packs"
    )
    check.set_defaults(command="check", handler=_check)

    snapshot = commands.add_parser(
        "snapshot", parents=[config], help="fetch once and print the normalized fleet as JSON"
    )
    snapshot.add_argument("--source", metavar="NAME", help="only this [[source]]")
    snapshot.add_argument("--raw", action="store_true", help="include the vendor's raw fields")
    snapshot.set_defaults(command="snapshot", handler=_snapshot)

    rules = commands.add_parser("rules", help="rule pack tools")
    rules.set_defaults(help_parser=rules)
    rules_commands = rules.add_subparsers(title="rules commands", metavar="COMMAND")
    rules_test = rules_commands.add_parser(
        "test", parents=[config], help="which rules fire for each event (nothing is sent)"
    )
    rules_test.add_argument("events", type=Path, metavar="EVENTS.jsonl")
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
    add.set_defaults(action="add", ids=[], all=False)
    listing = silence_commands.add_parser("list", parents=[config], help="active silences")
    listing.add_argument("--all", action="store_true", help="include expired silences")
    listing.set_defaults(action="list", ids=[], matchers=[], duration=None, comment=None)
    remove = silence_commands.add_parser("remove", parents=[config], help="end silences early")
    remove.add_argument("ids", nargs="+", metavar="ID")
    remove.set_defaults(action="remove", matchers=[], duration=None, comment=None, all=False)
    for sub in (add, listing, remove):
        sub.set_defaults(command=f"silence {sub.get_default('action')}", handler=_silence)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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


def _lazy(module: str, name: str) -> Any:
    """``module.name``, imported only when the command runs (see the module docstring)."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise PrintfleetError(f"{module} is not part of this installation") from None
        raise


def _run(args: argparse.Namespace, extra: list[str]) -> int:
    path, settings = _settings(args)
    run_daemon = _lazy("printfleet.app", "run_daemon")
    return int(run_daemon(settings, config_file=path))


def _demo(args: argparse.Namespace, extra: list[str]) -> int:
    run_demo = _lazy("printfleet.demo", "run_demo")
    return int(
        run_demo(
            printers=args.printers,
            speed=args.speed,
            duration=args.duration,
            vendor=args.vendor,
            mqtt=args.mqtt,
        )
    )


def _simulate(args: argparse.Namespace, extra: list[str]) -> int:
    argv: list[str] = []
    for option in ("vendor", "printers", "port", "speed", "seed"):
        value = getattr(args, option)
        if value is not None:
            argv += [f"--{option}", str(value)]
    code = _simulator_main()([*argv, *extra])
    return EXIT_OK if code is None else int(code)


def _simulator_main() -> Callable[[list[str]], int | None]:
    main_: Callable[[list[str]], int | None] = _lazy("printfleet.simulator.cli", "main")
    return main_


def _check(args: argparse.Namespace, extra: list[str]) -> int:
    path, settings = _settings(args)
    rule_set = _load_rule_set(settings, path.parent)
    print_summary(path, settings, rule_set, sys.stdout)
    return EXIT_OK


_NOT_CHECKED = object()


def _load_rule_set(settings: Settings, base_dir: Path) -> object:
    """The validated rule set (raises RuleError), or ``_NOT_CHECKED`` without rule pack support."""
    try:
        load_rule_set = importlib.import_module("printfleet.rulepacks").load_rule_set
    except ModuleNotFoundError as err:
        if err.name not in ("printfleet.rulepacks", "printfleet"):
            raise
        return _NOT_CHECKED
    return load_rule_set(settings, base_dir=base_dir)


def print_summary(path: Path, settings: Settings, rule_set: object, out: TextIO) -> None:
    """What ``check`` found, for a person: never a secret (receiver URLs are secrets too)."""
    lines = [f"{path}: OK", f"  state_dir  {settings.daemon.state_dir}"]
    lines.append(f"  sources    {len(settings.source)}")
    width = max((len(s.name) for s in settings.source), default=0)
    for source in settings.source:
        url = source.base_url or f"{DEFAULT_BASE_URLS[source.vendor]} (default)"
        lines.append(f"    {source.name:<{width}}  {source.vendor:<8}  {redact(url)}")
    lines.append(f"  receivers  {len(settings.receiver)}")
    width = max((len(r.name) for r in settings.receiver), default=0)
    lines.extend(f"    {r.name:<{width}}  {r.kind}" for r in settings.receiver)
    lines.append(f"  rules      {_describe_rules(rule_set)}")
    mqtt = settings.mqtt
    lines.append(
        f"  mqtt       {safe_url(mqtt.url)} (topic prefix {mqtt.topic_prefix}, qos {mqtt.qos})"
        if mqtt.enabled
        else "  mqtt       disabled"
    )
    metrics = settings.metrics
    lines.append(
        f"  metrics    http://{metrics.listen}/metrics"
        if metrics.enabled
        else "  metrics    disabled"
    )
    print("\n".join(lines), file=out)


def _describe_rules(rule_set: object) -> str:
    if rule_set is _NOT_CHECKED:
        return "not checked (rule pack support is not installed)"
    rules = _count(getattr(rule_set, "rules", rule_set))
    packs = _count(getattr(rule_set, "packs", None))
    silences = _count(getattr(rule_set, "silences", None))
    text = "?" if rules is None else _plural(rules, "rule")
    if packs is not None:
        text += f" in {_plural(packs, 'pack')}"
    if silences:
        text += f", {_plural(silences, 'silence')}"
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, Sequence | set | frozenset | dict):
        return len(value)
    return None


def safe_url(url: str) -> str:
    """``url`` without the password of its user info (``mqtt://user:pw@host`` → ``mqtt://user@host``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact(url)
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    return redact(f"{scheme}://{netloc}{slash}{path}")


def _snapshot(args: argparse.Namespace, extra: list[str]) -> int:
    path, settings = _settings(args)
    sources = [s for s in settings.source if args.source in (None, s.name)]
    if not sources:
        names = ", ".join(s.name for s in settings.source)
        raise ConfigError(
            Problem(
                str(path),
                "source",
                f"no [[source]] named {args.source!r}"
                if args.source
                else "no [[source]] configured",
                f"use one of: {names}" if names else "add a [[source]] (see config.example.toml)",
            )
        )
    return asyncio.run(_fetch_snapshots(settings, sources, raw=args.raw, out=sys.stdout))


async def _fetch_snapshots(
    settings: Settings, sources: list[SourceConfig], *, raw: bool, out: TextIO
) -> int:
    import httpx

    from printfleet.clock import SystemClock

    make_source = _lazy("printfleet.sources.factory", "make_source")
    credentials = os.environ.get(CREDENTIALS_ENV)
    failures: list[SourceError] = []
    async with httpx.AsyncClient(headers={"User-Agent": f"printfleet/{__version__}"}) as client:
        for config in sources:
            source = make_source(
                config,
                client=client,
                clock=SystemClock(),
                offline_after=config.offline_after or settings.poll.offline_after,
                credentials_dir=Path(credentials) if credentials else None,
            )
            try:
                snapshot = await source.fetch_printers()
            except SourceError as err:
                print(f"printfleet: {redact(str(err))}", file=sys.stderr)
                failures.append(err)
                continue
            finally:
                await source.aclose()
            text = json.dumps(snapshot.as_dict(with_raw=raw), indent=2, ensure_ascii=False)
            print(text, file=out)
    if any(isinstance(err, AuthFailed) for err in failures):
        return EXIT_AUTH
    return EXIT_ERROR if failures else EXIT_OK


def _rules_test(args: argparse.Namespace, extra: list[str]) -> int:
    path, settings = _settings(args)
    if not args.events.is_file():
        raise PrintfleetError(f"{args.events}: no such file (expected one event per line)")
    rules_test = _lazy("printfleet.rules_cli", "rules_test")
    return int(rules_test(settings, args.events, sys.stdout, base_dir=path.parent))


def _outbox(args: argparse.Namespace, extra: list[str]) -> int:
    _, settings = _settings(args)
    outbox_command = _lazy("printfleet.outbox_cli", "outbox_command")
    return int(
        outbox_command(
            settings, args.action, sink=args.sink, dead=args.dead, ids=args.ids, out=sys.stdout
        )
    )


def _silence(args: argparse.Namespace, extra: list[str]) -> int:
    """``args`` as passed on: ``matchers: dict[str, str]``, ``duration: timedelta | None``,
    ``comment: str | None``, ``author: str`` (add), ``all: bool`` (list), ``ids: list[str]``."""
    _, settings = _settings(args)
    args.matchers = dict(args.matchers)
    silence_command = _lazy("printfleet.rules_cli", "silence_command")
    return int(silence_command(settings, args.action, args, sys.stdout))
