"""Secrets never leak from the sources, and the factory reads secret files safely."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from printfleet.config import SourceConfig
from printfleet.errors import AuthFailed, ConfigError, PrintfleetError
from printfleet.logs import redact
from printfleet.sources.carbon import CarbonSource
from printfleet.sources.factory import make_source
from printfleet.sources.formlabs import FormlabsSource
from printfleet.testing import FakeClock

FORMLABS_SECRET = "fl-SECRET-value-9f8e7d6c5b4a"
BASE = "https://api.formlabs.test"


@pytest.fixture(scope="module")
def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def pem_body(pem: str) -> str:
    """A distinctive slice of the key material (what a leak would show)."""
    return pem.splitlines()[5]


class FormlabsScript:
    """Token endpoint: wrong secret first (400), then tokens; data: one 401, then 200."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.data_calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/o/token/"):
            if parse_qs(request.content.decode())["client_secret"] != [FORMLABS_SECRET]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            token = f"tok-{len(self.tokens)}-ABCDEFGHIJKLMNOP"
            self.tokens.append(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": 86400})
        self.data_calls += 1
        if self.data_calls == 1:
            return httpx.Response(401, json={"detail": "expired"})
        if request.url.path.endswith("/printers/"):
            return httpx.Response(200, json=[])
        return httpx.Response(200, json={"count": 0, "next": None, "results": []})


def formlabs(script: FormlabsScript, clock: FakeClock, secret: str) -> FormlabsSource:
    config = SourceConfig(
        name="lab",
        vendor="formlabs",
        base_url=BASE,
        client_id="public-client-id",
        client_secret=SecretStr(secret),
    )
    source = make_source(
        config,
        client=httpx.AsyncClient(transport=httpx.MockTransport(script)),
        clock=clock,
        offline_after=timedelta(minutes=5),
    )
    assert isinstance(source, FormlabsSource)
    return source


def exception_texts(error: BaseException) -> str:
    """str and repr of an exception and of its whole cause/context chain."""
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


async def test_formlabs_fetch_with_failed_auth_and_renewal_leaks_no_secret() -> None:
    """A failed auth, a 401 renewal and full fetches log neither the secret nor any token."""
    clock = FakeClock(datetime(2025, 6, 18, tzinfo=UTC))
    script = FormlabsScript()
    errors: list[PrintfleetError] = []
    with structlog.testing.capture_logs() as logs:
        wrong = formlabs(script, clock, "not-the-" + FORMLABS_SECRET)
        with pytest.raises(AuthFailed) as caught:
            await wrong.fetch_printers()
        errors.append(caught.value)
        source = formlabs(script, clock, FORMLABS_SECRET)
        await source.fetch_printers()
        await source.fetch_runs(since=clock.now())
        await source.fetch_inventory()
        reprs = [repr(source), repr(wrong), str(source)]
    assert len(script.tokens) == 2  # the 401 caused one renewal
    text = json.dumps(logs, default=str) + "\n".join(reprs)
    text += "\n".join(exception_texts(e) for e in errors)
    for secret in [FORMLABS_SECRET, *script.tokens]:
        assert secret not in text
    assert any(entry["event"] == "source.auth_rejected" for entry in logs)


async def test_carbon_fetch_with_rejected_jwt_leaks_no_key_or_token(
    pem: str, tmp_path: Path
) -> None:
    """A 401 re-mint and an AuthFailed show neither the PEM key nor any JWT."""
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"client_id": "carbon-client", "client_secret": pem}))
    seen_tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_tokens.append(request.headers["Authorization"].removeprefix("Bearer "))
        return httpx.Response(401)

    config = SourceConfig(name="factory", vendor="carbon", secrets_file=secrets)
    clock = FakeClock(datetime(2025, 6, 18, tzinfo=UTC))
    with structlog.testing.capture_logs() as logs:
        source = make_source(
            config,
            client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            clock=clock,
            offline_after=timedelta(minutes=5),
        )
        with pytest.raises(AuthFailed) as caught:
            await source.fetch_printers()
    assert isinstance(source, CarbonSource)
    assert len(seen_tokens) == 2
    text = json.dumps(logs, default=str) + repr(source) + exception_texts(caught.value)
    text += repr(source._auth)  # the minter itself
    for secret in [pem_body(pem), "PRIVATE KEY", *seen_tokens]:
        assert secret not in text


# --- factory: secret files ----------------------------------------------------------------------


def make(config: SourceConfig, credentials_dir: Path | None = None) -> Any:
    return make_source(
        config,
        client=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
        clock=FakeClock(),
        offline_after=timedelta(minutes=5),
        credentials_dir=credentials_dir,
    )


def test_bare_secret_file_name_is_read_from_the_credentials_directory(tmp_path: Path) -> None:
    """client_secret_file = "formlabs.secret" is looked up in $CREDENTIALS_DIRECTORY."""
    (tmp_path / "formlabs.secret").write_text(FORMLABS_SECRET + "\n")
    config = SourceConfig(
        name="lab",
        vendor="formlabs",
        client_id="id",
        client_secret_file=Path("formlabs.secret"),
    )
    source = make(config, credentials_dir=tmp_path)
    assert source._auth._secret.get_secret_value() == FORMLABS_SECRET
    assert FORMLABS_SECRET not in repr(source)


def test_carbon_secrets_json_builds_a_source(pem: str, tmp_path: Path) -> None:
    """A vendor secrets.json (PEM with newlines escaped in JSON) gives a Carbon source."""
    (tmp_path / "carbon.json").write_text(json.dumps({"client_id": "cid", "client_secret": pem}))
    config = SourceConfig(name="factory", vendor="carbon", secrets_file=Path("carbon.json"))
    source = make(config, credentials_dir=tmp_path)
    assert isinstance(source, CarbonSource)
    assert source.name == "factory"


@pytest.mark.parametrize(
    ("content", "key", "message"),
    [
        (None, "source.factory.secrets_file", "file not found"),
        ("", "source.factory.secrets_file", "empty"),
        ("{not json", "source.factory.secrets_file", "not valid JSON"),
        ('["a"]', "source.factory.secrets_file", "not a JSON object"),
        ('{"client_secret": "x"}', "client_id", "missing"),
        ('{"client_id": "cid"}', "client_secret", "missing"),
        (
            '{"client_id": "cid", "client_secret": "-----BEGIN PRIVATE KEY-----\\nTOPSECRETJUNK\\n'
            '-----END PRIVATE KEY-----"}',
            "client_secret",
            "not an unencrypted PEM RSA private key",
        ),
    ],
    ids=["missing", "empty", "bad-json", "not-object", "no-id", "no-secret", "bad-key"],
)
def test_bad_carbon_secrets_are_config_errors_naming_file_and_key(
    tmp_path: Path, content: str | None, key: str, message: str
) -> None:
    """Each secrets.json problem names the file and key, says how to fix it, shows no content."""
    path = tmp_path / "secrets.json"
    if content is not None:
        path.write_text(content)
    config = SourceConfig(name="factory", vendor="carbon", secrets_file=path)
    with pytest.raises(ConfigError) as caught:
        make(config)
    (problem,) = caught.value.problems
    assert (problem.file, problem.key) == (str(path), key)
    assert message in problem.message
    assert problem.fix
    assert "TOPSECRETJUNK" not in exception_texts(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_formlabs_secret_file_is_a_config_error(tmp_path: Path) -> None:
    """A secret file without read permission is a ConfigError naming file and key."""
    path = tmp_path / "formlabs.secret"
    path.write_text(FORMLABS_SECRET)
    path.chmod(0)
    config = SourceConfig(name="lab", vendor="formlabs", client_id="id", client_secret_file=path)
    with pytest.raises(ConfigError, match=r"source\.lab\.client_secret_file") as caught:
        make(config)
    assert FORMLABS_SECRET not in exception_texts(caught.value)


def test_directory_as_secret_file_is_a_config_error(tmp_path: Path) -> None:
    """Pointing client_secret_file at a directory is a ConfigError, not a crash."""
    config = SourceConfig(
        name="lab", vendor="formlabs", client_id="id", client_secret_file=tmp_path
    )
    with pytest.raises(ConfigError, match="cannot read the file"):
        make(config)


async def test_secret_and_tokens_are_registered_for_log_redaction() -> None:
    """The client secret and every issued token are redacted by the log pipeline's redact()."""
    clock = FakeClock(datetime(2025, 6, 18, tzinfo=UTC))
    script = FormlabsScript()
    source = formlabs(script, clock, FORMLABS_SECRET)
    await source.fetch_printers()
    for secret in [FORMLABS_SECRET, *script.tokens]:
        assert secret not in redact(f"oops: {secret} leaked")
