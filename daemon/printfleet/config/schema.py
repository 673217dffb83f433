"""The shape of the configuration, so every key is documented and checked in one place.

The pydantic models (every field has a description, unknown keys are errors) and the few
lookups the loader and the error explainer need about that shape: which model declares a key,
which sections are ``[[arrays]]``. Loading lives in :mod:`printfleet.config.loader`.

The vendors' public API base URLs are declared here, once: the ``base_url`` default of a
``[[source]]``, which the factory, the adapters and ``printfleet check`` all read.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal, Union
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    field_validator,
    model_validator,
)

from printfleet.config.toml_lines import Loc
from printfleet.core.digest import DIGEST_MATCH_FIELDS
from printfleet.core.digest_schedule import DigestSchedule
from printfleet.core.durations import parse_duration
from printfleet.core.sizes import format_size, parse_size
from printfleet.errors import did_you_mean

Vendor = Literal["formlabs", "carbon"]

FORMLABS_BASE_URL: Final = "https://api.formlabs.com"
CARBON_BASE_URL: Final = "https://api.carbon3d.com/v1"
DEFAULT_BASE_URLS: Final[Mapping[str, str]] = MappingProxyType(
    {"formlabs": FORMLABS_BASE_URL, "carbon": CARBON_BASE_URL}
)
"""A source's API base URL when its ``base_url`` is not set, by vendor."""


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(value)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


class InvalidValue(ValueError):
    """A validator's verdict with its own fix, which the error explainer shows as the fix.

    The message never contains the value when the value may hold a secret (a URL's password).
    """

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


#: ``[mqtt] url`` schemes: scheme -> (TLS, default port). The MQTT sink connects with these.
MQTT_SCHEMES: Final[Mapping[str, tuple[bool, int]]] = MappingProxyType(
    {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
)
MQTT_URL_FIX: Final = "write mqtt://host:1883, or mqtts://host:8883 for TLS"
LISTEN_FIX: Final = (
    "write host:port with a port up to 65535, e.g. 127.0.0.1:9877, [::1]:9877, "
    "or :9877 for all interfaces"
)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (all interfaces) -> ``(host, port)``.

    Raises:
        InvalidValue: naming the accepted forms.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        reason = (
            f"port {port} is out of range"
            if sep and port.isdigit()
            else "the port is missing or not a number"
        )
        raise InvalidValue(f"invalid listen address {listen!r}: {reason}", LISTEN_FIX)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def check_mqtt_url(url: str) -> str:
    """``url`` if it is a broker URL the MQTT sink can connect to.

    Raises:
        InvalidValue: another scheme, no host, or a bad port (the URL itself is not repeated:
            it may carry a password).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidValue("invalid port in the broker URL", MQTT_URL_FIX) from None
    scheme = parts.scheme.lower()
    if scheme not in MQTT_SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise InvalidValue(
            f"not a broker URL ({shown}; MQTT needs mqtt:// or mqtts://)", MQTT_URL_FIX
        )
    if not parts.hostname:
        raise InvalidValue("the broker URL has no host", MQTT_URL_FIX)
    if port == 0:
        raise InvalidValue("invalid port 0 in the broker URL", MQTT_URL_FIX)
    return url


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the MQTT broker is, from ``[mqtt] url`` (or ``demo --mqtt``)."""

    host: str
    port: int
    tls: bool


def parse_broker_url(url: str) -> Broker:
    """The one reading of a broker URL: ``mqtt://host[:1883]``, ``mqtts://host[:8883]``
    (``tcp://``/``ssl://`` too).

    Raises:
        InvalidValue: as :func:`check_mqtt_url` (never repeating the URL).
    """
    check_mqtt_url(url)
    parts = urlsplit(url)
    tls, default_port = MQTT_SCHEMES[parts.scheme.lower()]
    assert parts.hostname is not None  # checked above
    return Broker(host=parts.hostname, port=parts.port or default_port, tls=tls)


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone this system knows.

    Raises:
        InvalidValue: with the closest known name when it looks like a typo.
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = did_you_mean(name, available_timezones())
        hint = f"did you mean {close!r}? " if close else ""
        raise InvalidValue(
            f"unknown time zone {name!r}",
            f"{hint}use an IANA name such as UTC or Europe/Berlin "
            "(the tzdata package provides them where the system has none)",
        ) from None
    return name


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(lambda td: f"{td.total_seconds():g}s", return_type=str),
]


def _size(value: Any) -> int:
    try:
        return parse_size(value)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


Size = Annotated[
    int,
    BeforeValidator(_size),
    PlainSerializer(format_size, return_type=str),
]
"""A byte count written like ``"256MiB"`` or ``"64KiB"`` (see :func:`parse_size`)."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DaemonConfig(Section):
    state_dir: Path = Field(
        Path("/var/lib/printfleet"),
        description="Directory for the SQLite state database (snapshots, rule timers, outbox).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level of log lines written to stdout."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="'auto' writes JSON when stdout is not a terminal, colored text when it is.",
    )
    shutdown_grace: Duration = Field(
        timedelta(seconds=10),
        description="On SIGTERM, how long to let in-flight deliveries finish before exiting.",
    )


class SourceConfig(Section):
    """One vendor account."""

    name: str = Field(
        description="Unique account name; appears in events, MQTT topics and metric labels.",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$",
    )
    vendor: Vendor = Field(description="Which vendor API this account uses.")
    base_url: str | None = Field(
        None,
        description="Override the vendor API base URL (the simulator, a proxy). "
        f"Defaults: {FORMLABS_BASE_URL} and {CARBON_BASE_URL}.",
    )
    # Formlabs credentials
    client_id: str | None = Field(None, description="Formlabs: the application's Client ID.")
    client_secret: SecretStr | None = Field(
        None, description="Formlabs: the Client Secret. Prefer client_secret_file."
    )
    client_secret_file: Path | None = Field(
        None,
        description="Formlabs: file holding the Client Secret. A bare file name is looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=).",
    )
    # Carbon credentials
    secrets_file: Path | None = Field(
        None,
        description="Carbon: the secrets.json downloaded from print.carbon3d.com/api_keys "
        "(client_id + RSA private key). A bare file name is looked up in $CREDENTIALS_DIRECTORY.",
    )
    # Budgets
    budget_per_hour: int | None = Field(
        None,
        ge=1,
        description="Formlabs: requests per hour this daemon may spend (default 1350, 90% of the "
        "documented 1500/h per user; lower it if other tools share the account).",
    )
    requests_per_second: float | None = Field(
        None,
        gt=0,
        description="Formlabs: burst cap per second (default 10; the API allows 100/s per IP).",
    )
    requests_per_10s: int | None = Field(
        None,
        ge=1,
        description="Carbon: requests per 10 s (default 90: 90% of the lower documented limit).",
    )
    timeout: Duration = Field(
        timedelta(seconds=30),
        description="Deadline of one HTTP request, total: connect and every read of the body "
        "(a vendor trickling bytes cannot hold a request open longer). Retried per policy.",
    )
    offline_after: Duration | None = Field(
        None,
        description="Override [poll] offline_after for this account. For Carbon, staleness of the "
        "printer record's updated_at is only used when this is set (the API does not say it is "
        "a heartbeat); otherwise offline comes from the printer state.",
    )

    @property
    def api_url(self) -> str:
        """``base_url`` if set, else the vendor's public API (:data:`DEFAULT_BASE_URLS`)."""
        return self.base_url or DEFAULT_BASE_URLS[self.vendor]

    @model_validator(mode="after")
    def _credentials_present(self) -> SourceConfig:
        if self.vendor == "formlabs":
            if not self.client_id:
                raise ValueError("a formlabs source needs client_id")
            if self.client_secret is None and self.client_secret_file is None:
                raise ValueError("a formlabs source needs client_secret_file (or client_secret)")
        elif self.secrets_file is None:
            raise ValueError("a carbon source needs secrets_file (the downloaded secrets.json)")
        return self


class PollConfig(Section):
    interval: Duration = Field(
        timedelta(seconds=15),
        description="Base interval for printer state; the scheduler adapts within the budget.",
    )
    active_interval: Duration = Field(
        timedelta(seconds=5),
        description="Interval while a print is overdue past its estimated end (the scheduler "
        "also aims one poll just after each print's estimated end).",
    )
    idle_interval: Duration = Field(
        timedelta(seconds=60), description="Interval while the whole fleet is idle."
    )
    history_interval: Duration = Field(
        timedelta(seconds=60), description="Interval for print history / vendor events."
    )
    queue_interval: Duration = Field(
        timedelta(minutes=5),
        description="Interval for Formlabs Fleet Control queues (GET /groups/ plus one request "
        "per Fleet Control group); stretched so queues never take more than a tenth of the "
        "request budget. Carbon queue lengths come with every printer poll.",
    )
    offline_after: Duration = Field(
        timedelta(minutes=5),
        description="A printer whose last vendor heartbeat is older than this is offline "
        "(never judged during an API outage).",
    )


class ThresholdsConfig(Section):
    progress_milestones: tuple[float, ...] = Field(
        (0.25, 0.5, 0.75),
        description="Print progress fractions that emit print.progress (each once per print).",
    )
    material_low_ratio: float = Field(
        0.15, ge=0, le=1, description="material.low when a cartridge falls below this fraction."
    )
    material_low_ml: float | None = Field(
        None, ge=0, description="material.low when a cartridge falls below this many ml (optional)."
    )
    tank_max_layers: int = Field(
        75000, ge=1, description="tank.attention when a tank has printed at least this many layers."
    )
    tank_max_age: Duration = Field(
        timedelta(days=365), description="tank.attention when a tank was first filled longer ago."
    )
    queue_backlog_items: int = Field(
        10, ge=1, description="queue.backlog when a job queue holds at least this many jobs."
    )
    queue_backlog_age: Duration = Field(
        timedelta(hours=2),
        description="queue.backlog when a queue's oldest job has waited at least this long "
        "(Formlabs Fleet Control queues; Carbon reports no job times).",
    )

    @field_validator("progress_milestones")
    @classmethod
    def _milestones_in_range(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in value):
            raise ValueError("milestones must be fractions between 0 and 1, e.g. [0.25, 0.5, 0.75]")
        return tuple(sorted(set(value)))


class MqttConfig(Section):
    enabled: bool = Field(True, description="Publish to MQTT at all.")
    url: str = Field("mqtt://localhost:1883", description="Broker URL; mqtts:// for TLS.")
    topic_prefix: str = Field("printfleet", description="First level of every topic.")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of event messages.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password. Prefer password_file.")
    password_file: Path | None = Field(None, description="File holding the broker password.")
    ca_file: Path | None = Field(None, description="CA bundle for mqtts:// (default: system CAs).")
    client_id: str | None = Field(
        None,
        description="MQTT client id. Default printfleet-<host>-<8 hex of the state_dir path>: "
        "two daemons on one host never take each other's broker session.",
    )
    homeassistant_discovery: bool = Field(
        True, description="Publish Home Assistant MQTT discovery configs (each printer a device)."
    )
    homeassistant_prefix: str = Field(
        "homeassistant", description="Home Assistant discovery prefix."
    )
    state_min_interval: Duration = Field(
        timedelta(seconds=30),
        description="Progress-only changes of a printer (progress, layer, elapsed and remaining "
        "time) are published to its retained state and field topics at most this often; "
        "status, online, print start/end, materials, alerts and events go out at once. "
        "'0s' publishes every change.",
    )

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return check_mqtt_url(value)


class MetricsConfig(Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics and health endpoints.")
    listen: str = Field(
        "127.0.0.1:9877", description="host:port for /metrics, /healthz and /readyz."
    )

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        parse_listen(value)
        return value


class ReceiverConfig(Section):
    """A notification target that rules can `notify`."""

    name: str = Field(
        description="Name rules use in `notify = [...]` ('mqtt' is reserved for the MQTT sink).",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    )
    kind: Literal["webhook", "slack", "teams", "discord", "apprise"] = Field(
        description="Payload format; apprise: push services (ntfy, Telegram, Pushover, "
        "e-mail, ...) through an Apprise URL."
    )
    url: SecretStr | None = Field(
        None,
        description="Target URL (Slack/Teams/Discord/Apprise URLs are secrets: prefer "
        "url_file). apprise: a service URL such as ntfys://ntfy.sh/topic or "
        "tgram://bottoken/chat_id (https://appriseit.com/services/).",
    )
    url_file: Path | None = Field(None, description="File holding the target URL.")
    secret: SecretStr | None = Field(
        None, description="webhook: HMAC-SHA256 signing key. Prefer secret_file."
    )
    secret_file: Path | None = Field(None, description="webhook: file holding the signing key.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="webhook: extra HTTP headers sent with every request."
    )
    timeout: Duration = Field(
        timedelta(seconds=10),
        description="Deadline of one delivery attempt, total: connect, sending and every read "
        "of the reply (a receiver answering slowly fails the attempt, which is retried).",
    )
    max_age: Duration = Field(
        timedelta(hours=24),
        description="A delivery still failing after this long goes to the dead-letter table.",
    )
    pictures: bool = Field(
        True,
        description="slack/teams/discord: show the print's thumbnail and post-print photo. "
        "Their links expire, so each print notification asks the print's source for fresh "
        "ones: one more request of the account's budget (Formlabs), cached for a minute. "
        'Ignored by kind = "webhook" and "apprise".',
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == "mqtt":
            raise ValueError(
                "'mqtt' is reserved for the MQTT sink; rules publish to MQTT with "
                "mqtt = { topic = ... }, so give this receiver another name"
            )
        return value

    @model_validator(mode="after")
    def _url_present(self) -> ReceiverConfig:
        if self.url is None and self.url_file is None:
            raise ValueError(f"receiver {self.name!r} needs url or url_file")
        return self


class DigestConfig(Section):
    """A periodic summary sent to one receiver (``[[digest]]``; see README "Daily digest")."""

    name: str = Field(
        description="Unique digest name; in the message's CloudEvent source and subject.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    )
    receiver: str = Field(description="The [[receiver]] (by name) the digest is sent to.")
    schedule: str = Field(
        description="When it is sent, e.g. 'Mon-Fri 07:30 Europe/Berlin' or '07:30' (daily, "
        "in [rules] timezone). Each message covers the time since the previous scheduled one."
    )
    match: dict[str, str | tuple[str, ...]] = Field(
        default_factory=dict,
        description="Only printers whose fields match these globs (printer fields only: "
        "source, vendor, serial, subject, name, group, model); empty: the whole fleet.",
    )
    title: str | None = Field(
        None, max_length=200, description="Message title (default 'Digest <name>')."
    )

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        try:
            DigestSchedule.parse(value)
        except ValueError as err:
            raise InvalidValue(str(err), "write e.g. 'Mon-Fri 07:30 Europe/Berlin'") from None
        return value

    @field_validator("match")
    @classmethod
    def _known_fields(
        cls, value: dict[str, str | tuple[str, ...]]
    ) -> dict[str, str | tuple[str, ...]]:
        unknown = sorted(set(value) - set(DIGEST_MATCH_FIELDS))
        if unknown:
            raise InvalidValue(
                f"unknown match field {unknown[0]!r}",
                f"{did_you_mean_hint(unknown[0])}use {', '.join(DIGEST_MATCH_FIELDS)}",
            )
        return value

    def globs(self) -> dict[str, tuple[str, ...]]:
        """``match`` with every value as a tuple of globs."""
        return {k: (v,) if isinstance(v, str) else tuple(v) for k, v in self.match.items()}


def did_you_mean_hint(word: str) -> str:
    close = did_you_mean(word, DIGEST_MATCH_FIELDS)
    return f"did you mean {close!r}? " if close else ""


class LimitsConfig(Section):
    """Caps on everything read from outside, so no vendor, receiver or file can exhaust us."""

    response_max_size: Size = Field(
        256 * 1024**2,
        ge=1,
        description="Largest vendor response body read; it is streamed and the request fails "
        "as bad_response past this. 10,000 printers are about 50 MB of /printers/ JSON; the "
        "default leaves 5x headroom.",
    )
    json_max_depth: int = Field(
        64,
        ge=2,
        le=10_000,
        description="Deepest nesting accepted in a vendor JSON document (the documented "
        "records nest about 6 deep). A deeper record is skipped; a deeper token response or "
        "page fails the request as bad_response.",
    )
    reply_max_size: Size = Field(
        64 * 1024,
        ge=0,
        description="Most read from a webhook receiver's reply (an excerpt of it is kept for "
        "the dead-letter table); the rest is never read.",
    )
    secret_file_max_size: Size = Field(
        64 * 1024,
        ge=1,
        description="Secret files larger than this are refused (a Carbon secrets.json is about "
        "2 KB).",
    )
    vendor_clock_skew: Duration = Field(
        timedelta(days=1),
        description="A vendor Date header further than this from our clock is not trusted: "
        "logged once (source.clock_untrusted) and printers' staleness is judged on our clock.",
    )
    formlabs_host_requests_per_second: float = Field(
        90.0,
        ge=0,
        le=100_000,
        description="Requests per second all Formlabs sources of one API host send together "
        "(the vendor allows 100/s per IP; default 90%). Token requests count. 0 = no shared "
        "limit (each source keeps its own requests_per_second).",
    )
    carbon_host_requests_per_second: float = Field(
        0.0,
        ge=0,
        le=100_000,
        description="Requests per second all Carbon sources of one API host send together. "
        "0 (default) = no shared limit: Carbon documents only its per-user limit.",
    )


class RulesConfig(Section):
    packs: tuple[str, ...] = Field(
        ("/etc/printfleet/rules/*.toml",),
        description="Rule pack files or globs, loaded in order.",
    )
    timezone: str = Field(
        "UTC", description="Default time zone of silence schedules (IANA name, e.g. Europe/Berlin)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return check_timezone(value)


class Settings(Section):
    """The whole configuration file."""

    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    source: tuple[SourceConfig, ...] = Field(
        (), description="Vendor accounts to watch ([[source]] tables)."
    )
    poll: PollConfig = Field(default_factory=PollConfig)
    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    receiver: tuple[ReceiverConfig, ...] = Field(
        (), description="Notification targets ([[receiver]] tables)."
    )
    rules: RulesConfig = Field(default_factory=RulesConfig)
    digest: tuple[DigestConfig, ...] = Field(
        (), description="Periodic summaries ([[digest]] tables)."
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @model_validator(mode="after")
    def _names_unique(self) -> Settings:
        for kind, names in (
            ("source", [s.name for s in self.source]),
            ("receiver", [r.name for r in self.receiver]),
            ("digest", [d.name for d in self.digest]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dupes)}")
        return self


# ------------------------------------------------------------------------- where a key is declared


def field_at(loc: Loc) -> tuple[type[BaseModel] | None, str | None]:
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
            inner = model_of(model, name)
            if inner is None:
                return model, name
            model = inner
        name = part
    if name is None:
        return None, None
    if isinstance(loc[-1], int):
        entry = model_of(model, name)
        if entry is not None:
            return entry, None
    return model, name


def model_of(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    info = model.model_fields.get(name)
    if info is None:
        return None
    annotation = unwrap(info.annotation)
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        annotation = args[0] if args else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def array_sections() -> frozenset[str]:
    return frozenset(
        name
        for name, info in Settings.model_fields.items()
        if typing.get_origin(unwrap(info.annotation)) is tuple
    )


def leaf_annotation(loc: Loc) -> Any:
    """The declared type of the key at ``loc`` (None when unknown)."""
    container, name = field_at(loc)
    if container is None or name is None or name not in container.model_fields:
        return None
    annotation = unwrap(container.model_fields[name].annotation)
    if loc[-1] != name and typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]  # a value inside a mapping, e.g. headers
    return annotation
