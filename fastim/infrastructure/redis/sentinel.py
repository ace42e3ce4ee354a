"""A node on a Redis watched by Sentinel: every connection asks the sentinels where the master is.

Both paths follow a failover on their own. The pipelined commands
(:class:`~fastim.infrastructure.redis.pipeline.PipelinedConnection`) lose
their connection when the master dies, and the next command asks the
sentinels again and checks ROLE before using the server; a write that reaches
a demoted master (``READONLY``) drops the connection too. The broker's
pub/sub connection loses its connection too (or its probe goes unanswered),
and each reconnect asks the sentinels. The URL gives what the sentinels do
not: password, database, TLS.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.connection import parse_url

from redis.exceptions import ConnectionError as RedisConnectionError

from fastim.infrastructure.redis.client import NO_RETRY, STORAGE_ERRORS, connection_options, describe
from fastim.infrastructure.redis.cluster import parse_addresses
from fastim.infrastructure.redis.endpoint import Address, Endpoint
from fastim.infrastructure.redis.pipeline import PipelinedConnection

# A sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT_SECONDS = 1.0


def make_sentinel(addresses: str) -> Sentinel:
    """The sentinels of ``HOST:PORT[,HOST:PORT...]``, asked in turn."""
    return Sentinel(
        parse_addresses(addresses),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
            "retry": Retry(NoBackoff(), NO_RETRY),
            "decode_responses": True,
        },
    )


def sentinel_client(sentinel: Sentinel, master: str, url: str) -> redis.Redis:
    """redis-py's client of the current master (the readiness PING)."""
    options: dict[str, Any] = {
        key: value for key, value in parse_url(url).items() if key in ("username", "password", "db")
    }
    return sentinel.master_for(master, **connection_options(), **options)


def master_address(sentinel: Sentinel, master: str) -> Address:
    """Where the sentinels say ``master`` is, asked each time a connection opens."""

    async def address() -> tuple[str, int]:
        host, port = await sentinel.discover_master(master)
        return str(host), int(port)

    return address


def sentinel_commands(sentinel: Sentinel, master: str, url: str) -> PipelinedConnection:
    """The pipelined commands, on whichever server the sentinels name as master when connecting."""
    return PipelinedConnection(url, address=master_address(sentinel, master), replicated=True, expect_master=True)


def sentinel_endpoint(sentinel: Sentinel, master: str, url: str) -> Endpoint:
    """The broker's pub/sub connections, to whichever server the sentinels name as master when connecting.

    No ROLE check: a replica carries the master's PUBLISHes too, and a server the master no
    longer reaches delivers no probe, so the broker connects again.
    """
    return Endpoint(url, address=master_address(sentinel, master))


async def check_master(sentinel: Sentinel, master: str) -> None:
    """Ask each sentinel for the master and PING it; raises a one-line reason (redis-py's own carries reprs)."""
    failures = []
    for client in sentinel.sentinels:
        where = f"{client.connection_pool.connection_kwargs.get('host')}:{client.connection_pool.connection_kwargs.get('port')}"
        try:
            address = await client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", master)
        except STORAGE_ERRORS as exc:
            failures.append(f"{where}: {describe(exc)}")
            continue
        if not address:
            failures.append(f"{where} knows no master named {master!r}")
            continue
        host, port = address[0], int(address[1])
        probe = redis.Redis(host=host, port=port, **{**connection_options(), "socket_timeout": SENTINEL_TIMEOUT_SECONDS})
        try:
            await probe.ping()
            return
        except STORAGE_ERRORS as exc:
            failures.append(f"the master {host}:{port} named by {where}: {describe(exc)}")
        finally:
            await probe.aclose()
    raise RedisConnectionError("; ".join(failures) or "no sentinel given")
