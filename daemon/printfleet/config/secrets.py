"""The one reader of secret files, so every secret is found, checked and redacted the same way.

``printfleet check`` (through the loader), the daemon's sinks and the vendor factory all read
``*_file`` keys here: the same lookup in ``$CREDENTIALS_DIRECTORY`` (systemd
``LoadCredential=``), the same messages naming the file and the key (never the content), and
every secret registered for log redaction. A Carbon ``secrets.json`` is parsed here too, once
for the loader's check and the Carbon source alike; turning its PEM text into a key object is
the source factory's job (it needs ``cryptography``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from printfleet.errors import ConfigError, Problem
from printfleet.logs import register_secret

#: Appended to "file not found": a bare name that works under systemd is looked up next to the
#: config when ``$CREDENTIALS_DIRECTORY`` is unset, so ``printfleet check`` run by hand needs it.
BARE_NAME_HINT = (
    "a bare file name is looked up in $CREDENTIALS_DIRECTORY (systemd's LoadCredential= sets "
    "it; unset, next to the config file), so by hand run e.g. "
    "CREDENTIALS_DIRECTORY=/etc/printfleet/credentials printfleet check"
)

CARBON_FIX = (
    "use the secrets.json downloaded from print.carbon3d.com/api_keys, unchanged "
    "(or create a new API key there)"
)


def resolve_secret_file(
    path: Path, credentials_dir: Path | None, *, base_dir: Path | None = None
) -> Path:
    """Where a ``*_file`` value points.

    A bare file name is looked up in ``credentials_dir`` (systemd's ``$CREDENTIALS_DIRECTORY``)
    when given; otherwise a relative path is relative to ``base_dir`` (the config file's
    directory) when given, else to the working directory. Absolute paths are returned as-is.
    """
    path = path.expanduser()
    if path.is_absolute():
        return path
    if credentials_dir is not None and len(path.parts) == 1:
        return credentials_dir / path
    if base_dir is not None:
        return base_dir / path
    return path


def read_text(path: Path) -> tuple[str, tuple[str, str] | None]:
    """The text of a file the config names, or ``("", (message, fix))`` saying why not.

    The message names the path, never the content.
    """
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        where = "it" if path.parent.is_dir() else f"it (directory {path.parent} does not exist)"
        return "", (
            f"file not found: {path} does not exist",
            f"create {where} or correct the path; {BARE_NAME_HINT}",
        )
    except IsADirectoryError:
        return "", (f"cannot read the file: {path} is a directory", "point it at a file")
    except PermissionError:
        return "", (
            f"cannot read the file: {path} is not readable by this user",
            "let the printfleet user read it (e.g. chgrp printfleet FILE; chmod 640 FILE)",
        )
    except UnicodeDecodeError:
        return "", (
            f"{path} is not UTF-8 text",
            "save it as UTF-8 (that line has another encoding)",
        )
    except OSError as err:
        return "", (f"cannot read the file: {path} ({err.strerror})", "check the file")


def secret_text(text: str, path: Path) -> tuple[str, tuple[str, str] | None]:
    """A secret file's ``text`` stripped, or ``("", (message, fix))`` when nothing is left."""
    secret = text.strip()
    if not secret:
        return "", (
            f"secret file {path} is empty",
            "put the secret in the file (a trailing newline is fine)",
        )
    return secret, None


def read_secret_file(path: Path, *, key: str, file: str | None = None) -> str:
    """The stripped content of the secret file at ``path``, registered for log redaction.

    Args:
        key: the config key that names the file, for the message.
        file: what the problem is reported against (the config file); default ``path``.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or empty.
    """
    text, problem = read_text(path)
    secret = ""
    if problem is None:
        secret, problem = secret_text(text, path)
    if problem is not None:
        message, fix = problem
        raise ConfigError(Problem(file or str(path), key, message, fix))
    register_secret(secret, permanent=True)
    return secret


def read_secret(
    value: SecretStr | None,
    file: Path | None,
    *,
    key: str,
    config_file: Path,
    credentials_dir: Path | None,
) -> SecretStr | None:
    """The secret from ``file`` (content stripped) if given, else ``value``.

    The secret is registered for log redaction. Raises :class:`ConfigError` naming ``key``
    and the file (never its content) if the file cannot be read or is empty.
    """
    if file is None:
        if value is not None:
            register_secret(value.get_secret_value(), permanent=True)
        return value
    path = resolve_secret_file(file, credentials_dir, base_dir=config_file.parent)
    return SecretStr(read_secret_file(path, key=key, file=str(config_file)))


@dataclass(frozen=True, slots=True)
class CarbonSecrets:
    """What a Carbon ``secrets.json`` holds: the API client id and its PEM private key."""

    client_id: str
    client_secret: SecretStr


def parse_carbon_secrets(text: str, *, path: Path, key: str) -> CarbonSecrets:
    """The client id and PEM text of a Carbon ``secrets.json`` (``text``, read from ``path``).

    Every string in it but ``client_id`` is registered for log redaction. A PEM whose newlines
    were escaped twice by a copy-and-paste (``\\\\n`` in the JSON) is repaired.

    Raises:
        ConfigError: naming ``path`` and the offending key (``key`` for the whole file,
            ``client_id``/``client_secret`` for a missing entry); never quoting the content.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        # The JSON error names only a position, never content.
        line = getattr(err, "lineno", None)
        where = f" (line {line})" if line else ""
        problem = Problem(str(path), key, f"is not valid JSON{where}", CARBON_FIX)
        raise ConfigError(problem) from None
    if not isinstance(data, dict):
        raise ConfigError(Problem(str(path), key, "is not a JSON object", CARBON_FIX))
    for name, value in data.items():
        if name != "client_id" and isinstance(value, str):
            register_secret(value, permanent=True)
    problems = [
        Problem(str(path), name, "is missing or not a string", CARBON_FIX)
        for name in ("client_id", "client_secret")
        if not isinstance(data.get(name), str) or not data[name].strip()
    ]
    if problems:
        raise ConfigError(problems)
    secret: str = data["client_secret"]
    if "\n" not in secret and "\\n" in secret:
        secret = secret.replace("\\n", "\n")  # escaped twice by a copy-and-paste
    return CarbonSecrets(data["client_id"].strip(), SecretStr(secret))


def load_carbon_secrets(path: Path, *, key: str = "secrets_file") -> CarbonSecrets:
    """:func:`parse_carbon_secrets` of the file at ``path`` (read with :func:`read_secret_file`).

    Raises:
        ConfigError: the file cannot be read, or is not a Carbon ``secrets.json``.
    """
    return parse_carbon_secrets(read_secret_file(path, key=key), path=path, key=key)
