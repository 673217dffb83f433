"""``printfleet receiver test NAME``: the real command line against a real local receiver."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from tests.ecosystem import cloudevent_problems, discord_problems, slack_problems, teams_problems
from tests.receiver import Receiver, Reply

from printfleet import cli
from printfleet.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK
from printfleet.logs import forget_secrets

SIGNING_SECRET = "whsec-receiver-test-key"
URL_TOKEN = "tk_ReceiverTestToken987"


@pytest.fixture(autouse=True)
def _isolated() -> Iterator[None]:
    """Secrets and logging as they were (the CLI configures both)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    forget_secrets()
    yield
    forget_secrets()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver(secret=SIGNING_SECRET.encode()) as r:
        yield r


@pytest.fixture
async def plain() -> AsyncIterator[Receiver]:
    """A receiver that checks no signature (chat and push formats are not signed)."""
    async with Receiver() as r:
        yield r


@pytest.fixture
def config(tmp_path: Path, receiver: Receiver, plain: Receiver) -> Path:
    """One receiver of every kind; the Apprise URLs in url_file, as the README advises."""
    (tmp_path / "push.url").write_text(f"json://127.0.0.1:{plain.port}/push/{URL_TOKEN}\n")
    (tmp_path / "ntfy.url").write_text(f"ntfy://127.0.0.1:{plain.port}/{URL_TOKEN}\n")
    (tmp_path / "hook.secret").write_text(SIGNING_SECRET)
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[[receiver]]
name = "hook"
kind = "webhook"
url = "{receiver.url}/events"
secret_file = "hook.secret"

[[receiver]]
name = "ops-slack"
kind = "slack"
url = "{plain.url}/slack"

[[receiver]]
name = "ops-teams"
kind = "teams"
url = "{plain.url}/teams"

[[receiver]]
name = "ops-discord"
kind = "discord"
url = "{plain.url}/discord"

[[receiver]]
name = "push"
kind = "apprise"
url_file = "push.url"

[[receiver]]
name = "phone"
kind = "apprise"
url_file = "ntfy.url"
timeout = "3s"
"""
    )
    return path


async def run(*argv: str) -> int:
    """The CLI in a thread: it runs its own event loop, the receivers run in this one."""
    return await asyncio.to_thread(cli.main, list(argv))


async def test_webhook_test_is_signed_and_prints_status_and_reply(
    config: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.script(Reply(202, body=b'{"queued":true}'))
    code = await run("receiver", "test", "hook", "-c", str(config))
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    [request] = receiver.requests
    assert request.signature_ok is True
    assert request.path == "/events"
    assert cloudevent_problems(request.body) == []
    event = json.loads(request.body)
    assert event["type"] == "printer.alert"
    assert event["subject"] == "printfleet-test"
    assert event["data"]["test"] is True
    assert request.headers["x-printfleet-event-id"] == event["id"]
    assert "sent: test notification to hook (webhook, severity info)" in out
    assert "status: HTTP 202" in out
    assert 'response: {"queued":true}' in out


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("ops-slack", slack_problems),
        ("ops-teams", teams_problems),
        ("ops-discord", discord_problems),
    ],
)
async def test_every_chat_format_renders_the_test(
    config: Path,
    plain: Receiver,
    capsys: pytest.CaptureFixture[str],
    name: str,
    check: Callable[[dict[str, object]], list[str]],
) -> None:
    code = await run("receiver", "test", name, "-c", str(config))
    assert code == EXIT_OK, capsys.readouterr().out
    [request] = plain.requests
    message = json.loads(request.body)
    assert check(message) == []
    assert "printfleet test notification" in request.body.decode()
    assert "This is a test from printfleet" in request.body.decode()


async def test_apprise_test_goes_through_the_service_url(
    config: Path, plain: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run("receiver", "test", "push", "-c", str(config))
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    [request] = plain.requests
    assert request.path == f"/push/{URL_TOKEN}"
    body = json.loads(request.body)
    assert body["title"] == "printfleet test notification"
    assert body["message"].startswith("This is a test from printfleet")
    assert body["type"] == "info"
    assert "sent: test notification to push (apprise, severity info)" in out
    assert "response: JSON: Sent JSON POST notification." in out
    assert URL_TOKEN not in out


async def test_apprise_test_at_critical_uses_the_services_urgent_priority(
    config: Path, plain: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run("receiver", "test", "phone", "--severity", "critical", "-c", str(config))
    assert code == EXIT_OK, capsys.readouterr().out
    [request] = plain.requests
    assert request.headers["x-priority"] == "max"


async def test_a_failing_receiver_exits_1_with_the_reason(
    config: Path, receiver: Receiver, plain: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    receiver.script(Reply(500, body=b"database down"))
    code = await run("receiver", "test", "hook", "-c", str(config))
    out = capsys.readouterr().out
    assert code == EXIT_ERROR
    assert "FAILED: test notification to hook" in out
    assert "status: HTTP 500" in out
    assert "response: database down" in out
    assert len(receiver.requests) == 1  # sent once, not retried

    plain.script(Reply(400, body=f"unknown topic {URL_TOKEN}".encode()))
    code = await run("receiver", "test", "push", "-c", str(config))
    captured = capsys.readouterr()
    assert code == EXIT_ERROR
    assert "HTTP 400 from JSON" in captured.out
    assert "the receiver refused it" in captured.out
    assert URL_TOKEN not in captured.out + captured.err


async def test_an_unreachable_receiver_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Receiver() as gone:
        url = gone.url
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path}"\n\n'
        f'[[receiver]]\nname = "hook"\nkind = "webhook"\nurl = "{url}/x"\n'
    )
    code = await run("receiver", "test", "hook", "-c", str(path))
    out = capsys.readouterr().out
    assert code == EXIT_ERROR
    assert "network error" in out
    assert "trying again may help" in out


async def test_an_unknown_name_is_a_config_error_with_did_you_mean(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await run("receiver", "test", "ops-slak", "-c", str(config))
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert f"{config}: receiver: no receiver named 'ops-slak'" in err
    assert "did you mean 'ops-slack'?" in err


async def test_the_test_touches_no_state(
    config: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sent directly: no state database is created or needed (a running daemon holds it)."""
    assert await run("receiver", "test", "hook", "-c", str(config)) == EXIT_OK
    assert not (config.parent / "state").exists()
