"""How long a pub/sub connection waits before its next reconnect attempt: capped exponential, equal jitter."""

from __future__ import annotations

import random

# The first retry is quick enough for a Redis restart; the cap keeps a long outage to one connect
# attempt per connection every 2 s, and bounds how long live delivery stays behind once Redis is back.
BACKOFF_INITIAL_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0
_MAX_DOUBLINGS = 32  # beyond this the cap always wins; avoids float overflow


def backoff_seconds(failures: int, initial: float = BACKOFF_INITIAL_SECONDS, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """The wait after ``failures`` failed attempts in a row (1 or more)."""
    ceiling = min(cap, initial * 2 ** min(failures - 1, _MAX_DOUBLINGS))
    # Equal jitter: nodes that lost Redis together do not all return at once.
    return ceiling / 2 + random.uniform(0, ceiling / 2)
