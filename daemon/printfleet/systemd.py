"""systemd integration without a dependency: sd_notify over the $NOTIFY_SOCKET datagram socket.

READY=1 after start-up, WATCHDOG=1 pings at half the watchdog interval, RELOADING=1 and
STOPPING=1 around SIGHUP and shutdown. Every function is a no-op outside systemd.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

_log = structlog.get_logger("printfleet.systemd")


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``) to systemd; False when not under a notify unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    message = "\n".join(states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as err:
        _log.warning("systemd.notify_failed", error=str(err))
        return False
    return True


def reloading() -> bool:
    """Tell systemd a reload started (with the monotonic timestamp newer systemd wants)."""
    usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000)
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
