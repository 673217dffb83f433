"""Builds a vendor source from its config section, reading its secret files.

Secret files are read with :mod:`printfleet.config.secrets` (the same lookup and messages as
``printfleet check``); problems become :class:`~printfleet.errors.ConfigError` naming the file
and the key and saying how to fix it; a secret's content never appears in any message.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.config import LimitsConfig, SourceConfig
from printfleet.config import secrets as config_secrets
from printfleet.config.secrets import (
    CARBON_FIX,
    SECRET_FILE_MAX_SIZE,
    read_secret_file,
    resolve_secret_file,
)
from printfleet.errors import ConfigError, Problem
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sources.base import Source
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import HostLimit, HostLimits, RequestBudget
from printfleet.sources.http.client import HttpOptions

FORMLABS_BUDGET_PER_HOUR = 1350
FORMLABS_PER_SECOND = 10.0
CARBON_PER_10S = 90  # 90% of the older, lower documented limit (100 per 10 s)


def make_source(
    config: SourceConfig,
    *,
    client: httpx.AsyncClient,
    clock: Clock,
    offline_after: timedelta,
    observer: Observer = NULL_OBSERVER,
    credentials_dir: Path | None = None,
    limits: LimitsConfig | None = None,
    hosts: HostLimits | None = None,
) -> Source:
    """The source for ``config``, sharing ``client`` (owned by the caller).

    Args:
        offline_after: the ``[poll]`` default; a source's own ``offline_after`` wins. Carbon
            judges ``updated_at`` staleness only when the source sets it (see SourceConfig).
        credentials_dir: where a bare secret file name is looked up (systemd's
            ``$CREDENTIALS_DIRECTORY``).
        limits: the ``[limits]`` section (body size, JSON depth, vendor clock skew, the
            per-host request rates); the defaults when not given.
        hosts: where the limit shared by all sources of one vendor host is kept; default
            :meth:`HostLimits.shared` of ``clock``, so every source built with one clock (at
            start-up or after a reload) shares it.

    Raises:
        ConfigError: a secret file is missing, unreadable, empty or malformed.
    """
    limits = limits or LimitsConfig()
    http = HttpOptions(
        client=client,
        clock=clock,
        observer=observer,
        timeout=config.timeout.total_seconds(),
        response_max_size=limits.response_max_size,
        json_max_depth=limits.json_max_depth,
        vendor_clock_skew=limits.vendor_clock_skew,
    )
    if config.vendor == "formlabs":
        return FormlabsSource(
            name=config.name,
            client_id=config.client_id or "",
            client_secret=_formlabs_secret(
                config, credentials_dir, max_size=limits.secret_file_max_size
            ),
            offline_after=config.offline_after or offline_after,
            base_url=config.api_url,
            budget=RequestBudget.formlabs(
                clock,
                per_hour=config.budget_per_hour or FORMLABS_BUDGET_PER_HOUR,
                per_second=config.requests_per_second or FORMLABS_PER_SECOND,
                host=_host_limit(
                    hosts or HostLimits.shared(clock),
                    config,
                    limits.formlabs_host_requests_per_second,
                ),
            ),
            **http,
        )
    if config.secrets_file is None:  # the config model already refuses this
        raise ConfigError(
            Problem("<config>", f"source.{config.name}.secrets_file", "is missing", CARBON_FIX)
        )
    path = resolve_secret_file(config.secrets_file, credentials_dir)
    client_id, key = load_carbon_secrets(
        path, key=f"source.{config.name}.secrets_file", max_size=limits.secret_file_max_size
    )
    return CarbonSource(
        name=config.name,
        client_id=client_id,
        private_key=key,
        offline_after=config.offline_after,
        base_url=config.api_url,
        budget=RequestBudget.carbon(
            clock,
            per_10s=config.requests_per_10s or CARBON_PER_10S,
            host=_host_limit(
                hosts or HostLimits.shared(clock), config, limits.carbon_host_requests_per_second
            ),
        ),
        **http,
    )


def host_of(base_url: str) -> str:
    """The host (and a non-default port) a source's requests go to: the key of its
    shared limit and its ``host`` metric label; never a path, query or credential."""
    url = httpx.URL(base_url)
    return f"{url.host}:{url.port}" if url.port is not None else url.host


def _host_limit(hosts: HostLimits, config: SourceConfig, rate: float) -> HostLimit | None:
    return hosts.get(config.vendor, host_of(config.api_url), rate)


def load_carbon_secrets(
    path: Path, *, key: str = "secrets_file", max_size: int = SECRET_FILE_MAX_SIZE
) -> tuple[str, RSAPrivateKey]:
    """``client_id`` and the RSA private key from a Carbon ``secrets.json``.

    Raises:
        ConfigError: naming the file and the offending key (``client_id``/``client_secret``).
    """
    secrets = config_secrets.load_carbon_secrets(path, key=key, max_size=max_size)
    try:
        private_key = load_pem_private_key(
            secrets.client_secret.get_secret_value().encode(), password=None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        private_key = None
    if not isinstance(private_key, RSAPrivateKey):
        raise ConfigError(
            Problem(
                str(path),
                "client_secret",
                "is not an unencrypted PEM RSA private key",
                CARBON_FIX,
            )
        )
    return secrets.client_id, private_key


def _formlabs_secret(
    config: SourceConfig, credentials_dir: Path | None, *, max_size: int
) -> SecretStr:
    if config.client_secret_file is not None:
        path = resolve_secret_file(config.client_secret_file, credentials_dir)
        key = f"source.{config.name}.client_secret_file"
        return SecretStr(read_secret_file(path, key=key, max_size=max_size))
    if config.client_secret is not None and config.client_secret.get_secret_value().strip():
        return SecretStr(config.client_secret.get_secret_value().strip())
    raise ConfigError(
        Problem(
            "<config>",
            f"source.{config.name}.client_secret",
            "is missing or empty",
            "set client_secret_file to a file holding the Client Secret",
        )
    )
