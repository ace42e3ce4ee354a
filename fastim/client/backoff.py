"""How long to wait before the next reconnect: capped exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
clients of a restarted node over the whole interval, so they do not come back
in one wave (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The first ceiling, the cap, and the growth factor of the ceiling per failed attempt, in seconds."""

    base: float = 0.1
    cap: float = 10.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap or self.factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")


class Backoff:
    """The delays of one stream's reconnect attempts; :meth:`reset` once a connection has opened."""

    __slots__ = ("policy", "attempt", "_random")

    def __init__(self, policy: BackoffPolicy | None = None, rng: random.Random | None = None) -> None:
        self.policy = policy or BackoffPolicy()
        self.attempt = 0  # failed attempts since the last connection that opened
        self._random = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay of attempt ``attempt`` (1 = the first retry)."""
        policy = self.policy
        exponent = min(attempt - 1, 64)  # 2**64 * base is past any cap; no float overflow
        return min(policy.cap, policy.base * policy.factor ** exponent)

    def next(self) -> float:
        """Count one more failed attempt; the delay before the next one."""
        self.attempt += 1
        return self._random.uniform(0.0, self.ceiling(self.attempt))

    def reset(self) -> None:
        self.attempt = 0
