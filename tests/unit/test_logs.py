"""Logging: JSON or console output, stdlib routed through structlog, and secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from printfleet.logs import (
    MAX_TEMPORARY_SECRETS,
    configure_logging,
    forget_secrets,
    redact,
    register_secret,
)

REGISTERED = "cfg-8c1f0e2d7a"
TOKEN = "tok_5f4dcc3b5aa765d61d8327deb882cf99"
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJpc3MiOiJjbGllbnQtMTIzIiwiZXhwIjoxNzAwMDAwMDAwfQ."
    "c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "-----END RSA PRIVATE KEY-----"
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test leaves the stdlib root logger and the secret registry as it found them."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    forget_secrets()
    yield
    forget_secrets()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore", "aiomqtt"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.fixture
def json_lines() -> Callable[[], list[dict[str, Any]]]:
    """Configures JSON logging into a buffer; calling the fixture returns the lines so far."""
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    return lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("value", "hidden", "expected"),
    [
        (f"token is {REGISTERED}.", REGISTERED, "token is ***."),
        (f"Authorization: Bearer {TOKEN}", TOKEN, "Authorization: Bearer ***"),
        (f"{{'authorization': 'bearer {TOKEN}'}}", TOKEN, "{'authorization': 'bearer ***'}"),
        (f"key {PEM} end", "MIIEowIBAAKCAQEA", "key *** end"),
        (f"jwt={JWT};", "eyJpc3Mi", "jwt=***;"),
        (
            "POST https://hooks.slack.com/services/T0001/B0002/abcDEF123 failed",
            "abcDEF123",
            "POST https://hooks.slack.com/*** failed",
        ),
        (
            "https://discord.com/api/webhooks/1234/secret-token-xyz",
            "secret-token-xyz",
            "https://discord.com/api/webhooks/***",
        ),
        (
            "https://contoso.webhook.office.com/webhookb2/aaa@bbb/IncomingWebhook/ccc/ddd",
            "IncomingWebhook/ccc",
            "https://contoso.webhook.office.com/***",
        ),
    ],
)
def test_redact(value: str, hidden: str, expected: str) -> None:
    """Registered secrets, bearer tokens, PEM keys, JWTs and chat webhook paths become ***."""
    register_secret(REGISTERED)
    assert redact(value) == expected
    assert hidden not in redact(value)


def test_redact_returns_the_same_string_when_clean() -> None:
    """With nothing to redact, redact() hands back its argument (no copy)."""
    register_secret(TOKEN)
    text = "poll.done source=lab printers=12 seconds=0.123 url=https://api.formlabs.com/x"
    assert redact(text) is text


def test_short_secrets_are_not_registered() -> None:
    """A 'secret' of a few characters is ignored rather than garbling every line."""
    register_secret("abc")
    assert redact("abc abcabc") == "abc abcabc"


def test_url_encoded_form_of_a_secret_is_redacted() -> None:
    """A registered secret is also redacted in its percent-encoded form."""
    register_secret("p@ss w/rd+123")
    assert redact("https://x/?pw=p%40ss%20w%2Frd%2B123") == "https://x/?pw=***"


def test_temporary_secrets_are_bounded_but_permanent_ones_kept() -> None:
    """Only the newest minted tokens are remembered; config secrets never drop out."""
    register_secret("config-secret-1", permanent=True)
    register_secret("first-token-000")
    for n in range(MAX_TEMPORARY_SECRETS * 3):
        register_secret(f"later-token-{n:04d}")
    assert redact("config-secret-1 first-token-000") == "*** first-token-000"


def test_registered_secret_redacted_in_json_output(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """A registered secret passed as a value never reaches the rendered JSON line."""
    register_secret(TOKEN)
    structlog.get_logger("t").info("auth.token_minted", token=TOKEN, note=f"got {TOKEN}")
    [line] = json_lines()
    assert line["token"] == "***"
    assert line["note"] == "got ***"


def test_nested_values_are_redacted(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """Secrets inside dicts and lists inside the event are redacted."""
    structlog.get_logger("t").info(
        "request", headers={"Authorization": f"Bearer {TOKEN}", "h": [{"k": JWT}, 3]}
    )
    [line] = json_lines()
    assert line["headers"] == {"Authorization": "Bearer ***", "h": [{"k": "***"}, 3]}


def test_exception_text_is_redacted(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """A secret in an exception's message is redacted from the logged traceback."""
    register_secret(TOKEN)
    try:
        raise RuntimeError(f"server said: bad token {TOKEN}")
    except RuntimeError:
        structlog.get_logger("t").exception("poll.failed")
    [line] = json_lines()
    assert "RuntimeError: server said: bad token ***" in line["exception"]
    assert TOKEN not in json.dumps(line)


def test_exception_object_value_is_redacted(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """An exception passed as a value is rendered without the secret in its text."""
    structlog.get_logger("t").warning("delivery.failed", error=ValueError(f"Bearer {TOKEN}"))
    [line] = json_lines()
    assert line["error"] == "ValueError('Bearer ***')"


def test_stdlib_logging_goes_through_the_same_pipeline(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """Records of stdlib loggers come out as JSON, redacted, with their logger name."""
    register_secret(TOKEN)
    logging.getLogger("aiomqtt.client").warning("connect failed for %s", TOKEN)
    [line] = json_lines()
    assert (line["event"], line["logger"], line["level"]) == (
        "connect failed for ***",
        "aiomqtt.client",
        "warning",
    )


def test_json_lines_have_iso_utc_timestamps(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """When the stream is not a terminal every line is JSON with an ISO 8601 UTC timestamp."""
    structlog.get_logger("t").info("daemon.started", sources=2)
    [line] = json_lines()
    assert line["event"] == "daemon.started"
    assert line["timestamp"].endswith("Z")


def test_console_format_on_a_terminal() -> None:
    """On a terminal, lines are human-readable text, not JSON, and still redacted."""
    stream = _Tty()
    register_secret(TOKEN)
    configure_logging("info", "auto", stream=stream)
    structlog.get_logger("t").info("daemon.started", token=TOKEN)
    text = stream.getvalue()
    assert not text.startswith("{")
    assert "daemon.started" in text
    assert TOKEN not in text


def test_level_filters_structlog_and_stdlib(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """Lines below the configured level are dropped, from structlog and stdlib alike."""
    structlog.get_logger("t").debug("hidden")
    logging.getLogger("other").debug("hidden too")
    assert json_lines() == []


def test_httpx_info_is_silenced(json_lines: Callable[[], list[dict[str, Any]]]) -> None:
    """httpx logs request URLs at INFO; those lines are not written."""
    logging.getLogger("httpx").info("HTTP Request: GET https://api.formlabs.com/x")
    logging.getLogger("httpx").warning("pool exhausted")
    assert [line["event"] for line in json_lines()] == ["pool exhausted"]


def test_reconfiguring_replaces_the_handler() -> None:
    """Calling configure_logging twice writes each line once, to the newest stream."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", stream=first)
    configure_logging("info", "json", stream=second)
    structlog.get_logger("t").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


@pytest.mark.parametrize(("level", "fmt"), [("loud", "json"), ("info", "xml")])
def test_bad_level_or_format_is_rejected(level: str, fmt: str) -> None:
    """An unknown level or format raises ValueError naming the accepted values."""
    with pytest.raises(ValueError, match="use"):
        configure_logging(level, fmt, stream=io.StringIO())


def test_a_huge_vendor_value_is_cut_so_the_line_stays_one_journald_line(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """A 70,000-character serial is logged as its first 2,000 characters and its length."""
    structlog.get_logger("t").info("printer.seen", serial="S" * 70_000)
    (line,) = json_lines()
    assert line["serial"] == "S" * 2000 + "… (70000 characters)"
