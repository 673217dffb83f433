"""``printfleet check``: validate the config and every rule pack, and say what was found.

The summary is for a person reading a terminal or a CI log, so it never shows a secret
(receiver URLs and broker passwords in URLs are secrets too). What ``run`` would only warn
about (a pack glob matching no file) is printed as plain ``warning:`` lines after it, each
placed like a config problem (``config.toml:12: rules.packs: …``). With ``--probe`` it also
binds ``[metrics] listen`` for a moment, as ``run`` will: a port in use is then exit 2 too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from printfleet.config import Settings
from printfleet.config.loader import problem_at
from printfleet.config.secrets import loose_secret_files, permission_warning
from printfleet.core.digest_schedule import split_zone
from printfleet.core.rules.model import RuleSet
from printfleet.errors import EXIT_OK, ConfigError, Problem
from printfleet.logs import redact

#: ``load_rule_set(settings, *, base_dir, log)``: the rule-pack loader (injected so tests and
#: the CLI's lazy import decide which one).
LoadRules = Callable[..., RuleSet]


class Warnings:
    """A stand-in for the rule-pack loader's logger: its warnings become :class:`Problem` s
    placed in the config file, for ``check`` to print as plain lines (not JSON log lines in
    the middle of the summary)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.found: list[Problem] = []

    def warning(self, event: str, **fields: Any) -> None:
        if event == "rules.no_packs_matched":
            self.found.append(
                problem_at(
                    self._path,
                    ("rules", "packs"),
                    f"{fields.get('pattern')!r} matches no file, so no rules come from it",
                    "fix the pattern or remove it from the list",
                )
            )
        else:  # anything a future loader warns about, still as one plain line
            details = ", ".join(f"{key}={value}" for key, value in fields.items())
            self.found.append(Problem(str(self._path), "", f"{event} {details}".strip()))

    def __getattr__(self, name: str) -> Callable[..., None]:
        # debug/info lines of the loader are not check's business.
        return lambda *args, **kwargs: None


def check_command(
    path: Path, settings: Settings, load_rules: LoadRules, out: TextIO, *, probe: bool = False
) -> int:
    """``printfleet check``: load the rule packs, optionally probe the metrics address, print
    the summary and any warnings; return the exit code.

    Raises:
        ConfigError: a rule pack is invalid, or (``probe``) ``[metrics] listen`` cannot be bound.
    """
    warnings = Warnings(path)
    rule_set = load_rules(settings, base_dir=path.parent, log=warnings)
    if probe and settings.metrics.enabled:
        from printfleet.health import probe_listen

        found = probe_listen(settings.metrics.listen)
        if found is not None:
            raise ConfigError(problem_at(path, ("metrics", "listen"), *found))
    print_summary(path, settings, rule_set, out, warnings=len(warnings.found))
    for problem in warnings.found:
        print(f"warning: {redact(str(problem))}", file=out)
    return EXIT_OK


def print_summary(
    path: Path, settings: Settings, rule_set: RuleSet, out: TextIO, *, warnings: int = 0
) -> None:
    """What ``check`` found, for a person: never a secret (receiver URLs are secrets too)."""
    loose = loose_secret_files()
    warnings += len(loose)
    status = f"OK ({_plural(warnings, 'warning')} below)" if warnings else "OK"
    lines = [f"{path}: {status}", f"  state_dir  {settings.daemon.state_dir}"]
    lines.append(f"  sources    {len(settings.source)}")
    width = max((len(s.name) for s in settings.source), default=0)
    for source in settings.source:
        url = source.base_url or f"{source.api_url} (default)"
        lines.append(f"    {source.name:<{width}}  {source.vendor:<8}  {redact(url)}")
    lines.append(f"  receivers  {len(settings.receiver)}")
    width = max((len(r.name) for r in settings.receiver), default=0)
    lines.extend(f"    {r.name:<{width}}  {r.kind}" for r in settings.receiver)
    lines.append(f"  rules      {describe_rules(rule_set)}")
    if settings.digest:
        lines.append(f"  digests    {len(settings.digest)}")
        width = max(len(d.name) for d in settings.digest)
        for d in settings.digest:
            when, zone = split_zone(d.schedule, settings.rules.timezone)
            lines.append(f"    {d.name:<{width}}  to {d.receiver}, {when} {zone}")
    mqtt = settings.mqtt
    lines.append(
        f"  mqtt       {safe_url(mqtt.url)} (topic prefix {mqtt.topic_prefix}, qos {mqtt.qos})"
        if mqtt.enabled
        else "  mqtt       disabled"
    )
    metrics = settings.metrics
    lines.append(
        f"  metrics    {describe_listen(metrics.listen)}"
        if metrics.enabled
        else "  metrics    disabled"
    )
    # Secret files others may read: valid, but worth fixing (ssh refuses such keys).
    lines.extend(permission_warning(file, mode) for file, mode in loose)
    print("\n".join(lines), file=out)


def describe_listen(listen: str) -> str:
    """``http://127.0.0.1:9877/metrics``; port 0 and ``:port`` said in words."""
    from printfleet.config.schema import parse_listen

    host, port = parse_listen(listen)
    shown = f"[{host}]" if ":" in host else host or "0.0.0.0"
    where = "" if host else " (all interfaces)"
    if port == 0:
        return (
            f"http://{shown}:<free port>/metrics{where} (port 0: a free port is picked at "
            "start-up; the health.listening log line names it)"
        )
    return f"http://{shown}:{port}/metrics{where}"


def describe_rules(rule_set: RuleSet) -> str:
    """``3 rules in 2 packs, 1 silence``."""
    text = f"{_plural(len(rule_set.rules), 'rule')} in {_plural(len(rule_set.packs), 'pack')}"
    # Read with a default: a test's stand-in rule set may carry only rules and packs.
    silences = len(getattr(rule_set, "silences", ()))
    if silences:
        text += f", {_plural(silences, 'silence')}"
    return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
