"""One daemon per state directory: an exclusive ``flock`` on ``<state_dir>/printfleet.lock``.

Two daemons on one state directory would both poll (doubling use of the account's shared
request budget), both deliver the same outbox entries and overwrite each other's snapshots. So
``printfleet run`` (and ``demo``, on its own temporary directory) takes this lock before the
store opens and holds it until it exits; the kernel releases it when the process dies, even
after ``kill -9``, so a stale lock file never blocks a restart. The read-only commands
(``snapshot``, ``check``, ``outbox list``, ``rules test``) never take it and work while the
daemon runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from printfleet.errors import PrintfleetError

LOCK_NAME: Final = "printfleet.lock"


class StateDirLocked(PrintfleetError):
    """Another printfleet process holds the state directory (exit code 1)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"state directory {state_dir} is in use by another printfleet process ({who})"
        )
        self.state_dir = state_dir
        self.pid = pid


class StateDirLock:
    """The held lock on one state directory; :meth:`release` (or ``with``) gives it back."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir = state_dir
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirLock:
        """Take the lock on ``state_dir`` (created if missing) without waiting.

        Raises:
            StateDirLocked: another process holds it; names the directory and its pid.
            PrintfleetError: the directory or the lock file cannot be created.
        """
        path = state_dir / LOCK_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            # Not O_TRUNC: the holder's pid must stay readable until we own the lock.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise PrintfleetError(
                f"cannot create the lock file {path}: {err.strerror} "
                "(fix: let the printfleet user write the state directory)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateDirLocked(state_dir, pid) from None
        except OSError as err:
            os.close(fd)
            raise PrintfleetError(f"cannot lock {path}: {err.strerror}") from None
        # Ours now: record who holds it, for the message the next one prints.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(state_dir, fd)

    def release(self) -> None:
        """Give the lock back (idempotent). The file stays: removing it would race a new
        holder that opened it meanwhile."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
