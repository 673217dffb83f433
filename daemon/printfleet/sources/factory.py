"""Builds a vendor source from its config section, reading its secret files.

Secret problems become :class:`~printfleet.errors.ConfigError` naming the file and the key and
saying how to fix it; a secret's content never appears in any message.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import SecretStr

from printfleet.clock import Clock
from printfleet.config import SourceConfig
from printfleet.errors import ConfigError, Problem
from printfleet.logs import register_secret
from printfleet.observe import NULL_OBSERVER, Observer
from printfleet.sources.base import Source
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.formlabs import FormlabsSource
from printfleet.sources.http.budget import RequestBudget
from printfleet.sources.http.client import HttpOptions

FORMLABS_DEFAULT_URL = "https://api.formlabs.com"
CARBON_DEFAULT_URL = "https://api.carbon3d.com/v1"
FORMLABS_BUDGET_PER_HOUR = 1350
FORMLABS_PER_SECOND = 10.0
CARBON_PER_10S = 90  # 90% of the older, lower documented limit (100 per 10 s)
_CARBON_FIX = (
    "use the secrets.json downloaded from print.carbon3d.com/api_keys, unchanged "
    "(or create a new API key there)"
)


def make_source(
    config: SourceConfig,
    *,
    client: httpx.AsyncClient,
    clock: Clock,
    offline_after: timedelta,
    observer: Observer = NULL_OBSERVER,
    credentials_dir: Path | None = None,
) -> Source:
    """The source for ``config``, sharing ``client`` (owned by the caller).

    Args:
        offline_after: the ``[poll]`` default; a source's own ``offline_after`` wins. Carbon
            judges ``updated_at`` staleness only when the source sets it (see SourceConfig).
        credentials_dir: where a bare secret file name is looked up (systemd's
            ``$CREDENTIALS_DIRECTORY``).

    Raises:
        ConfigError: a secret file is missing, unreadable, empty or malformed.
    """
    http = HttpOptions(
        client=client, clock=clock, observer=observer, timeout=config.timeout.total_seconds()
    )
    if config.vendor == "formlabs":
        return FormlabsSource(
            name=config.name,
            client_id=config.client_id or "",
            client_secret=_formlabs_secret(config, credentials_dir),
            offline_after=config.offline_after or offline_after,
            base_url=config.base_url or FORMLABS_DEFAULT_URL,
            budget=RequestBudget.formlabs(
                clock,
                per_hour=config.budget_per_hour or FORMLABS_BUDGET_PER_HOUR,
                per_second=config.requests_per_second or FORMLABS_PER_SECOND,
            ),
            **http,
        )
    if config.secrets_file is None:  # the config model already refuses this
        raise ConfigError(
            Problem("<config>", f"source.{config.name}.secrets_file", "is missing", _CARBON_FIX)
        )
    path = resolve_secret_path(config.secrets_file, credentials_dir)
    client_id, key = load_carbon_secrets(path, key=f"source.{config.name}.secrets_file")
    return CarbonSource(
        name=config.name,
        client_id=client_id,
        private_key=key,
        offline_after=config.offline_after,
        base_url=config.base_url or CARBON_DEFAULT_URL,
        budget=RequestBudget.carbon(clock, per_10s=config.requests_per_10s or CARBON_PER_10S),
        **http,
    )


def resolve_secret_path(path: Path, credentials_dir: Path | None) -> Path:
    """A bare file name is looked up in ``credentials_dir`` (when given); paths are kept."""
    if credentials_dir is not None and not path.is_absolute() and len(path.parts) == 1:
        return credentials_dir / path
    return path


def read_secret_file(path: Path, *, key: str, fix: str) -> str:
    """The stripped text of a secret file.

    Raises:
        ConfigError: unreadable, not UTF-8, or empty (the message never quotes the content).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem(str(path), key, "file not found", fix)) from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ConfigError(
            Problem(str(path), key, f"cannot read the file ({reason})", fix)
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem(str(path), key, "is not UTF-8 text", fix)) from None
    text = text.strip()
    if not text:
        raise ConfigError(Problem(str(path), key, "the file is empty", fix))
    return text


def load_carbon_secrets(path: Path, *, key: str = "secrets_file") -> tuple[str, RSAPrivateKey]:
    """``client_id`` and the RSA private key from a Carbon ``secrets.json``.

    Raises:
        ConfigError: naming the file and the offending key (``client_id``/``client_secret``).
    """
    text = read_secret_file(path, key=key, fix=_CARBON_FIX)
    try:
        data = json.loads(text)
    except ValueError as err:
        line = getattr(err, "lineno", None)
        where = f" (line {line})" if line else ""
        raise ConfigError(
            Problem(str(path), key, f"is not valid JSON{where}", _CARBON_FIX)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(Problem(str(path), key, "is not a JSON object", _CARBON_FIX))
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not client_id.strip():
        raise ConfigError(
            Problem(str(path), "client_id", "is missing or not a string", _CARBON_FIX)
        )
    secret = data.get("client_secret")
    if not isinstance(secret, str) or not secret.strip():
        raise ConfigError(
            Problem(str(path), "client_secret", "is missing or not a string", _CARBON_FIX)
        )
    register_secret(secret, permanent=True)
    if "\n" not in secret and "\\n" in secret:
        secret = secret.replace("\\n", "\n")  # escaped twice by a copy-and-paste
    try:
        private_key = load_pem_private_key(secret.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        private_key = None
    if not isinstance(private_key, RSAPrivateKey):
        raise ConfigError(
            Problem(
                str(path),
                "client_secret",
                "is not an unencrypted PEM RSA private key",
                _CARBON_FIX,
            )
        )
    return client_id.strip(), private_key


def _formlabs_secret(config: SourceConfig, credentials_dir: Path | None) -> SecretStr:
    fix = "put the Client Secret from dashboard.formlabs.com/#developer in the file, alone"
    if config.client_secret_file is not None:
        path = resolve_secret_path(config.client_secret_file, credentials_dir)
        key = f"source.{config.name}.client_secret_file"
        return SecretStr(read_secret_file(path, key=key, fix=fix))
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
