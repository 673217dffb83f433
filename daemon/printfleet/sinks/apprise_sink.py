"""Push receivers through Apprise: one ``[[receiver]] kind = "apprise"`` per service URL.

Apprise (https://github.com/caronc/apprise) speaks 100+ services (Telegram, ntfy, Pushover,
Gotify, e-mail, Matrix, Signal, ...) from a single URL, so printfleet needs no code per
service. The URL holds the service's tokens: it is a ``SecretStr`` and never appears in an
error, a log line, a repr or the dead-letter table.

Severity becomes the service's own urgency twice over:

- Apprise's ``NotifyType`` (``info``, ``warning``, ``failure``; ``success`` once resolved),
  which sets the colour or icon where the service has one;
- the service's priority parameter, for the services in :data:`PRIORITIES`, unless the user
  already set that parameter in the URL (their choice wins for every severity). Critical is
  the level each service lets through Do Not Disturb / quiet hours.

Apprise is synchronous (``requests``): each notification runs in a thread under Apprise's own
call deadline (``timeout``) and an outer asyncio deadline a little later, so neither a slow
service nor a stuck thread holds the outbox. The threads are the sink's own small pool (as
``asyncio.to_thread`` but not the loop's default executor): during an outage every attempt
holds a thread for up to ``timeout``, and the default executor also resolves host names for
the vendor polls and the webhooks, which must not wait behind a dead push service. A
fresh Apprise object is built per notification: its plugins keep throttle state (ntfy waits
5.5 s between two sends of one instance), which would make concurrent deliveries time out.

Outcomes, as :class:`~printfleet.errors.DeliveryFailed` for the outbox:

=====================================================  ======================================
Apprise said                                           raised
=====================================================  ======================================
success                                                nothing (delivered)
timeout (Apprise's deadline or ours)                   retryable
failure with an HTTP 4xx in its log (not 408/429)      not retryable (the service refused)
any other failure (5xx, network, unknown)              retryable
=====================================================  ======================================

Apprise reports the reason only through its log. Each call captures its own log entries
(``notify(log_level=...)``); the warning lines become the error message and the service's
reply (Apprise's "Response Details" debug line) the dead-letter ``response``, both with every
part of the URL (user, password, host, path segments, query values) redacted. The ``apprise``
logger itself is cut off from the application's handlers, since its debug lines print
request URLs and payloads with tokens.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, unquote, urlsplit

import apprise
from pydantic import SecretStr

from printfleet.core.delivery import Delivery
from printfleet.errors import DeliveryFailed
from printfleet.lifecycle import Lifecycle
from printfleet.sinks import formats

KIND: Final = "apprise"
RESPONSE_EXCERPT: Final = 500
#: Longest reason kept from Apprise's log (the dead-letter ``last_error``).
REASON_MAX: Final = 300
#: Longest title and body handed to Apprise; services cut further to their own limits.
TITLE_MAX: Final = 250
BODY_MAX: Final = 4000
#: Threads per sink: the outbox's default concurrency (4 deliveries in flight at once).
THREADS: Final = 4
#: How much later than Apprise's own deadline we stop waiting for its thread.
GRACE_S: Final = 2.0
#: URL parts shorter than this are not redacted on their own: replacing every "json" or
#: "443" would garble reasons while protecting nothing (no token is that short).
_MIN_SECRET_PART: Final = 4

TONES: Final = ("info", "warning", "critical", "resolved")

NOTIFY_TYPES: Final[Mapping[str, apprise.NotifyType]] = {
    "info": apprise.NotifyType.INFO,
    "warning": apprise.NotifyType.WARNING,
    "critical": apprise.NotifyType.FAILURE,
    "resolved": apprise.NotifyType.SUCCESS,
}

#: Per URL schema: the Apprise URL parameter for priority and its value per tone. Critical is
#: the level that passes Do Not Disturb: ntfy ``max`` (= ntfy's "urgent", 5), Pushover
#: ``high`` (1; ``emergency`` needs acknowledging and repeats, which a printer alert should not
#: force), Gotify ``high`` (8, the Android app's high-priority channel), Prowl ``emergency``
#: (Prowl's quiet hours let only it through), Bark ``critical`` (an iOS critical alert).
PRIORITIES: Final[Mapping[str, tuple[str, Mapping[str, str]]]] = {
    schema: (param, levels)
    for schemas, param, levels in (
        (
            ("ntfy", "ntfys"),
            "priority",
            {"info": "default", "warning": "high", "critical": "max", "resolved": "default"},
        ),
        (
            ("pover",),
            "priority",
            {"info": "normal", "warning": "normal", "critical": "high", "resolved": "normal"},
        ),
        (
            ("gotify", "gotifys"),
            "priority",
            {"info": "normal", "warning": "normal", "critical": "high", "resolved": "normal"},
        ),
        (
            ("prowl",),
            "priority",
            {"info": "normal", "warning": "normal", "critical": "emergency", "resolved": "normal"},
        ),
        (
            ("bark", "barks"),
            "level",
            {
                "info": "active",
                "warning": "timeSensitive",
                "critical": "critical",
                "resolved": "active",
            },
        ),
    )
    for schema in schemas
}

# "error=500" (most plugins), "error=40301" (ntfy passes on its own code: the HTTP status and
# two digits), "HTTP 500", "status code: 500".
_HTTP_STATUS = re.compile(
    r"(?:error=|HTTP[ /]?(?:error )?|status(?: code)?[ =:]+)(\d{3})\d{0,2}\b", re.I
)
_RESPONSE_DETAILS = "Response Details:"
# Statuses that say "try again later" even though they are 4xx.
_RETRYABLE_4XX: Final = frozenset({408, 425, 429})

_apprise_log = logging.getLogger("apprise")


def _silence_apprise_logger() -> None:
    """Keep Apprise's own log out of the application's handlers (its debug lines carry URLs
    and payloads with tokens). Per-call capture still sees every entry: it hooks the
    ``apprise`` logger itself, whose level must let debug through (the service's reply is a
    debug line) — harmless, as nothing but the capture listens."""
    _apprise_log.propagate = False
    _apprise_log.setLevel(logging.DEBUG)
    if not any(isinstance(h, logging.NullHandler) for h in _apprise_log.handlers):
        _apprise_log.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Message:
    """What one push notification says: plain text, and how urgent it is."""

    title: str
    body: str
    tone: str
    """``info``, ``warning``, ``critical``, or ``resolved``."""


def message_for(payload: Mapping[str, Any]) -> Message:
    """The plain-text title and body of a delivery payload (via :func:`formats.notice`).

    Raises:
        ValueError: the payload has no ``event``.
    """
    n = formats.notice(payload)
    lines: list[str] = [n.text] if n.text else []
    if n.subjects:
        lines += [f"• {s}" for s in n.subjects[:30]]
        if n.group_count > min(len(n.subjects), 30):
            lines.append(f"… and {n.group_count - min(len(n.subjects), 30)} more")
    facts = [
        f"{label}: {value}"
        for label, value in (
            ("Printer", n.printer),
            ("Print", n.print_name),
            ("Source", n.source),
        )
        if value
    ]
    facts.append(f"Event: {n.event_type}")
    if lines:
        lines.append("")
    lines.append(" · ".join(facts))
    return Message(
        title=formats.truncate(n.heading, TITLE_MAX),
        body=formats.truncate("\n".join(lines), BODY_MAX),
        tone=n.tone,
    )


@dataclass(frozen=True, slots=True)
class SendReport:
    """A notification Apprise accepted: which service, and what Apprise said (redacted)."""

    service: str
    detail: str


def _parsed(url: str) -> dict[str, Any] | None:
    """Apprise's own parse of ``url`` (its ``url_to_dict``), or None if it knows no such URL."""
    return apprise.plugins.url_to_dict(url, secure_logging=True)  # type: ignore[no-untyped-call,no-any-return]


def with_priority(parsed: Mapping[str, Any], tone: str) -> dict[str, Any]:
    """``parsed`` (a :func:`_parsed` URL) with the service's priority for ``tone`` set, unless
    the URL sets that parameter itself or the service has none in :data:`PRIORITIES`."""
    result = dict(parsed)
    schema = str(parsed.get("schema", "")).lower()
    mapping = PRIORITIES.get(schema)
    if mapping is None:
        return result
    param, levels = mapping
    query = {str(k).lower() for k in parsed.get("qsd", {})}
    if param not in query:
        result[param] = levels[tone]
    return result


def secret_parts(url: str) -> list[str]:
    """Every part of ``url`` that may be a token, in the forms it can take in a log line."""
    parts = {url, url.split("?", 1)[0]}
    try:
        split = urlsplit(url)
        pieces = [split.username, split.password, split.hostname, split.query]
        pieces += split.path.split("/")
        pieces += [v for pair in split.query.split("&") for v in pair.split("=", 1)[1:]]
        pieces.append(split.netloc)
    except ValueError:  # an invalid port or IPv6 literal: redact the raw pieces instead
        pieces = re.split(r"[/:@?&=]", url)
    for piece in pieces:
        if piece:
            parts |= {piece, unquote(piece), quote(unquote(piece), safe="")}
    return sorted((p for p in parts if len(p) >= _MIN_SECRET_PART), key=len, reverse=True)


class AppriseSink:
    """Sends deliveries as push notifications to one Apprise service URL.

    Build it with :meth:`check_url` first (the factory does) so a URL Apprise cannot use is a
    config error at start-up, not a dead letter later.
    """

    def __init__(
        self,
        name: str,
        url: SecretStr,
        *,
        timeout: float = 10.0,
        version: str,
    ) -> None:
        _silence_apprise_logger()  # before Apprise parses the URL: it logs what it rejects
        self._name = name
        self._url = url
        self._timeout = timeout
        self._parsed = _parsed(url.get_secret_value())
        self._secrets = secret_parts(url.get_secret_value())
        # User-Agent and the app name some services show ("printfleet"); memory storage, so
        # Apprise writes no cache files of its own.
        self._asset = apprise.AppriseAsset(
            app_id="printfleet",
            app_desc=f"printfleet {version}",
            app_url="https://github.com/printfleet/printfleet",
            storage_mode="memory",
        )
        self._life = Lifecycle(f"apprise sink {name!r}")
        self._executor: ThreadPoolExecutor | None = None

    @staticmethod
    def check_url(url: SecretStr) -> str | None:
        """Why Apprise cannot use ``url`` (a sentence without the URL), or None if it can."""
        text = url.get_secret_value().strip()
        schema, sep, _ = text.partition("://")
        if not sep or not schema:
            return "not an Apprise URL (expected service://..., e.g. ntfy://ntfy.sh/topic)"
        _silence_apprise_logger()
        parsed = _parsed(text)
        if parsed is None:
            if schema.lower() in apprise.plugins.N_MGR:
                return f"Apprise cannot parse this {schema}:// URL (check its parts)"
            return f"Apprise knows no service {_safe_schema(schema)}://"
        if apprise.Apprise.instantiate(parsed) is None:
            return (
                f"Apprise rejected this {_safe_schema(schema)}:// URL "
                "(a part is missing or invalid)"
            )
        return None

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return KIND

    def __repr__(self) -> str:
        return f"AppriseSink(name={self._name!r})"

    async def __aenter__(self) -> Self:
        self._life.open()
        self._executor = ThreadPoolExecutor(
            max_workers=THREADS, thread_name_prefix=f"apprise-{self._name}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._life.close()
        if self._executor is not None:
            # Threads still inside Apprise end at its deadline; nobody waits for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def deliver(
        self,
        delivery: Delivery,
        *,
        on_reply: Callable[[int | None, str], None] | None = None,
    ) -> None:
        """Send ``delivery`` once; see the module docstring for how outcomes translate.

        ``on_reply`` (``printfleet receiver test``) is told what Apprise said on success.

        Raises:
            DeliveryFailed: the service did not accept it.
            RuntimeError: the sink is not open.
        """
        try:
            message = message_for(delivery.payload)
        except (ValueError, TypeError) as err:
            raise DeliveryFailed(
                self._name, f"payload cannot be rendered: {err}", retryable=False
            ) from err
        report = await self.send(message.title, message.body, message.tone)
        if on_reply is not None:
            on_reply(None, f"{report.service}: {report.detail}")

    async def send(self, title: str, body: str, severity: str) -> SendReport:
        """Send one notification of ``severity`` (``info``, ``warning``, ``critical`` or
        ``resolved``): the hook for anything that is not a delivery payload (digests).

        Raises:
            DeliveryFailed: the service did not accept it.
            RuntimeError: the sink is not open.
        """
        self._life.check_open()
        tone = severity if severity in NOTIFY_TYPES else "info"
        if self._parsed is None:
            raise DeliveryFailed(
                self._name,
                "Apprise cannot parse the receiver URL; check url/url_file",
                retryable=False,
            )
        try:
            async with asyncio.timeout(self._timeout + GRACE_S):
                loop = asyncio.get_running_loop()
                work = functools.partial(self._notify, title, body, tone)
                return await loop.run_in_executor(self._executor, work)
        except TimeoutError:
            raise DeliveryFailed(
                self._name,
                f"timed out (no answer within the {self._timeout:g} s deadline)",
                retryable=True,
            ) from None

    # -- in the worker thread ----------------------------------------------------------------

    def _notify(self, title: str, body: str, tone: str) -> SendReport:
        """One Apprise call (blocking); the outcome translated as the module docstring says."""
        assert self._parsed is not None
        plugin = apprise.Apprise.instantiate(with_priority(self._parsed, tone), asset=self._asset)
        if plugin is None:
            raise DeliveryFailed(
                self._name,
                "Apprise rejected the receiver URL; check url/url_file",
                retryable=False,
            )
        service = _safe_schema(str(getattr(plugin, "service_name", "") or "service"))
        notifier = apprise.Apprise(asset=self._asset)
        notifier.add(plugin)
        try:
            result = notifier.notify(
                body=body,
                title=title,
                notify_type=NOTIFY_TYPES[tone],
                body_format=apprise.NotifyFormat.TEXT,
                timeout=self._timeout,
                log_level=logging.DEBUG,
            )
        except Exception as err:  # Apprise catches its plugins' errors; this is a safety net
            # `from None`: an exception text may quote the URL.
            raise DeliveryFailed(
                self._name, f"{service}: Apprise failed ({type(err).__name__})", retryable=True
            ) from None
        logs = [(entry.level, str(entry.message)) for entry in result.logs()]
        status = result.status
        if status == apprise.AppriseResultStatus.SUCCESS:
            sent = [m for level, m in logs if level == "INFO" and m.startswith("Sent")]
            return SendReport(service, self._redact(sent[-1] if sent else "accepted"))
        if status == apprise.AppriseResultStatus.TIMEOUT:
            raise DeliveryFailed(
                self._name,
                f"{service}: timed out (no answer within the {self._timeout:g} s deadline)",
                retryable=True,
            )
        raise self._failure(service, logs)

    def _failure(self, service: str, logs: Iterable[tuple[str, str]]) -> DeliveryFailed:
        problems: list[str] = []
        response: str | None = None
        for level, message in logs:
            if message.startswith(_RESPONSE_DETAILS):
                response = message[len(_RESPONSE_DETAILS) :].strip()
            elif level in ("WARNING", "ERROR", "CRITICAL"):
                problems.append(message.strip())
        reason = self._redact(" ".join(problems)) or "the service did not accept it"
        found = _HTTP_STATUS.search(reason)
        status = int(found.group(1)) if found else None
        retryable = status is None or not 400 <= status < 500 or status in _RETRYABLE_4XX
        if response is not None:
            response = self._redact(_unrepr(response))[:RESPONSE_EXCERPT]
        note = "" if retryable else " (not retried: the service rejected the request)"
        where = service if status is None else f"HTTP {status} from {service}"
        return DeliveryFailed(
            self._name,
            f"{where}: {formats.truncate(reason, REASON_MAX)}{note}",
            retryable=retryable,
            status=status,
            response=response,
        )

    def _redact(self, text: str) -> str:
        """``text`` with every part of the URL replaced (see :func:`secret_parts`)."""
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text


def _unrepr(text: str) -> str:
    """Apprise logs the reply as a bytes repr (``b'...'``): its text, escapes kept as they are."""
    if len(text) >= 3 and text[0] == "b" and text[1] in "'\"" and text[-1] == text[1]:
        return text[2:-1]
    return text


def _safe_schema(schema: str) -> str:
    """A schema or service name fit for a message: short, letters/digits/.+- only."""
    return re.sub(r"[^A-Za-z0-9.+\- ]", "", schema)[:32] or "?"
