"""``printfleet check``: validate the config and every rule pack, and say what was found.

The summary is for a person reading a terminal or a CI log, so it never shows a secret
(receiver URLs and broker passwords in URLs are secrets too).
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from printfleet.config import Settings
from printfleet.config.secrets import loose_secret_files, permission_warning
from printfleet.core.rules.model import RuleSet
from printfleet.logs import redact


def print_summary(path: Path, settings: Settings, rule_set: RuleSet, out: TextIO) -> None:
    """What ``check`` found, for a person: never a secret (receiver URLs are secrets too)."""
    lines = [f"{path}: OK", f"  state_dir  {settings.daemon.state_dir}"]
    lines.append(f"  sources    {len(settings.source)}")
    width = max((len(s.name) for s in settings.source), default=0)
    for source in settings.source:
        url = source.base_url or f"{source.api_url} (default)"
        lines.append(f"    {source.name:<{width}}  {source.vendor:<8}  {redact(url)}")
    lines.append(f"  receivers  {len(settings.receiver)}")
    width = max((len(r.name) for r in settings.receiver), default=0)
    lines.extend(f"    {r.name:<{width}}  {r.kind}" for r in settings.receiver)
    lines.append(f"  rules      {describe_rules(rule_set)}")
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
    # Secret files others may read: valid, but worth fixing (ssh refuses such keys).
    lines.extend(permission_warning(file, mode) for file, mode in loose_secret_files())
    print("\n".join(lines), file=out)


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
