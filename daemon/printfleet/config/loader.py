"""Turn the TOML file + ``PRINTFLEET_*`` environment overrides + secret files into Settings.

Every problem found is collected and raised together as one :class:`~printfleet.errors.ConfigError`
whose :class:`~printfleet.errors.Problem` items name the file (or environment variable), the dotted
key (``source[1].client_secret_file``), the line where the key is, what is wrong and how to fix it.

Why not pydantic-settings (no longer a dependency): the schema
(:class:`~printfleet.config.schema.Settings`) is a plain model, and pydantic-settings' TOML and
environment sources lose what users need in an error message — the line a key is on, and which
environment variable a bad value came from — and cannot address one entry of ``[[source]]`` by
name. The overlay below is small: environment values are merged into the parsed
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

import os
import tomllib
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from printfleet.config.explain import explain
from printfleet.config.schema import DaemonConfig, Settings, array_sections, leaf_annotation
from printfleet.config.secrets import (
    SECRET_FILE_MAX_SIZE,
    forget_loose_secret_files,
    parse_carbon_secrets,
    read_secret_text,
    read_text,
    resolve_secret_file,
    secret_text,
)
from printfleet.config.toml_lines import (
    Loc,
    dotted_key,
    toml_key_lines,
    toml_problem,
    undecodable_line_of,
)
from printfleet.core.sizes import parse_size
from printfleet.errors import ConfigError, Problem, did_you_mean
from printfleet.logs import register_secret

DEFAULT_CONFIG = Path("/etc/printfleet/config.toml")
ENV_PREFIX = "PRINTFLEET_"
CONFIG_ENV = "PRINTFLEET_CONFIG"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"

# ``*_file`` keys whose content is not a secret (checked for readability, never registered).
_PUBLIC_FILE_KEYS = frozenset({"ca_file"})


# --------------------------------------------------------------------------- public API


def config_path(cli_value: str | None, *, environ: Mapping[str, str] | None = None) -> Path:
    """The config file to use: ``-c``, else ``$PRINTFLEET_CONFIG``, else the system default."""
    env = os.environ if environ is None else environ
    if cli_value:
        return Path(cli_value).expanduser()
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    return DEFAULT_CONFIG


def load_settings(path: Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, overlay, check and validate the configuration at ``path``.

    ``environ`` defaults to :data:`os.environ`; it supplies ``PRINTFLEET_<SECTION>__<KEY>``
    overrides and ``$CREDENTIALS_DIRECTORY``. Secrets found (inline or in files) are registered
    for log redaction.

    Raises:
        ConfigError: listing every problem found, each with file, key, line and fix.
    """
    env = os.environ if environ is None else environ
    forget_loose_secret_files()  # what `check` warns about: this configuration's files
    return _Loader(path, env).load()


def problem_at(
    path: Path,
    loc: Loc,
    message: str,
    fix: str = "",
    *,
    environ: Mapping[str, str] | None = None,
) -> Problem:
    """A problem with the value at ``loc`` (``("metrics", "listen")``) of an already loaded
    config, placed where that value came from: ``path`` and the key's line, or the
    environment variable that set it.

    For problems found after loading (a port that cannot be bound, a pack glob matching no
    file), so they read like every other config problem: ``config.toml:14: metrics.listen: …``.
    """
    env = os.environ if environ is None else environ
    loader = _Loader(path, env)
    text, unreadable = read_text(path)
    if unreadable is None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = {}
        loader.lines = toml_key_lines(text)
        loader._apply_environment(data)
    file, line = loader._origin(loc)
    return Problem(file, dotted_key(loc), message, fix, line)


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
        text, problem = read_text(self.path)
        if problem is not None:
            message, fix = problem
            if not self.path.exists():
                message = "config file not found"
                fix = (
                    "create it (config.example.toml documents every key), or name another "
                    f"with -c FILE or ${CONFIG_ENV}"
                )
            raise ConfigError(Problem(self.file, "", message, fix, undecodable_line_of(self.path)))
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(toml_problem(self.file, err, text)) from None
        self.lines = toml_key_lines(text)
        self._apply_environment(data)
        self._check_duplicate_names(data)
        self._resolve_paths(data)
        settings = self._validate(data)
        if settings is not None:
            self._check_references(settings)
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
        arrays = array_sections()
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
        for section in sorted(array_sections()):
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
        self._secret_max = _secret_file_max_size(data)
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
        public = key in _PUBLIC_FILE_KEYS
        text, problem = (
            read_text(path) if public else read_secret_text(path, max_size=self._secret_max)
        )
        if problem is not None:
            message, fix = problem
            self._add(loc, message, fix)
            return
        if public:
            return
        secret, problem = secret_text(text, path)
        if problem is not None:
            self._add(loc, *problem)
            return
        register_secret(secret, permanent=True)
        if key == "secrets_file":
            try:
                parse_carbon_secrets(secret, path=path, key=key)
            except ConfigError as err:
                for found in err.problems:
                    what = "" if found.key == key else f" {found.key}"
                    self._add(loc, f"{path}{what} {found.message}", found.fix)

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

    def _check_references(self, settings: Settings) -> None:
        """Names one table uses of another: a digest's receiver must be a [[receiver]]."""
        receivers = [r.name for r in settings.receiver]
        for i, digest in enumerate(settings.digest):
            if digest.receiver not in receivers:
                close = did_you_mean(digest.receiver, receivers)
                hint = f"did you mean {close!r}? " if close else ""
                known = ", ".join(receivers) if receivers else "(none: add a [[receiver]])"
                self._add(
                    ("digest", i, "receiver"),
                    f"unknown receiver {digest.receiver!r}",
                    f"{hint}use the name of a [[receiver]]: {known}",
                )

    def _validate(self, data: dict[str, Any]) -> Settings | None:
        try:
            return Settings.model_validate(data)
        except ValidationError as err:
            reported_duplicates = any("duplicate" in p.message for p in self.problems)
            for error in err.errors(include_url=False):
                if not error["loc"] and reported_duplicates:
                    continue  # the model's uniqueness check, already reported with lines
                message, fix = explain(error)
                loc = tuple(error["loc"])
                origin = self._origin(loc)[0]
                if error["type"] == "extra_forbidden" and origin != self.file:
                    unset = "unset the variables" if "variables" in origin else "unset the variable"
                    fix = fix.replace("remove it", unset, 1)
                self._add(loc, message, fix)
            return None


def _env_value(raw: str, loc: Loc) -> Any:
    """An environment string as the config value: kept as text for text-typed keys, else
    parsed as a TOML value when it is one (``5``, ``true``, ``[0.25, 0.5]``)."""
    annotation = leaf_annotation(loc)
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


def _secret_file_max_size(data: dict[str, Any]) -> int:
    """``[limits] secret_file_max_size`` as written, so secret files are checked against the
    cap ``run`` will use; a bad value is reported by the schema, so fall back quietly here."""
    limits = data.get("limits")
    value = limits.get("secret_file_max_size") if isinstance(limits, dict) else None
    if value is None:
        return SECRET_FILE_MAX_SIZE
    try:
        return parse_size(value)
    except (TypeError, ValueError):
        return SECRET_FILE_MAX_SIZE
