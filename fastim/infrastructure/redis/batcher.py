"""Automatic pipelining: the commands issued in one turn of the event loop share one round trip."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)


class LuaScript:
    """A script sent as EVALSHA, and as EVAL only when Redis does not know it yet (after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Server:
    """What a node knows of the Redis process that runs the commands on a key."""

    clock_offset_ms: int = 0  # Redis's clock less ours, in ms (0 when not measured)
    writer: str = ""  # its run_id when Redis is replicated (a failover changes it); "" on one Redis


class Commands(Protocol):
    """What the adapters send their commands through; replies are RESP2 values, strings decoded.

    A command's key decides where it goes (on a cluster: the shard of its slot): the first
    argument after the command name, or, for EVALSHA and EVAL, the first key.
    """

    async def execute(self, *args: Any) -> Any: ...

    async def run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any: ...

    async def server(self, key: str) -> Server:
        """The Redis that runs commands on ``key``, connecting to it first if needed; raises as commands do."""

    async def wait_replicas(self, key: str, replicas: int, timeout_ms: int) -> int:
        """WAIT on the connection that wrote ``key``: how many replicas confirmed the writes so far."""


async def run_script(execute: Callable[..., Awaitable[Any]], script: LuaScript, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA, and EVAL only when Redis does not know the script (it was restarted or flushed)."""
    try:
        return await execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except NoScriptError:
        return await execute("EVAL", script.source, len(keys), *keys, *args)


class CommandBatcher:
    """Queues commands and sends all those queued in the same loop turn as one redis-py pipeline.

    The adapters' default on any redis-py client, fakeredis included; a node
    uses the leaner :class:`~fastim.infrastructure.redis.pipeline.PipelinedConnection`.

    A chat node serves many sockets at once: when forty of them send a message
    in the same turn, their forty appends cost one round trip and one system
    call instead of forty. A quiet node loses nothing: a lone command is sent
    at the end of the turn it was issued in. Replies come back in order, and a
    failing command fails only its own caller.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._queue: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, *args: Any, **options: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((args, options, future))
        return await future

    async def run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return await run_script(self.execute, script, keys, args)

    async def server(self, key: str) -> Server:
        return Server()  # the offset is not measured here: 0; the tests' Redis is not replicated

    async def wait_replicas(self, key: str, replicas: int, timeout_ms: int) -> int:
        return int(await self.execute("WAIT", replicas, timeout_ms))

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._send(queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, queue: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for args, options, _ in queue:
                    pipe.execute_command(*args, **options)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, _, future in queue:
                future.cancel()
            raise
        except Exception as exc:  # the connection failed: every command of the batch did
            for _, _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(queue, replies):
            if future.done():
                continue  # the caller gave up (cancelled)
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
