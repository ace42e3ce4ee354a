"""Automatic pipelining: the commands issued in one turn of the event loop share one round trip."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)


class LuaScript:
    """A script sent as EVALSHA, and as EVAL only when Redis does not know it yet (after a restart)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


class Commands(Protocol):
    """What the adapters send their commands through; replies are RESP2 values, strings decoded."""

    clock_offset_ms: int  # Redis's clock less ours, in ms (0 when not measured)

    async def execute(self, *args: Any) -> Any: ...

    async def run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any: ...

    async def connected(self) -> None:
        """Make sure ``clock_offset_ms`` is measured (a connection is open)."""


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

    clock_offset_ms = 0  # the tests' clocks: Redis (or fakeredis) runs beside them

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

    async def connected(self) -> None:
        return None  # the offset is not measured here: 0

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
