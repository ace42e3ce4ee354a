"""A dict whose entries expire by a Clock, like Redis keys with a TTL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from fastim.domain.ports import Clock

V = TypeVar("V")

SWEEP_INTERVAL_MS = 60_000  # expired entries are purged at most once a minute, amortised over writes


class ExpiringDict(Generic[V]):
    """Entries vanish once their deadline passes: lazily on read, and by a periodic sweep on write."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._values: dict[str, V] = {}
        self._deadlines: dict[str, int] = {}
        self._next_sweep_ms = 0

    def get(self, key: str) -> V | None:
        deadline = self._deadlines.get(key)
        if deadline is not None and deadline <= self._clock.now_ms():
            self._drop(key)
        return self._values.get(key)

    def set(self, key: str, value: V, ttl_seconds: int | None = None) -> None:
        self._values[key] = value
        self.expire(key, ttl_seconds)
        self._maybe_sweep()

    def expire(self, key: str, ttl_seconds: int | None) -> None:
        if ttl_seconds is None:
            self._deadlines.pop(key, None)
        else:
            self._deadlines[key] = self._clock.now_ms() + ttl_seconds * 1000

    def deadline_ms(self, key: str) -> int | None:
        """When ``key`` expires (clock milliseconds), or ``None`` when it does not."""
        return self._deadlines.get(key)

    def delete(self, key: str) -> None:
        self._drop(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        self._sweep()
        return len(self._values)

    def keys(self) -> Iterator[str]:
        self._sweep()
        return iter(list(self._values))

    def _drop(self, key: str) -> None:
        self._values.pop(key, None)
        self._deadlines.pop(key, None)

    def _maybe_sweep(self) -> None:
        if self._clock.now_ms() >= self._next_sweep_ms:
            self._sweep()

    def _sweep(self) -> None:
        now = self._clock.now_ms()
        for key in [k for k, deadline in self._deadlines.items() if deadline <= now]:
            self._drop(key)
        self._next_sweep_ms = now + SWEEP_INTERVAL_MS
