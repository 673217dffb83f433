"""The one reader of secret files, so every secret is found, checked and redacted the same way.

``printfleet check`` (through the loader), the daemon's sinks and the vendor factory all read
``*_file`` keys here: the same lookup in ``$CREDENTIALS_DIRECTORY`` (systemd
``LoadCredential=``), the same messages naming the file and the key (never the content), and
every secret registered for log redaction. A Carbon ``secrets.json`` is parsed here too, by the
one parser that the loader's check and the Carbon source both use (each reads the file when it
runs, so a replaced file is seen at the next start or reload); turning its PEM text into a key
object is the source factory's job (it needs ``cryptography``).

Files are opened non-blocking and checked with ``fstat`` before anything is read: only a
regular file is read (a FIFO would block ``check`` and start-up forever), and at most
``[limits] secret_file_max_size`` bytes of it (``/dev/zero`` is refused, not a MemoryError). A
secret file that group or others may read is accepted but noted: ``check`` prints a warning line
and the daemon logs ``config.secret_file_permissions`` once per file at start-up.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from pydantic import SecretStr

from printfleet.errors import ConfigError, Problem
from printfleet.logs import register_secret

log = structlog.get_logger("printfleet.config")
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


#: The contract's default of ``[limits] secret_file_max_size``: a Carbon secrets.json is ~2 KB,
#: so anything past this is the wrong file (or /dev/zero), not a secret.
SECRET_FILE_MAX_SIZE: Final = 64 * 1024
#: Limit for the other files the config names (the config file itself, ca_file): only there to
#: bound memory when one points at something endless.
TEXT_FILE_MAX_SIZE: Final = 16 * 1024 * 1024

Failure = tuple[str, str]

# Secret files found readable by group or others: path -> mode. Read wherever a secret file is
# read; reported by `printfleet check` and once at daemon start-up.
_loose: dict[str, int] = {}
_reported: set[str] = set()

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _read(path: Path, max_size: int) -> tuple[str, Failure | None, int]:
    """Text of a regular file of at most ``max_size`` bytes, or why not; plus its mode.

    Opened non-blocking so a FIFO cannot hang ``check`` or start-up before ``fstat`` says what
    it is; read in bounded pieces so ``/dev/zero`` or a growing file cannot exhaust memory.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        where = "it" if path.parent.is_dir() else f"it (directory {path.parent} does not exist)"
        return (
            "",
            (
                f"file not found: {path} does not exist",
                f"create {where} or correct the path; {BARE_NAME_HINT}",
            ),
            0,
        )
    except IsADirectoryError:
        return "", (f"cannot read the file: {path} is a directory", "point it at a file"), 0
    except PermissionError:
        return (
            "",
            (
                f"cannot read the file: {path} is not readable by this user",
                "let the printfleet user read it (e.g. chown printfleet FILE; chmod 600 FILE)",
            ),
            0,
        )
    except OSError as err:
        return "", (f"cannot read the file: {path} ({err.strerror})", "check the file"), 0
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            return (
                "",
                (
                    f"cannot read the file: {path} is {kind}, not a regular file",
                    "point it at a regular file holding the value",
                ),
                info.st_mode,
            )
        too_big = (
            f"{path} is larger than {max_size} bytes",
            "point it at the right file (or raise [limits] secret_file_max_size)",
        )
        if info.st_size > max_size:
            return "", too_big, info.st_mode
        chunks: list[bytes] = []
        left = max_size + 1  # one byte more tells a file that grew past the cap
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            return "", too_big, info.st_mode
    except OSError as err:
        return "", (f"cannot read the file: {path} ({err.strerror})", "check the file"), 0
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8"), None, info.st_mode
    except UnicodeDecodeError:
        return (
            "",
            (
                f"{path} is not UTF-8 text",
                "save it as UTF-8 (that line has another encoding)",
            ),
            info.st_mode,
        )


def read_text(path: Path, *, max_size: int = TEXT_FILE_MAX_SIZE) -> tuple[str, Failure | None]:
    """The text of a file the config names, or ``("", (message, fix))`` saying why not.

    Only regular files are read (a FIFO, device or directory is refused without blocking),
    and at most ``max_size`` bytes. The message names the path, never the content.
    """
    text, problem, _ = _read(path, max_size)
    return text, problem


def read_secret_text(
    path: Path, *, max_size: int = SECRET_FILE_MAX_SIZE
) -> tuple[str, Failure | None]:
    """:func:`read_text` for a secret file: capped at ``max_size`` and noting (for
    :func:`loose_secret_files`) when group or others may read it."""
    text, problem, mode = _read(path, max_size)
    if problem is None and mode & 0o077:
        _loose.setdefault(str(path), stat.S_IMODE(mode))
    return text, problem


def loose_secret_files() -> list[tuple[str, int]]:
    """Every secret file read so far that group or others may read: ``(path, mode)``."""
    return sorted(_loose.items())


def permission_warning(path: str, mode: int) -> str:
    """The line ``printfleet check`` prints for a secret file others may read."""
    return (
        f"warning: secret file {path} is readable by group or others (mode {mode:04o}); "
        f"fix: chmod 600 {path}"
    )


def report_secret_file_permissions() -> None:
    """Log ``config.secret_file_permissions`` once per loose secret file (daemon start-up)."""
    for path, mode in loose_secret_files():
        if path in _reported:
            continue
        _reported.add(path)
        log.warning(
            "config.secret_file_permissions",
            file=path,
            mode=f"{mode:04o}",
            fix=f"chmod 600 {path}",
        )


def forget_loose_secret_files(*, reported: bool = False) -> None:
    """Forget the loose files seen (a new configuration is being loaded); with ``reported``
    also which were logged already (tests)."""
    _loose.clear()
    if reported:
        _reported.clear()


def secret_text(text: str, path: Path) -> tuple[str, tuple[str, str] | None]:
    """A secret file's ``text`` stripped, or ``("", (message, fix))`` when nothing is left."""
    secret = text.strip()
    if not secret:
        return "", (
            f"secret file {path} is empty",
            "put the secret in the file (a trailing newline is fine)",
        )
    return secret, None


def read_secret_file(
    path: Path, *, key: str, file: str | None = None, max_size: int = SECRET_FILE_MAX_SIZE
) -> str:
    """The stripped content of the secret file at ``path``, registered for log redaction.

    Args:
        key: the config key that names the file, for the message.
        file: what the problem is reported against (the config file); default ``path``.
        max_size: bytes; a larger file is refused (``[limits] secret_file_max_size``).

    Raises:
        ConfigError: the file is missing, unreadable, not a regular file, too large, not
            UTF-8 or empty.
    """
    text, problem = read_secret_text(path, max_size=max_size)
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
    max_size: int = SECRET_FILE_MAX_SIZE,
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
    return SecretStr(read_secret_file(path, key=key, file=str(config_file), max_size=max_size))


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


def load_carbon_secrets(
    path: Path, *, key: str = "secrets_file", max_size: int = SECRET_FILE_MAX_SIZE
) -> CarbonSecrets:
    """:func:`parse_carbon_secrets` of the file at ``path`` (read with :func:`read_secret_file`).

    Raises:
        ConfigError: the file cannot be read, or is not a Carbon ``secrets.json``.
    """
    text = read_secret_file(path, key=key, max_size=max_size)
    return parse_carbon_secrets(text, path=path, key=key)


def secret_file_max_size(settings: Any) -> int:
    """``[limits] secret_file_max_size`` of ``settings`` (bytes), or the contract's default
    while a configuration without a ``[limits]`` section is in use."""
    limits = getattr(settings, "limits", None)
    value = getattr(limits, "secret_file_max_size", None)
    return value if isinstance(value, int) else SECRET_FILE_MAX_SIZE
