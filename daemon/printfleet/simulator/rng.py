"""Small deterministic random streams for the simulated fleet.

Every printer owns its own stream so the fleet's history depends only on the seed, never on how
requests happen to slice time. ``random.Random`` would work but carries 2.5 KB of Mersenne-Twister
state per instance (25 MB for 10,000 printers); SplitMix64 needs one integer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_UNIT = 1.0 / (1 << 53)


def derive_seed(*parts: int | str) -> int:
    """A stable 64-bit seed from any mix of ints and strings (``hash()`` is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Rng:
    """SplitMix64: tiny, fast enough, statistically fine for a simulation."""

    __slots__ = ("_state",)

    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def next_u64(self) -> int:
        """The next 64 random bits."""
        self._state = (self._state + _GOLDEN) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def random(self) -> float:
        """Uniform in [0, 1)."""
        # next_u64 inlined: this is the simulator's hottest function while a fleet warms up.
        state = self._state = (self._state + _GOLDEN) & _MASK
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return ((z ^ (z >> 31)) >> 11) * _UNIT

    def chance(self, probability: float) -> bool:
        """True with the given probability."""
        return self.random() < probability

    def uniform(self, low: float, high: float) -> float:
        """Uniform in [low, high)."""
        return low + (high - low) * self.random()

    def randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high], both inclusive."""
        return low + int(self.random() * (high - low + 1))

    def choice(self, items: Sequence[T]) -> T:
        """One element of a non-empty sequence."""
        return items[int(self.random() * len(items))]

    def expo(self, mean: float) -> float:
        """Exponentially distributed with the given mean."""
        return -mean * math.log(1.0 - self.random())

    def uuid4(self) -> str:
        """A random (version 4 shaped) UUID string."""
        hexed = f"{self.next_u64():016x}{self.next_u64():016x}"
        variant = "89ab"[int(hexed[16], 16) & 3]
        return f"{hexed[:8]}-{hexed[8:12]}-4{hexed[13:16]}-{variant}{hexed[17:20]}-{hexed[20:]}"

    def hex(self, length: int) -> str:
        """``length`` upper-case hex digits."""
        return "".join("0123456789ABCDEF"[self.next_u64() & 15] for _ in range(length))

    def token(self, length: int) -> str:
        """``length`` random alphanumeric characters (credentials, ids)."""
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
        return "".join(alphabet[self.next_u64() % len(alphabet)] for _ in range(length))
