"""Commands on a Redis Cluster: each goes to the master of its key's slot, pipelined per shard.

The node keeps the cluster's slot map (CLUSTER SLOTS) and one
:class:`~fastim.infrastructure.redis.pipeline.PipelinedConnection` per
master: the commands of one loop turn bound for one shard leave in one
write, as on a single Redis. A ``MOVED`` reply (a slot moved, a replica was
promoted) updates the map and the command goes again to the named node; it
was not run, so this is safe. An ``ASK`` reply (a slot being migrated) sends
``ASKING`` and the command to the importing node. A lost connection is not
retried (a command in flight may have run) but makes the map be read again,
so that the next command finds a promoted replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from fastim.infrastructure.redis.batcher import LuaScript, Server, run_script
from fastim.infrastructure.redis.client import describe
from fastim.infrastructure.redis.pipeline import CONNECT_TIMEOUT_SECONDS, REPLY_TIMEOUT_SECONDS, PipelinedConnection

logger = logging.getLogger(__name__)

Address = tuple[str, int]

# A command follows at most this many MOVED/ASK redirections: a slot moves once at a time.
MAX_REDIRECTS = 5
# The map is read again at most this often while shards fail: a failover takes seconds, a read
# of CLUSTER SLOTS a fraction of a millisecond.
REFRESH_MIN_INTERVAL_S = 0.2
# Commands without a key (or whose key is not the first argument) that a node may send.
_KEYLESS = frozenset({"PING", "TIME", "INFO", "ROLE", "CLUSTER", "ASKING", "WAIT", "SCRIPT"})


def parse_addresses(text: str) -> list[Address]:
    """``HOST:PORT[,HOST:PORT...]`` as a list of addresses; ValueError names the first bad entry."""
    addresses = []
    for entry in (part.strip() for part in text.split(",")):
        host, colon, port = entry.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{entry!r} is not HOST:PORT")
        addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise ValueError("no HOST:PORT given")
    return addresses


def slot_of(key: str | bytes) -> int:
    return key_slot(key.encode("utf-8") if isinstance(key, str) else key)


def key_of(args: tuple[Any, ...]) -> Any | None:
    """The key that routes a command: the first argument, or the first key of EVALSHA and EVAL."""
    name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
    if name in ("EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None
    if name in _KEYLESS or len(args) < 2:
        return None
    return args[1]


class ClusterCommands:
    """The :class:`~fastim.infrastructure.redis.batcher.Commands` of a node on a Redis Cluster."""

    def __init__(
        self,
        startup: Iterable[Address],
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        reply_timeout: float = REPLY_TIMEOUT_SECONDS,
    ) -> None:
        self._startup = list(startup)
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._nodes: dict[Address, PipelinedConnection] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._unanswered = 0  # reads of the map in a row that no node answered
        self._map_listeners: list[Callable[[], None]] = []
        self._closed = False

    # -- the slot map ------------------------------------------------------------------

    def owner(self, slot: int) -> Address | None:
        """The master serving ``slot`` as far as this node knows."""
        return self._slots[slot]

    def masters(self) -> frozenset[Address]:
        return frozenset(address for address in self._slots if address is not None)

    def on_map_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a read of the map finds a slot served by another master."""
        self._map_listeners.append(listener)

    def stale(self) -> None:
        """Something failed: read the map again soon (at most every REFRESH_MIN_INTERVAL_S)."""
        if self._closed or self._refreshing is not None:
            return
        delay = max(0.0, self._refreshed_at + REFRESH_MIN_INTERVAL_S - time.monotonic())
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh(delay, background=True))

    async def refresh(self) -> None:
        """Read the map now (or wait for the read in progress); raises, saying why, when no node answers."""
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(0.0))
        failures = await asyncio.shield(self._refreshing)
        if all(address is None for address in self._slots):
            raise RedisConnectionError(f"no node answered CLUSTER SLOTS ({failures})")

    async def _refresh(self, delay: float, background: bool = False) -> str:
        """Read the map; what failed, when nothing answered."""
        try:
            if delay:
                await asyncio.sleep(delay)
            reply, failures = await self._ask_slots()
            self._refreshed_at = time.monotonic()
            if reply is not None:
                self._unanswered = 0
                self._apply(reply)
            else:
                self._unanswered += 1
                if background and self._unanswered == 1:  # once per outage; nobody else will say it
                    logger.warning("no Redis Cluster node answered CLUSTER SLOTS (%s)", failures)
            return failures
        finally:
            self._refreshing = None

    async def _ask_slots(self) -> tuple[list[Any] | None, str]:
        # Known masters first (their connections are open), then the addresses given at start.
        candidates = list(dict.fromkeys([*sorted(self.masters()), *self._startup]))
        failures = []
        for address in candidates:
            connection = self._nodes.get(address)
            temporary = connection is None
            if temporary:
                connection = self._connection(address)
            try:
                async with asyncio.timeout(self._connect_timeout):
                    return await connection.execute("CLUSTER", "SLOTS"), ""
            except (RedisError, OSError, TimeoutError) as exc:
                failures.append(f"{address[0]}:{address[1]}: {describe(exc)}")
            finally:
                if temporary:
                    await connection.aclose()
        return None, "; ".join(failures)

    def _apply(self, reply: list[Any]) -> None:
        slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            address = (str(master[0]) or self._startup[0][0], int(master[1]))
            slots[start : end + 1] = [address] * (end - start + 1)
        changed = slots != self._slots
        self._slots = slots
        for address in set(self._nodes) - set(slots):  # no longer a master: its connection goes
            connection = self._nodes.pop(address)
            asyncio.get_running_loop().create_task(connection.aclose())
        if changed:
            for listener in self._map_listeners:
                try:
                    listener()
                except Exception:
                    logger.exception("a slot-map listener failed")

    def _connection(self, address: Address) -> PipelinedConnection:
        return PipelinedConnection(
            f"redis://{address[0]}:{address[1]}/0",
            connect_timeout=self._connect_timeout,
            reply_timeout=self._reply_timeout,
            replicated=True,
        )

    def node(self, address: Address) -> PipelinedConnection:
        """The pipelined connection to a master (opened on its first command)."""
        connection = self._nodes.get(address)
        if connection is None:
            if self._closed:
                raise RedisConnectionError("the Redis Cluster connections are closed")
            connection = self._nodes[address] = self._connection(address)
        return connection

    async def _owner_of(self, slot: int | None) -> Address:
        if slot is None:
            masters = self.masters()
            if masters:
                return min(masters)
            await self.refresh()
            return min(self.masters())
        address = self._slots[slot]
        if address is None:
            await self.refresh()
            address = self._slots[slot]
            if address is None:
                raise RedisConnectionError(f"no master of the Redis Cluster serves slot {slot}")
        return address

    # -- Commands ------------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        key = key_of(args)
        return await self._send(None if key is None else slot_of(key), args)

    async def run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return await run_script(self.execute, script, keys, args)

    async def server(self, key: str) -> Server:
        connection = self.node(await self._owner_of(slot_of(key)))
        try:
            return await connection.server(key)
        except (RedisError, OSError):
            self.stale()
            raise

    async def wait_replicas(self, key: str, replicas: int, timeout_ms: int) -> int:
        connection = self.node(await self._owner_of(slot_of(key)))
        return await connection.wait_replicas(key, replicas, timeout_ms)

    async def _send(self, slot: int | None, args: tuple[Any, ...]) -> Any:
        address = await self._owner_of(slot)
        asking = False
        for _ in range(MAX_REDIRECTS):
            connection = self.node(address)
            try:
                if asking:
                    return await connection.execute_asking(*args)
                return await connection.execute(*args)
            except ResponseError as exc:
                redirect = _redirect(str(exc))
                if redirect is None:
                    raise
                kind, moved_slot, address = redirect
                asking = kind == "ASK"
                if not asking:
                    self._slots[moved_slot] = address  # at once; the whole map follows
                    self.stale()
            except (RedisError, OSError):
                self.stale()  # a master may have failed: look for its replica's promotion
                raise
        raise RedisConnectionError(f"more than {MAX_REDIRECTS} redirections for slot {slot}")

    async def check(self) -> None:
        """PING every master (reading the map first if needed); raises the first failure, naming its node."""
        if not self.masters():
            await self.refresh()
        masters = sorted(self.masters())
        replies = await asyncio.gather(*(self.node(address).execute("PING") for address in masters),
                                       return_exceptions=True)
        for (host, port), reply in zip(masters, replies):
            if isinstance(reply, BaseException):
                self.stale()
                raise RedisConnectionError(f"{host}:{port} does not answer: {describe(reply)}") from reply

    async def ping(self) -> bool:
        """Whether every master answers PING; never raises (the storage probe)."""
        try:
            await self.check()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("the Redis Cluster does not answer: %s", describe(exc))
            return False
        return True

    async def aclose(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        nodes, self._nodes = list(self._nodes.values()), {}
        for connection in nodes:
            await connection.aclose()


def _redirect(message: str) -> tuple[str, int, Address] | None:
    """("MOVED" or "ASK", slot, address) of a redirection reply, or None."""
    parts = message.split()
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, _, port = parts[2].rpartition(":")
    return parts[0], int(parts[1]), (host, int(port))
