"""One connection to Redis on which every command of a loop turn leaves in one write, and replies stream back.

redis-py spends about 150 µs of CPU on each pipeline it runs (pipeline object,
retry wrapper, pool checkout with its timeout, one timeout per reply read); a
chat node issues two or three per message. Here a command costs a packing
call, a share of one write and a share of one hiredis parse, and any number of
turns' commands may be in flight at once, answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastim.infrastructure.redis.batcher import LuaScript, Server, run_script
from fastim.infrastructure.redis.endpoint import Address, Endpoint

logger = logging.getLogger(__name__)

# The client.py values: a connection attempt and a silent server are given up on after these.
CONNECT_TIMEOUT_SECONDS = 2.0
REPLY_TIMEOUT_SECONDS = 5.0


class CommandInFlight(RedisConnectionError):
    """The connection failed after the command was written: Redis may or may not have run it."""


class ReadOnlyReplica(ResponseError):
    """A write reached a replica: the server this connection reached is no longer the master."""


def _reply_error(message: str) -> Exception:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("READONLY"):
        return ReadOnlyReplica(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    """The byte stream: writes packed commands, parses replies, hands each to the oldest waiting future."""

    def __init__(self, on_lost) -> None:
        self._on_lost = on_lost
        # decode_responses=True and encoding_errors="replace", as make_client's pool.
        self._parser = hiredis.Reader(encoding="utf-8", errors="replace", replyError=_reply_error)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.answered = 0  # replies so far: the watchdog's sign of life

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, futures: Sequence[asyncio.Future[Any]]) -> None:
        self._waiting.extend(futures)
        self.transport.write(data)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._parser.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if reply is False:
                return
            self.answered += 1
            future = waiting.popleft()
            if isinstance(reply, ReadOnlyReplica) and self.transport is not None:
                # Demoted under us: the next command connects afresh (and finds the new master).
                asyncio.get_running_loop().call_soon(self.abort, RedisConnectionError("the master became a replica"))
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed"))

    def _fail(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(CommandInFlight(str(exc)))  # written: it may have run
        self._on_lost(self)


class SharedWait:
    """WAIT for replicas, one in flight per connection; callers who come meanwhile share the next one.

    A WAIT blocks its connection until the replicas confirm or it times out (with no replica
    reachable, for the whole timeout): one per message would serialize those timeouts. A WAIT
    covers every write answered before it is sent: callers of the loop turn in which it is
    issued share it (it is written at the end of that turn); later callers share the next.
    """

    def __init__(self, execute: Callable[..., Awaitable[Any]]) -> None:
        self._execute = execute
        self._running: asyncio.Future[int] | None = None
        self._joinable = False  # the running WAIT is not written yet: it covers a caller now
        self._queued: asyncio.Future[int] | None = None

    async def wait(self, replicas: int, timeout_ms: int) -> int:
        if self._running is None:
            self._running = asyncio.ensure_future(self._send(replicas, timeout_ms))
            self._open_join()
            return await asyncio.shield(self._running)
        if self._joinable:
            return await asyncio.shield(self._running)
        if self._queued is None:  # the WAIT in flight may have left before this caller's write
            self._queued = asyncio.ensure_future(self._after(self._running, replicas, timeout_ms))
        return await asyncio.shield(self._queued)

    def _open_join(self) -> None:
        # The task queues its WAIT on its first step, in this turn; the connection writes it when
        # the turn ends. Callers woken before that are covered; the window closes with the turn.
        self._joinable = True
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._close_join)

    def _close_join(self) -> None:
        self._joinable = False

    async def _send(self, replicas: int, timeout_ms: int) -> int:
        try:
            return int(await self._execute("WAIT", replicas, timeout_ms))
        finally:
            if self._running is asyncio.current_task():
                self._running = None

    async def _after(self, previous: asyncio.Future[int], replicas: int, timeout_ms: int) -> int:
        await asyncio.wait([previous])
        self._queued = None
        self._running = asyncio.current_task()  # newcomers queue behind this one now
        self._open_join()
        return await self._send(replicas, timeout_ms)


class PipelinedConnection:
    """Redis commands, automatically pipelined, on one lazily opened connection.

    ``execute`` queues a command; at the end of the loop turn every queued
    command is packed and written at once. Replies come back in order, an
    error reply fails only its own command, and a lost connection fails the
    commands in flight (never retried: a retried RPUSH could store a message
    twice); the next command connects again. When commands wait and Redis
    answers nothing for ``reply_timeout`` seconds, the connection is given up.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        reply_timeout: float = REPLY_TIMEOUT_SECONDS,
        address: Address | None = None,
        replicated: bool = False,
        expect_master: bool = False,
    ) -> None:
        """``url`` gives credentials, database and TLS, and the address unless ``address`` is given.

        ``replicated``: Redis fails over to replicas (Sentinel, a cluster), so each connection
        learns the run_id of the process it reached (the writer of :class:`Server`).
        ``expect_master``: a server whose ROLE is not master is refused at connect.
        """
        self._endpoint = Endpoint(url, address=address)
        self._replicated = replicated
        self._expect_master = expect_master
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._queue: list[tuple[bytes, asyncio.Future[Any]]] = []  # this turn's commands
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._answered_at_check = 0
        self._closed = False
        # Redis's clock less ours, in ms, read when the connection opened: deadlines a script
        # checks against Redis's TIME are stated in Redis's clock.
        self.reached = Server()  # the Redis process the current connection reached: its clock, its run_id
        self._waits = SharedWait(self.execute)

    async def execute(self, *args: Any) -> Any:
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        packed = hiredis.pack_command(args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((packed, future))
        return await future

    async def run(self, script: LuaScript, keys: list[str], args: list[Any]) -> Any:
        return await run_script(self.execute, script, keys, args)

    async def connected(self) -> None:
        """Open the connection if it is not open, so that ``reached`` is measured; raises as commands do."""
        if self._protocol is None:
            await self.execute("PING")

    async def server(self, key: str) -> Server:
        await self.connected()
        return self.reached

    async def wait_replicas(self, key: str, replicas: int, timeout_ms: int) -> int:
        return await self._waits.wait(replicas, timeout_ms)

    async def execute_asking(self, *args: Any) -> Any:
        """ASKING, then the command, in the same write: a cluster node importing the key's slot runs it."""
        if self._closed:
            raise RedisConnectionError("the Redis connection is closed")
        loop = asyncio.get_running_loop()
        asking, future = loop.create_future(), loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((hiredis.pack_command(("ASKING",)), asking))
        self._queue.append((hiredis.pack_command(args), future))
        await asking
        return await future

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("the Redis connection is closed"))
        self._fail_queue(RedisConnectionError("the Redis connection is closed"))

    # -- sending ---------------------------------------------------------------------

    def _flush(self) -> None:
        if not self._queue:
            return
        if self._protocol is not None:
            queue, self._queue = self._queue, []
            self._send(self._protocol, queue)
        elif self._connecting is None and not self._closed:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # else: queued commands go out once the connection is up (or fail with it)

    def _send(self, protocol: _Protocol, queue: list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        protocol.send(b"".join(packed for packed, _ in queue), [future for _, future in queue])
        if self._watchdog is None:
            self._answered_at_check = protocol.answered
            self._watchdog = asyncio.get_running_loop().call_later(self._reply_timeout, self._check, protocol)

    def _check(self, protocol: _Protocol) -> None:
        """Commands waited a whole reply_timeout and nothing came back: the connection is dead."""
        self._watchdog = None
        if protocol is not self._protocol or not protocol.waiting:
            return
        if protocol.answered == self._answered_at_check:
            logger.warning("redis answered nothing for %g s; dropping the connection", self._reply_timeout)
            protocol.abort(RedisTimeoutError(f"no reply from Redis within {self._reply_timeout:g} s"))
            return
        self._answered_at_check = protocol.answered
        self._watchdog = asyncio.get_running_loop().call_later(self._reply_timeout, self._check, protocol)

    # -- connecting ------------------------------------------------------------------

    async def _connect(self) -> None:
        """Open and introduce a connection; on failure, fail what waited for it (the next command tries again)."""
        try:
            async with asyncio.timeout(self._connect_timeout):
                protocol = await self._open()
                try:
                    await self._introduce(protocol)
                except BaseException:
                    protocol.abort(RedisConnectionError("connection setup failed"))
                    raise
        except TimeoutError:
            self._fail_queue(RedisTimeoutError(f"no connection to Redis within {self._connect_timeout:g} s"))
            return
        except Exception as exc:
            self._fail_queue(exc)
            return
        except asyncio.CancelledError:  # aclose()
            self._fail_queue(RedisConnectionError("the Redis connection is closed"))
            raise
        finally:
            self._connecting = None
        self._protocol = protocol
        if self._queue:
            self._flush()

    async def _open(self) -> _Protocol:
        return await self._endpoint.open(lambda: _Protocol(self._lost))

    async def _introduce(self, protocol: _Protocol) -> None:
        """AUTH and SELECT as the URL asks, before any queued command; then Redis's clock, against ours."""
        commands = self._endpoint.login()
        if self._endpoint.database:
            commands.append(("SELECT", self._endpoint.database))
        if self._expect_master:
            commands.append(("ROLE",))
        if self._replicated:
            commands.append(("INFO", "server"))
        commands.append(("TIME",))
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        sent = time.time()
        protocol.send(b"".join(hiredis.pack_command(command) for command in commands), futures)
        for future in futures:
            await future
        if self._expect_master:
            role = futures[-2 - self._replicated].result()
            if not role or role[0] != "master":
                raise RedisConnectionError(f"the server is a {role[0] if role else 'stranger'}, not the master")
        run_id = _run_id(futures[-2].result()) if self._replicated else ""
        seconds, microseconds = futures[-1].result()
        local_ms = (sent + time.time()) / 2 * 1000  # the middle of the round trip
        self.reached = Server(round(int(seconds) * 1000 + int(microseconds) / 1000 - local_ms), run_id)

    def _lost(self, protocol: _Protocol) -> None:
        if protocol is self._protocol:
            self._protocol = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _fail_queue(self, exc: Exception) -> None:
        queue, self._queue = self._queue, []
        for _, future in queue:
            if not future.done():
                future.set_exception(exc)


def _run_id(info: str) -> str:
    for line in info.splitlines():
        if line.startswith("run_id:"):
            return line[len("run_id:"):].strip()
    return ""
