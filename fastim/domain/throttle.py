"""Counting failed logins, per client address and per user, so that guessing passwords gets slow."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from fastim.domain.errors import TooManyRequests

# Keys remembered per counter: an attacker who varies the userId (or the address) on every
# attempt makes the table grow; past this the oldest windows are forgotten first.
MAX_TRACKED_KEYS = 100_000


class FailureCounter:
    """Failures per key within a fixed window that starts at the key's first failure."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        now: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self._limit = limit  # 0: never blocks
        self._window_s = window_s
        self._now = now
        self._max_keys = max_keys
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, failures), oldest first

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        if not self._limit:
            return 0.0
        window = self._windows.get(key)
        if window is None:
            return 0.0
        start, failures = window
        left = start + self._window_s - self._now()
        if left <= 0:
            del self._windows[key]
            return 0.0
        return left if failures >= self._limit else 0.0

    def failed(self, key: str) -> None:
        if not self._limit:
            return
        now = self._now()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._window_s:
            self._windows.pop(key, None)
            while len(self._windows) >= self._max_keys:
                del self._windows[next(iter(self._windows))]
            self._windows[key] = (now, 1)
        else:
            self._windows[key] = (window[0], window[1] + 1)

    def __len__(self) -> int:
        return len(self._windows)


class LoginThrottle:
    """Past ``per_source`` failures from one address or ``per_user`` for one userId within the
    window, further attempts are refused without checking the password. Successful logins do not
    count, so many users behind one address can still log in."""

    def __init__(
        self, per_source: int, per_user: int, window_s: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._sources = FailureCounter(per_source, window_s, now)
        self._users = FailureCounter(per_user, window_s, now)

    def check(self, user_id: str, source: str) -> None:
        """Raise :class:`TooManyRequests` when either counter is over its limit."""
        wait = max(self._sources.wait(source), self._users.wait(user_id))
        if wait > 0:
            raise TooManyRequests(
                f"too many failed logins; try again in {math.ceil(wait)} s", retry_after=math.ceil(wait)
            )

    def failed(self, user_id: str, source: str) -> None:
        self._sources.failed(source)
        self._users.failed(user_id)


class NoThrottle:
    """For services built without limits (tests, embedding)."""

    def check(self, user_id: str, source: str) -> None:
        return None

    def failed(self, user_id: str, source: str) -> None:
        return None
