"""Keep one long-running task alive: an unexpected exception restarts it, never ends the daemon.

printfleet is an alerting daemon: when it stops, nobody is told that nobody is being told. So
each poller, each outbox worker and the MQTT supervisor runs under :func:`supervise` instead of
directly in the daemon's task group, where one exception would cancel every other task. A task
that dies is logged once (``task.crashed`` with the exception type), counted
(``printfleet_task_restarts_total{task}``) and restarted after a capped exponential backoff, so a
bug that fires on every start cannot spin the CPU. Only cancellation (shutdown) ends it, or the
task returning normally.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from printfleet.clock import Clock
from printfleet.core.backoff import backoff
from printfleet.observe import NULL_OBSERVER, Observer

log = structlog.get_logger("printfleet.supervisor")

#: A task that ran this long before dying counts as healthy again: its next crash restarts
#: after the base delay, not after the delay its earlier crashes had built up.
STABLE_AFTER_S: Final = 300.0
#: How much of an exception's text goes into the log line (a vendor can make it huge).
MESSAGE_MAX: Final = 200


def error_text(err: BaseException) -> str:
    """``str(err)``, cut to :data:`MESSAGE_MAX` characters, never raising."""
    try:
        text = str(err)
    except Exception:  # a hostile __str__ must not break the handler of its own crash
        text = f"<unprintable {type(err).__name__}>"
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


async def supervise(
    task: str,
    start: Callable[[], Awaitable[None]],
    *,
    clock: Clock,
    observer: Observer = NULL_OBSERVER,
    base: float = 1.0,
    cap: float = 60.0,
    rng: random.Random | None = None,
) -> None:
    """Run ``start()`` until it returns or this is cancelled, restarting it when it raises.

    Args:
        task: the bounded label naming the task (``poll:<source>``, ``outbox:<sink>``, ``mqtt``).
        start: makes a fresh run of the task each time it is called.
        base, cap: seconds; the restart backoff's start and ceiling (never shorter than the
            current step, so a crash loop restarts at most once a second).
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        began = clock.monotonic()
        try:
            await start()
            return
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if clock.monotonic() - began >= STABLE_AFTER_S:
                attempt = 0
            attempt += 1
            delay = backoff(attempt, base=base, cap=cap, rng=rng, jitter="up")
            observer.task_restarted(task)
            log.error(
                "task.crashed",
                task=task,
                error_type=type(err).__name__,
                message=error_text(err),
                restart_in=round(delay, 3),
                exc_info=err,
            )
            await clock.sleep(delay)
