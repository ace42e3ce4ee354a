"""Building the Redis client and turning its failures into the domain's StorageUnavailable."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from fastim.domain.errors import StorageUnavailable

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py has no such feature to turn off
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

# A request waits at most this long for a TCP connection: long enough for a
# slow network, short enough that a down Redis becomes a 503 quickly.
CONNECT_TIMEOUT_SECONDS = 2.0
# The longest single command: the history scans in scripts.py stay well below it.
SOCKET_TIMEOUT_SECONDS = 5.0
# An idle pooled connection is PINGed before reuse after this long, so a
# connection silently dropped by a firewall is noticed before a command fails.
HEALTH_CHECK_INTERVAL_SECONDS = 30
# No automatic retries: a retried RPUSH after a lost reply could store a
# message twice, and an outage should surface at once (the pool already
# reconnects a stale connection before handing it out).
NO_RETRY = 0
# Connections per node of this pool, which carries pub/sub and the pings; every
# other command goes through the node's
# PipelinedConnection. At the cap a command waits for a free connection (up to
# POOL_WAIT_SECONDS) instead of failing at once, as redis-py's default pool does.
MAX_CONNECTIONS = 64
POOL_WAIT_SECONDS = 5.0


def make_client(url: str) -> redis.Redis:
    """A client for ``url``; it connects lazily, on its first command."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=POOL_WAIT_SECONDS, **connection_options()
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


def connection_options() -> dict[str, Any]:
    """How every redis-py connection of a node behaves (this module's constants)."""
    return {
        "decode_responses": True,
        # A non-UTF-8 entry or payload from another program then decodes to
        # U+FFFD and is judged by the codec, instead of failing the whole read.
        "encoding_errors": "replace",
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "health_check_interval": HEALTH_CHECK_INTERVAL_SECONDS,
        "retry": Retry(NoBackoff(), NO_RETRY),
        **_without_maint_notifications(),
    }


def _without_maint_notifications() -> dict[str, Any]:
    # Maintenance notifications (a Redis Enterprise feature over RESP3) are
    # "auto" by default in redis-py 8, and while on, the pool skips its check
    # for a pooled connection the server closed: the first command after a
    # Redis restart would then fail. We speak RESP2, so turning them off costs
    # nothing.
    if MaintNotificationsConfig is None:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


# What a failed Redis call can raise: redis-py's own errors, and the socket
# errors and timeouts that escape it while connecting.
STORAGE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


class storage_errors:  # noqa: N801 - used like a function: ``with storage_errors("..."):``
    """Re-raise a Redis failure inside the block as :class:`StorageUnavailable`.

    Works with ``with`` and ``async with``. The message names the operation and
    the failure's kind; redis-py's messages carry host and port, never credentials.
    """

    def __init__(self, operation: str) -> None:
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, STORAGE_ERRORS):
            raise StorageUnavailable(f"redis {self._operation} failed: {describe(exc)}") from exc

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def describe(exc: BaseException) -> str:
    """A one-line account of a failure, for messages and logs."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
