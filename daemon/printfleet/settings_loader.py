"""Load the configuration: TOML file + ``PRINTFLEET_*`` environment overrides + secret files.

Every problem found is collected and raised together as one :class:`~printfleet.errors.ConfigError`
whose :class:`~printfleet.errors.Problem` items name the file (or environment variable), the dotted
key (``source[1].client_secret_file``), the line where the key is, what is wrong and how to fix it.

Why not pydantic-settings' own sources: the schema (:class:`~printfleet.config.Settings`) is a plain
model, and its TOML and environment sources lose what users need in an error message — the line a
key is on, and which environment variable a bad value came from — and cannot address one entry of
``[[source]]`` by name. The overlay below is small: environment values are merged into the parsed
TOML before one validation, and every value remembers where it came from.

Path rules (the same for ``check``, ``run`` and the sources):

- ``*_file`` keys: a bare file name (``formlabs.secret``) is looked up in ``$CREDENTIALS_DIRECTORY``
  when systemd provides it (``LoadCredential=``); any other relative path is relative to the
  directory of the config file. They are rewritten to the resolved path, so
  ``settings.source[0].client_secret_file`` is always absolute after loading.
- ``daemon.state_dir`` and ``rules.packs`` entries: relative paths are relative to the directory
  of the config file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from printfleet.config import DaemonConfig, Settings
from printfleet.errors import ConfigError, Problem
from printfleet.logs import register_secret

DEFAULT_CONFIG = Path("/etc/printfleet/config.toml")
ENV_PREFIX = "PRINTFLEET_"
CONFIG_ENV = "PRINTFLEET_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

DURATION_FIX = "write a number and a unit (ms, s, m, h, d, w), e.g. '30s', '5m', '1h30m'"
NAME_FIX = "use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit"

# ``*_file`` keys whose content is not a secret (checked for readability, never registered).
_PUBLIC_FILE_KEYS = frozenset({"ca_file"})

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- public API


def config_path(cli_value: str | None, *, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to use: ``-c``, else ``$PRINTFLEET_CONFIG``, else the system default."""
    env = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value).expanduser()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return DEFAULT_CONFIG


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
    text, problem = _read_text(path)
    if problem is not None:
        message, fix = problem
        raise ConfigError(Problem(str(config_file), key, message, fix))
    secret = text.strip()
    if not secret:
        raise ConfigError(
            Problem(
                str(config_file),
                key,
                f"secret file {path} is empty",
                "put the secret in the file (a trailing newline is fine)",
            )
        )
    register_secret(secret, permanent=True)
    return SecretStr(secret)


def load_settings(path: Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay, check and validate the configuration at ``path``.

    ``environ`` defaults to :data:`os.environ`; it supplies ``PRINTFLEET_<SECTION>__<KEY>``
    overrides and ``$CREDENTIALS_DIRECTORY``. Secrets found (inline or in files) are registered
    for log redaction.

    Raises:
        ConfigError: listing every problem found, each with file, key, line and fix.
    """
    env = os.environ if environ is None else environ
    return _Loader(path, env).load()


# --------------------------------------------------------------------------- loading


@dataclass
class _Loader:
    path: Path
    environ: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)
    lines: dict[Loc, int] = field(default_factory=dict)
    # Which environment variable set a value, keyed by its location.
    from_env: dict[Loc, str] = field(default_factory=dict)
    # Tables that only exist because environment variables set keys in them (a section or
    # table the file does not have), with those variables: ``PRINTFLEET_X__INTERVAL`` makes
    # ``("x",)``, so an "unknown section" there is blamed on the variable, not the file.
    env_tables: dict[Loc, list[str]] = field(default_factory=dict)

    @property
    def file(self) -> str:
        return str(self.path)

    @property
    def credentials_dir(self) -> Path | None:
        value = self.environ.get(CREDENTIALS_ENV)
        return Path(value) if value else None

    def load(self) -> Settings:
        text, problem = _read_text(self.path)
        if problem is not None:
            message, fix = problem
            if not self.path.exists():
                message = "config file not found"
                fix = (
                    "create it (config.example.toml documents every key), or name another "
                    f"with -c FILE or ${CONFIG_ENV}"
                )
            raise ConfigError(Problem(self.file, "", message, fix, _undecodable_line(self.path)))
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(_toml_problem(self.file, err, text)) from None
        self.lines = toml_key_lines(text)
        self._apply_environment(data)
        self._check_duplicate_names(data)
        self._resolve_paths(data)
        settings = self._validate(data)
        if self.problems:
            self.problems.sort(key=lambda p: (p.file != self.file, p.line or 0))
            raise ConfigError(self.problems)
        assert settings is not None
        _register_inline_secrets(settings)
        return settings

    # -- where a location is ------------------------------------------------------------

    def _origin(self, loc: Loc) -> tuple[str, int | None]:
        """The file (or environment variable) and line a value at ``loc`` came from."""
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.from_env:
                return f"environment variable {self.from_env[loc[:n]]}", None
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.env_tables:
                names = self.env_tables[loc[:n]]
                if len(names) == 1:
                    return f"environment variable {names[0]}", None
                return f"environment variables {', '.join(names)}", None
        return self.file, self._line(loc)

    def _line(self, loc: Loc) -> int | None:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
        return None

    def _add(self, loc: Loc, message: str, fix: str = "") -> None:
        file, line = self._origin(loc)
        self.problems.append(Problem(file, dotted_key(loc), message, fix, line))

    # -- environment overrides ----------------------------------------------------------

    def _apply_environment(self, data: dict[str, Any]) -> None:
        arrays = _array_sections()
        for var in sorted(self.environ):
            if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
                continue
            raw = self.environ[var]
            rest = var[len(ENV_PREFIX) :]
            if "__" not in rest:
                head = rest.split("_", 1)[0].lower()
                if head in Settings.model_fields:
                    suggestion = ENV_PREFIX + rest.replace("_", "__", 1)
                    self.problems.append(
                        Problem(
                            f"environment variable {var}",
                            "",
                            "not a config override (section and key are separated by two "
                            "underscores)",
                            f"did you mean {suggestion}?",
                        )
                    )
                continue
            parts = [p.lower() for p in rest.split("__")]
            loc = self._env_loc(var, parts, data, arrays)
            if loc is None:
                continue
            self._set(data, loc, _env_value(raw, loc), var)

    def _env_loc(
        self, var: str, parts: list[str], data: dict[str, Any], arrays: frozenset[str]
    ) -> Loc | None:
        """``["source", "lab", "client_id"]`` → ``("source", 0, "client_id")``."""
        if parts[0] not in arrays:
            return tuple(parts)
        section = parts[0]
        entries = data.get(section)
        entries = entries if isinstance(entries, list) else []
        if len(parts) < 3:
            self.problems.append(
                Problem(
                    f"environment variable {var}",
                    section,
                    f"an override of a [[{section}]] entry needs its name or index and a key",
                    f"write PRINTFLEET_{section.upper()}__<NAME or INDEX>__<KEY>",
                )
            )
            return None
        selector = parts[1]
        index: int | None = None
        if selector.isdigit() and int(selector) < len(entries):
            index = int(selector)
        else:
            for i, entry in enumerate(entries):
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and _env_name(name) == selector:
                    index = i
                    break
        if index is None:
            names = [str(e.get("name")) for e in entries if isinstance(e, dict)]
            self.problems.append(
                Problem(
                    f"environment variable {var}",
                    section,
                    f"no [[{section}]] named or numbered {selector!r} in {self.file}",
                    "use the name ('-' written as '_') or the index of one of: "
                    + (", ".join(names) if names else f"(none — add a [[{section}]] table first)"),
                )
            )
            return None
        return (section, index, *parts[2:])

    def _set(self, data: dict[str, Any], loc: Loc, value: Any, var: str) -> None:
        node: Any = data
        for i, part in enumerate(loc):
            if isinstance(part, int):  # an index _env_loc checked
                node = node[part]
                continue
            if not isinstance(node, dict):
                self.problems.append(
                    Problem(
                        f"environment variable {var}",
                        dotted_key(loc[:i]),
                        "cannot override a key inside a value that is not a table",
                        "override the whole value instead, or fix the config file",
                    )
                )
                return
            if i == len(loc) - 1:
                node[part] = value
                self.from_env[loc] = var
                return
            child = node.get(part)
            if child is None:
                child = node[part] = {}
                self.env_tables[loc[: i + 1]] = []
            if loc[: i + 1] in self.env_tables:
                self.env_tables[loc[: i + 1]].append(var)
            node = child

    # -- checks on the raw data ---------------------------------------------------------

    def _check_duplicate_names(self, data: dict[str, Any]) -> None:
        for section in sorted(_array_sections()):
            entries = data.get(section)
            if not isinstance(entries, list):
                continue
            seen: dict[str, int] = {}
            for i, entry in enumerate(entries):
                name = entry.get("name") if isinstance(entry, dict) else None
                if not isinstance(name, str):
                    continue
                if name in seen:
                    self._add(
                        (section, i, "name"),
                        f"duplicate {section} name {name!r} (also used by {section}[{seen[name]}])",
                        f"give every [[{section}]] a unique name",
                    )
                else:
                    seen[name] = i

    def _resolve_paths(self, data: dict[str, Any]) -> None:
        base = self.path.absolute().parent
        for loc, value, parent in _walk_file_keys(data):
            resolved = resolve_secret_file(Path(value), self.credentials_dir, base_dir=base)
            parent[str(loc[-1])] = str(resolved)
            self._check_file(loc, resolved)
        daemon = data.get("daemon")
        state_dir: Path | None = DaemonConfig().state_dir
        if isinstance(daemon, dict) and "state_dir" in daemon:
            value = daemon["state_dir"]
            state_dir = _relative_to(Path(value), base) if isinstance(value, str) else None
            if state_dir is not None:
                daemon["state_dir"] = str(state_dir)
        if state_dir is not None:
            self._check_state_dir(state_dir)
        rules = data.get("rules")
        if isinstance(rules, dict) and isinstance(rules.get("packs"), list):
            rules["packs"] = [
                str(_relative_to(Path(p), base)) if isinstance(p, str) else p
                for p in rules["packs"]
            ]

    def _check_file(self, loc: Loc, path: Path) -> None:
        key = str(loc[-1])
        text, problem = _read_text(path)
        if problem is not None:
            message, fix = problem
            self._add(loc, message, fix)
            return
        if key in _PUBLIC_FILE_KEYS:
            return
        secret = text.strip()
        if not secret:
            self._add(loc, f"secret file {path} is empty", "put the secret in the file")
            return
        register_secret(secret, permanent=True)
        if key == "secrets_file":
            self._check_carbon_secrets(loc, path, secret)

    def _check_carbon_secrets(self, loc: Loc, path: Path, text: str) -> None:
        fix = "use the secrets.json downloaded from print.carbon3d.com/api_keys unchanged"
        try:
            doc = json.loads(text)
        except ValueError as err:
            # The JSON error names only a position, never content.
            self._add(loc, f"{path} is not valid JSON ({err})", fix)
            return
        if not isinstance(doc, dict):
            self._add(loc, f"{path} is not a JSON object", fix)
            return
        for name, value in doc.items():
            if name != "client_id" and isinstance(value, str):
                register_secret(value, permanent=True)
        missing = [k for k in ("client_id", "client_secret") if not isinstance(doc.get(k), str)]
        if missing:
            self._add(loc, f"{path} has no {' or '.join(missing)}", fix)

    def _check_state_dir(self, state_dir: Path) -> None:
        loc: Loc = ("daemon", "state_dir")
        if state_dir.exists() and not state_dir.is_dir():
            self._add(loc, f"{state_dir} exists and is not a directory", "point it at a directory")
        elif not state_dir.exists() and not state_dir.parent.is_dir():
            self._add(
                loc,
                f"parent directory {state_dir.parent} does not exist",
                "create it, or set state_dir to a directory printfleet may create "
                "(systemd: StateDirectory=printfleet gives /var/lib/printfleet)",
            )

    # -- validation -----------------------------------------------------------------------

    def _validate(self, data: dict[str, Any]) -> Settings | None:
        try:
            return Settings.model_validate(data)
        except ValidationError as err:
            reported_duplicates = any("duplicate" in p.message for p in self.problems)
            for error in err.errors(include_url=False):
                if not error["loc"] and reported_duplicates:
                    continue  # the model's uniqueness check, already reported with lines
                message, fix = _explain(error)
                loc = tuple(error["loc"])
                origin = self._origin(loc)[0]
                if error["type"] == "extra_forbidden" and origin != self.file:
                    unset = "unset the variables" if "variables" in origin else "unset the variable"
                    fix = fix.replace("remove it", unset, 1)
                self._add(loc, message, fix)
            return None


# --------------------------------------------------------------------------- explaining errors


def _explain(error: ErrorDetails) -> tuple[str, str]:
    """(what is wrong, how to fix it) for one pydantic error, never echoing a secret."""
    loc = tuple(error["loc"])
    kind = error["type"]
    msg = error["msg"].removeprefix("Value error, ")
    value = error.get("input")
    container, field_name = _field_at(loc)
    info = container.model_fields.get(field_name) if container and field_name else None
    annotation = _unwrap(info.annotation) if info is not None else None
    secret = annotation is SecretStr
    shown = "" if secret or not isinstance(value, str | int | float) else f" {value!r}"
    description = info.description if info is not None and info.description else ""

    if kind == "extra_forbidden":
        if container is None:
            return "unknown key", "remove it"
        valid = list(container.model_fields)
        what = "section" if container is Settings else "key"
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        if close:
            return f"unknown {what}", f"did you mean '{close[0]}'?"
        return f"unknown {what}", f"remove it; valid {what}s here: {', '.join(valid)}"
    if kind == "missing":
        hint = f" ({description})" if description else ""
        return "required key is missing", f"add {field_name} = ...{hint}"
    if annotation is timedelta:
        return f"invalid duration{shown}", DURATION_FIX
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"invalid value{shown}", f"use one of {expected}"
    if kind == "string_pattern_mismatch":
        return f"invalid value{shown}", NAME_FIX if field_name == "name" else msg
    if kind == "tuple_type" and info is not None and container is Settings:
        return (
            f"[{field_name}] must be a list of tables",
            f"write each entry as a [[{field_name}]] table (double brackets)",
        )
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table", f"write it as a [{dotted_key(loc)}] table"
    if not loc:
        return msg, "see config.example.toml"
    if info is None:  # a model-level check, e.g. missing credentials of a [[source]]
        return msg, f"see the [[{loc[0]}]] examples in config.example.toml"
    got = "" if secret else _got(value)
    if kind in _TYPE_FIXES:
        message, example = _TYPE_FIXES[kind]
        if isinstance(loc[-1], int):
            return f"{message}{got}", f"write each item like {example}"
        return f"{message}{got}", f"write it like {loc[-1]} = {example}"
    return f"{msg.replace('Input should be', 'must be')}{got}", description


# Errors about the type of a value: (what is wrong, an example of the right form).
_TYPE_FIXES: dict[str, tuple[str, str]] = {
    "string_type": ("must be text", '"..." (in quotes)'),
    "int_type": ("must be a whole number", "10"),
    "int_parsing": ("must be a whole number", "10"),
    "int_from_float": ("must be a whole number", "10"),
    "float_type": ("must be a number", "0.5"),
    "float_parsing": ("must be a number", "0.5"),
    "bool_type": ("must be true or false", "true"),
    "bool_parsing": ("must be true or false", "true"),
    "tuple_type": ("must be a list", '["...", "..."]'),
    "list_type": ("must be a list", '["...", "..."]'),
    "path_type": ("must be a file path", '"/etc/printfleet/..."'),
}


def _got(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return f" (got {value!r})"
    return f" (got a {type(value).__name__})"


def _field_at(loc: Loc) -> tuple[type[BaseModel] | None, str | None]:
    """The model holding the key at ``loc`` and the key's name.

    For a location inside a plain field (a list item, a mapping value) that is the field; for
    an entry of a list of tables (``("source", 0)``) it is the entry's model and no name.
    """
    model: type[BaseModel] = Settings
    name: str | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if name is not None:
            inner = _model_of(model, name)
            if inner is None:
                return model, name
            model = inner
        name = part
    if name is None:
        return None, None
    if isinstance(loc[-1], int):
        entry = _model_of(model, name)
        if entry is not None:
            return entry, None
    return model, name


def _model_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    info = model.model_fields.get(name)
    if info is None:
        return None
    annotation = _unwrap(info.annotation)
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _array_sections() -> frozenset[str]:
    return frozenset(
        name
        for name, info in Settings.model_fields.items()
        if typing.get_origin(_unwrap(info.annotation)) is tuple
    )


def _leaf_annotation(loc: Loc) -> Any:
    """The declared type of the key at ``loc`` (None when unknown)."""
    container, name = _field_at(loc)
    if container is None or name is None or name not in container.model_fields:
        return None
    annotation = _unwrap(container.model_fields[name].annotation)
    if loc[-1] != name and typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]  # a value inside a mapping, e.g. headers
    return annotation


def _env_value(raw: str, loc: Loc) -> Any:
    """An environment string as the config value: kept as text for text-typed keys, else
    parsed as a TOML value when it is one (``5``, ``true``, ``[0.25, 0.5]``)."""
    annotation = _leaf_annotation(loc)
    if annotation in (str, SecretStr, Path):
        return raw
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(value, str) and typing.get_origin(annotation) is tuple:
        return [value]
    return value


def _env_name(name: str) -> str:
    return name.lower().replace("-", "_")


def _walk_file_keys(node: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str, dict[str, Any]]]:
    """Every ``*_file`` key with a string value: (location, value, the table holding it)."""
    if isinstance(node, dict):
        for key, value in list(node.items()):
            here = (*loc, key)
            if key.endswith("_file") and isinstance(value, str):
                yield here, value, node
            else:
                yield from _walk_file_keys(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk_file_keys(item, (*loc, i))


def _relative_to(path: Path, base: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else base / path


def _read_text(path: Path) -> tuple[str, tuple[str, str] | None]:
    """The file's text, or ("", (message, fix)) saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        where = "it" if path.parent.is_dir() else f"it (directory {path.parent} does not exist)"
        return "", (f"{path} does not exist", f"create {where} or correct the path")
    except IsADirectoryError:
        return "", (f"{path} is a directory", "point it at a file")
    except PermissionError:
        return "", (
            f"{path} is not readable by this user",
            "let the printfleet user read it (e.g. chgrp printfleet FILE; chmod 640 FILE)",
        )
    except UnicodeDecodeError:
        return "", (
            f"{path} is not UTF-8 text",
            "save it as UTF-8 (that line has another encoding)",
        )
    except OSError as err:
        return "", (f"{path} cannot be read ({err.strerror})", "check the file")


def undecodable_line(data: bytes) -> int | None:
    """The 1-based line of the first byte sequence that is not UTF-8 (None if all decode)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[: err.start].count(b"\n") + 1
    return None


def _undecodable_line(path: Path) -> int | None:
    try:
        return undecodable_line(path.read_bytes())
    except OSError:
        return None


def toml_error_line(err: tomllib.TOMLDecodeError, document: str) -> int | None:
    """The line a TOML error points at; "end of document" is the document's last line."""
    match = re.search(r"line (\d+)", str(err))
    if match:
        return int(match.group(1))
    if "end of document" in str(err):
        return max(1, len(document.splitlines()))
    return None


def _toml_problem(file: str, err: tomllib.TOMLDecodeError, document: str) -> Problem:
    text = str(err)
    match = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", text)
    if match is None:
        return Problem(
            file,
            "",
            f"TOML syntax error: {reason}",
            "fix the TOML syntax (the file ends in the middle of something)",
            toml_error_line(err, document),
        )
    line, column = int(match.group(1)), int(match.group(2))
    fix = "fix the TOML syntax there"
    if "overwrite" in reason or "twice" in reason or "redefin" in reason.lower():
        fix = "a key or table is defined twice; keep one"
    elif "Invalid value" in reason or "Expected" in reason:
        fix = 'check quoting there: strings need quotes, e.g. interval = "15s"'
    return Problem(file, "", f"TOML syntax error at column {column}: {reason}", fix, line)


def _register_inline_secrets(model: BaseModel) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value(), permanent=True)
        elif isinstance(value, BaseModel):
            _register_inline_secrets(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, BaseModel):
                    _register_inline_secrets(item)


# --------------------------------------------------------------------------- keys and lines


def dotted_key(loc: Loc) -> str:
    """``("source", 1, "client_secret_file")`` → ``source[1].client_secret_file``.

    A key TOML cannot write bare is quoted as TOML would write it, so an empty or blank key
    stays visible: ``("poll", "")`` → ``poll.""``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{toml_key(part)}" if out else toml_key(part)
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_key(key: str) -> str:
    """``key`` as TOML writes it: bare when it may be (``interval``), else a quoted string
    (``""``, ``"two words"``, ``"\\u000a"``)."""
    if _BARE_KEY.fullmatch(key):
        return key
    out = []
    for char in key:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


_HEADER = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_SEGMENT = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY = re.compile(rf"^({_SEGMENT}(?:\s*\.\s*{_SEGMENT})*)\s*=")
_STRINGS = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def toml_key_lines(text: str) -> dict[Loc, int]:
    """Line numbers (1-based) of the tables and keys in a TOML document.

    A simple scan, good for error messages: ``[[source]]`` tables are numbered in order, so
    ``("source", 1, "client_id")`` is the ``client_id`` of the second ``[[source]]``. Lines
    inside multi-line strings and arrays are skipped.
    """
    lines: dict[Loc, int] = {}
    counts: dict[Loc, int] = {}
    table: Loc = ()
    depth = 0
    in_string: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            depth += _bracket_depth(line)
            continue
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            segments = _split_key(header.group(1))
            is_array = line.startswith("[[")
            path: Loc = ()
            for i, segment in enumerate(segments):
                path = (*path, segment)
                last = i == len(segments) - 1
                if last and is_array:
                    counts[path] = counts.get(path, -1) + 1
                    path = (*path, counts[path])
                elif path in counts:
                    path = (*path, counts[path])
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*table, *_split_key(key.group(1))), number)
            value = line[key.end() :]
            for quote in ('"""', "'''"):
                if value.count(quote) % 2 == 1:
                    in_string = quote
            depth = max(0, _bracket_depth(value))
    return lines


def _split_key(key: str) -> list[str]:
    """The segments of a (dotted) TOML key as tomllib reads them: ``a."b.c".""`` →
    ``["a", "b.c", ""]``, escapes in quoted segments decoded."""
    try:
        node: Any = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.\s]+)', key)
        return [a or b or c for a, b, c in parts]
    segments: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        ((segment, node),) = node.items()
        segments.append(segment)
    return segments


def _bracket_depth(text: str) -> int:
    """How many more ``[`` than ``]`` a line opens, ignoring strings and comments."""
    code = _STRINGS.sub('""', text).split("#", 1)[0]
    return code.count("[") - code.count("]")
