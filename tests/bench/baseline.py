"""The 7be2331 baseline: that commit's code, built once into its own venv under ``.bench-cache/``.

The scale benchmarks run the daemon of commit :data:`COMMIT` (the last one measured before
issue 15) beside today's, against the same simulated fleet (today's simulator for both). The
tree is exported with ``git archive`` rather than ``git worktree add``: nothing is registered in
the repository's worktree list, so deleting the cache directory leaves no stale entry behind,
and a clean clone works as long as the commit is in its history. The venv is made with the
interpreter running the benchmarks and ``pip install <tree>`` (non-editable), resolving its
dependencies from the configured index; the first build takes ~20 s, later calls reuse it.

``baseline_python()`` is the interpreter command of that venv (``[python, "-I"]``: isolated
mode, so a ``PYTHONPATH`` pointing at today's ``daemon/`` cannot shadow the installed 0.1.0;
append ``-m printfleet ...``), ``baseline_root()`` its tree (for its own ``rules/`` packs).
Both raise :class:`BaselineUnavailable` with the reason when it cannot be built; callers turn
that into a row saying so.

Run alone with ``python -m tests.bench.baseline`` to build (or check) the cache.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "7be2331"
CACHE = ROOT / ".bench-cache"
#: written last, so a half-built cache (interrupted build) is rebuilt rather than trusted
_STAMP = ".built"


class BaselineUnavailable(RuntimeError):
    """The baseline could not be built; the message says why."""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=False)


def _home() -> Path:
    return CACHE / COMMIT


@functools.cache
def build() -> float:
    """Build the cache unless present; return the seconds it took (0 when reused)."""
    home = _home()
    venv_python = home / ".venv" / "bin" / "python"
    if (home / _STAMP).is_file() and venv_python.is_file():
        return 0.0
    started = time.monotonic()
    if _git("cat-file", "-e", f"{COMMIT}^{{commit}}").returncode != 0:
        raise BaselineUnavailable(
            f"commit {COMMIT} is not in this repository's history (a shallow clone? "
            f"`git fetch --unshallow` brings it)"
        )
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", COMMIT], cwd=ROOT, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise BaselineUnavailable(f"git archive {COMMIT} failed: {archive.stderr.decode()[-500:]}")
    untar = subprocess.run(
        ["tar", "-x", "-C", str(home)], input=archive.stdout, capture_output=True, check=False
    )
    if untar.returncode != 0:
        raise BaselineUnavailable(f"unpacking {COMMIT} failed: {untar.stderr.decode()[-500:]}")
    steps = (
        [sys.executable, "-m", "venv", str(home / ".venv")],
        [str(venv_python), "-m", "pip", "install", "--quiet", str(home)],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            raise BaselineUnavailable(
                f"building the {COMMIT} venv failed at {' '.join(step[-3:])}: "
                f"{(done.stderr or done.stdout)[-800:]}"
            )
    (home / _STAMP).write_text(f"{COMMIT}\n")
    return time.monotonic() - started


def baseline_python() -> list[str]:
    """The interpreter command of 7be2331's venv; ``[*baseline_python(), "-m", "printfleet"]``
    runs its daemon."""
    build()
    return [str(_home() / ".venv" / "bin" / "python"), "-I"]


def baseline_root() -> Path:
    """7be2331's source tree (its ``rules/`` packs live under it)."""
    build()
    return _home()


def label() -> str:
    return f"{COMMIT} (before issue 15)"


if __name__ == "__main__":
    try:
        seconds = build()
    except BaselineUnavailable as err:
        print(f"baseline unavailable: {err}", file=sys.stderr)
        sys.exit(1)
    state = f"built in {seconds:.0f} s" if seconds else "cached"
    print(
        f"{COMMIT}: {state}: {' '.join(baseline_python())} -m printfleet (tree {baseline_root()})"
    )
