"""The errors printfleet raises, classified so callers can decide what to do.

    PrintfleetError
    ├── ConfigError            invalid config or rule pack (exit code 2); carries file/key/fix
    │   └── RuleError          a rule pack problem; carries the rule name and position
    ├── SourceError            a vendor API problem, raised by sources
    │   ├── AuthFailed         credentials rejected by the vendor (exit code 3 at start-up)
    │   ├── RateLimited        429 or our own budget exhausted; carries retry_after seconds
    │   ├── SourceUnavailable  network error, timeout, 5xx: the vendor is down for now
    │   └── BadResponse        a whole response could not be understood (not one bad record)
    ├── DeliveryFailed         a sink could not deliver; says whether retrying may help
    └── StoreError             the state database could not be used

Every error's ``str`` and ``repr`` are safe to log: secrets are never put into them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

#: The process exit codes (DESIGN §3), the one table: ``cli`` turns errors into them and the
#: daemon returns them; systemd's ``RestartPreventExitStatus=`` lists the config one.
EXIT_OK = 0  # done, or a clean shutdown on SIGTERM
EXIT_ERROR = 1  # anything else
EXIT_CONFIG = 2  # invalid config or rule pack (ConfigError)
EXIT_AUTH = 3  # credentials rejected by a vendor at start-up (AuthFailed)
EXIT_INTERRUPTED = 130  # Ctrl-C on a one-shot command


class PrintfleetError(Exception):
    """Base class of every error printfleet raises on purpose."""

    #: Whether trying the same thing again later may succeed.
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a config file or rule pack, said so a person can fix it."""

    file: str
    key: str
    message: str
    fix: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"
        return f"{text} (fix: {self.fix})" if self.fix else text


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to ``word`` when it is close enough to be a typo."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class ConfigError(PrintfleetError):
    """The configuration (or a rule pack) is invalid. Exit code 2."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems: list[Problem] = problems if isinstance(problems, list) else [problems]
        super().__init__("\n".join(str(p) for p in self.problems))


class RuleError(ConfigError):
    """A rule pack is invalid. Exit code 2."""


class SourceError(PrintfleetError):
    """A vendor API could not give us a snapshot."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}")


class AuthFailed(SourceError):
    """The vendor rejected our credentials (token endpoint 400/401, or 401 after a renewal)."""


class RateLimited(SourceError):
    """The vendor (429) or our own request budget says wait ``retry_after`` seconds."""

    retryable = True

    def __init__(self, source: str, message: str, retry_after: float) -> None:
        super().__init__(source, message)
        self.retry_after = retry_after


class SourceUnavailable(SourceError):
    """Network error, timeout or 5xx: the vendor is unreachable for now."""

    retryable = True

    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(source, message)
        self.retry_after = retry_after


class BadResponse(SourceError):
    """A whole response was not what the API documents (not JSON, wrong top-level shape)."""

    retryable = True


class DeliveryFailed(PrintfleetError):
    """A sink could not deliver a message."""

    def __init__(
        self,
        sink: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        response: str | None = None,
    ) -> None:
        self.sink = sink
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.response = response
        super().__init__(f"{sink}: {message}")


class StoreError(PrintfleetError):
    """The state database could not be opened, read or written."""
