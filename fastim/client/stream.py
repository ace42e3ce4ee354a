"""One logical socket over successive WebSocket connections: reconnects, a bounded buffer, an async iterator.

The chat and group-list streams build on it. It connects, hands every text
frame to the subclass, and when the connection is lost it reconnects with
capped exponential backoff and full jitter, until the node closes it with a
final code or the caller closes it. What the subclass delivers waits in a
buffer of at most ``queue_size`` events for the caller's ``async for``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from fastim.client.backoff import Backoff, BackoffPolicy
from fastim.client.errors import (
    CLOSE_TOO_BIG,
    ConnectionLost,
    FastimError,
    FinalClose,
    PolicyViolation,
    Unreachable,
    final_close,
)
from fastim.client.events import Disconnected

logger = logging.getLogger(__name__)

E = TypeVar("E")

# HTTP statuses of a refused handshake worth retrying: overloaded, or a proxy whose upstream restarts.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CLOSE_NORMAL = 1000
# A send woken for a connection that was lost before it ran looks again after this long.
RELOOK_S = 0.01


@dataclass(frozen=True)
class StreamOptions:
    """Bounds and timing of a stream; the defaults suit a chat client on a LAN or the internet."""

    # The largest frame accepted from the node. A resume that recovers recover_max (1000) events of
    # max_message_bytes (4096) is about 4 MiB; a larger frame ends the stream (PolicyViolation, 1009).
    max_frame_bytes: int = 16 * 1024 * 1024
    # Events buffered for a consumer that reads slower than the group talks; see Chat for what happens
    # when the buffer is full.
    queue_size: int = 10_000
    open_timeout: float = 10.0  # to connect and receive the opening frame
    answer_timeout: float = 30.0  # for the node to answer a send (ack or error frame)
    send_timeout: float = 30.0  # for a send made while reconnecting to find a connection
    ping_interval: float | None = 20.0  # the SDK's own pings; the node pings too
    ping_timeout: float | None = 20.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    def __post_init__(self) -> None:
        if self.queue_size < 16:
            raise ValueError("queue_size must be at least 16")
        if self.max_frame_bytes < 1024:
            raise ValueError("max_frame_bytes must be at least 1024")


class Lost(Exception):
    """Why a connection ended: its close code (None: it broke or never opened) and reason."""

    def __init__(self, code: int | None, reason: str, final: FinalClose | None = None, *, ours: bool = False) -> None:
        super().__init__(f"{code} {reason}" if code is not None else reason)
        self.code = code
        self.reason = reason
        self.final = final  # set when the way it ended is already known to be final
        self.ours = ours  # the SDK closed it (a frame over the bound, no pong), not the node


class Stream(Generic[E]):
    """Reconnects, buffers, iterates. Subclasses implement :meth:`path`, :meth:`on_text` and may hook the rest."""

    def __init__(self, ws_base: str, options: StreamOptions) -> None:
        self.ws_base = ws_base
        self.options = options
        self.skipped_frames = 0  # frames from the node that were malformed or answered nothing
        self._items: deque[E] = deque()
        self._wakeup = asyncio.Event()  # something was buffered, or the stream ended
        self._room = asyncio.Event()  # the buffer drained to half after it had filled
        self._room.set()
        self._end: BaseException | None = None  # set once: FinalClose, or StopAsyncIteration after close()
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()  # the current connection has opened (its opening frame was handled)
        self._backoff = Backoff(options.backoff)
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._leaving: set[asyncio.Task[None]] = set()  # closes of abandoned connections, held until done

    # -- what subclasses provide -----------------------------------------------------------

    def path(self) -> str:
        """The socket's path and query, for the next connection."""
        raise NotImplementedError

    def on_text(self, text: str) -> None:
        """One text frame of the current connection."""
        raise NotImplementedError

    def on_lost(self, error: FastimError) -> None:
        """The current connection ended (``error`` says how): fail what waited on it."""

    def wants_out(self) -> bool:
        """Whether the current connection should be closed now (and resumed when there is room)."""
        return False

    def patience(self) -> float | None:
        """How long to wait for the next frame before asking :meth:`wants_out` again; None: as long as it takes."""
        return None

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and wait for the opening: raises :class:`Unreachable` or :class:`FinalClose` if that fails."""
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"fastim-client {type(self).__name__}")
        try:
            await self._first
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the socket and stop reconnecting; what was buffered can still be read, then iteration stops."""
        if self._end is None:
            self._end = StopAsyncIteration()
        if self._first is not None and not self._first.done():
            self._first.set_exception(FastimError("closed before it opened"))
        self._wakeup.set()
        self._ready.set()  # senders waiting for a connection see the end at once
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the task's outcome is in _end
                pass

    @property
    def closed(self) -> bool:
        """Whether the stream has ended (closed by the caller, or finally by the node)."""
        return self._end is not None

    @property
    def error(self) -> FinalClose | None:
        """The final close that ended the stream, if the node ended it."""
        return self._end if isinstance(self._end, FinalClose) else None

    async def __aenter__(self) -> Stream[E]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the iterator ----------------------------------------------------------------------

    def __aiter__(self) -> Stream[E]:
        return self

    async def __anext__(self) -> E:
        while not self._items:
            if self._end is not None:
                raise self._end if isinstance(self._end, FinalClose) else StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        item = self._items.popleft()
        if len(self._items) <= self.options.queue_size // 2:
            self._room.set()
        return item

    # -- buffering -------------------------------------------------------------------------

    def has_room(self, count: int = 1) -> bool:
        return len(self._items) + count <= self.options.queue_size

    def deliver(self, item: E) -> None:
        """Buffer one event; the caller checked :meth:`has_room`."""
        self._items.append(item)
        self._wakeup.set()

    def notify(self, item: E) -> bool:
        """Buffer a best-effort event (status, presence): dropped when the buffer is full."""
        if not self.has_room():
            return False
        self.deliver(item)
        return True

    def replace_oldest(self, item: E) -> None:
        """Buffer ``item``, dropping the oldest buffered event when full (for pushes where the newest wins)."""
        if not self.has_room():
            self._items.popleft()
        self.deliver(item)

    def fell_behind(self) -> None:
        """The buffer is full: the connection will be closed and resumed once the consumer caught up."""
        self._room.clear()

    # -- connections -----------------------------------------------------------------------

    def opened(self, *, ready: bool = True) -> None:
        """The subclass handled the opening frame of the current connection; ``ready``: sends may use it."""
        if ready:
            self._ready.set()
        self._backoff.reset()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    async def connection(self, timeout: float) -> ClientConnection | None:
        """The current connection once it has opened, waiting up to ``timeout``; None if the stream ended.

        A connection that opened and was lost again before this waiter ran is
        waited past: the next one counts, within the same ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._end is None:
            ws = self._ws
            if ws is not None and self._ready.is_set():
                return ws
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return None
            if self._ws is None and self._end is None:
                # Woken for a connection already lost: its loss clears the event; look again shortly.
                await asyncio.sleep(RELOOK_S)
        return None

    def abandon(self, ws: ClientConnection, error: FastimError) -> None:
        """Give up on ``ws`` (it stopped answering): fail what waits on it now, close it, reconnect."""
        if ws is not self._ws:
            return
        self._ready.clear()
        self.on_lost(error)
        self._ws = None  # its remaining frames are not taken
        leaving = asyncio.get_running_loop().create_task(_leave(ws, "no answer; reconnecting"))
        self._leaving.add(leaving)
        leaving.add_done_callback(self._leaving.discard)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug of ours must end the stream, not hang its reader
            logger.exception("fastim client: a %s stream failed", type(self).__name__)
            self._finish(FastimError(f"the client stream failed: {exc!r}"))
        finally:
            ws, self._ws = self._ws, None
            self._ready.set()  # the stream has ended: senders waiting for a connection see it at once
            if ws is not None:
                await _close_quietly(ws)
            self.on_lost(ConnectionLost("the stream was closed before the node answered; the message may or may "
                                        "not have been stored"))

    async def _loop(self) -> None:
        while self._end is None:
            try:
                await self._connect_and_serve()
                lost = None if self._end is not None else Lost(None, "closed")
            except Lost as exc:
                lost = exc
            if lost is None:
                return
            final = self._final(lost)
            if final is not None or not self._first.done():
                self._finish(final or Unreachable(f"cannot reach {self.ws_base}: {lost}"))
                return
            if not self._room.is_set():  # the consumer fell behind: resume once it has caught up
                await self._room.wait()
                self.notify(Disconnected(lost.code, lost.reason, 0, 0.0))
                continue
            delay = self._backoff.next()
            self.notify(Disconnected(lost.code, lost.reason, self._backoff.attempt, delay))
            await asyncio.sleep(delay)

    def _final(self, lost: Lost) -> FinalClose | None:
        if lost.final is not None or lost.code is None:
            return lost.final
        if lost.code == CLOSE_TOO_BIG and lost.ours:
            return PolicyViolation(CLOSE_TOO_BIG, f"a frame from the node was over {self.options.max_frame_bytes} "
                                                  "bytes (max_frame_bytes)")
        return final_close(lost.code, lost.reason)

    def _finish(self, end: BaseException) -> None:
        if self._end is None:
            self._end = end
        if self._first is not None and not self._first.done():
            self._first.set_exception(end)
        self._wakeup.set()
        self._ready.set()  # senders waiting for a connection see the end at once

    async def _connect_and_serve(self) -> None:
        """One connection, from handshake to close; raises :class:`Lost` with why it ended."""
        options = self.options
        url = self.ws_base + self.path()
        try:
            ws = await connect(
                url, max_size=options.max_frame_bytes, open_timeout=options.open_timeout,
                ping_interval=options.ping_interval, ping_timeout=options.ping_timeout,
                close_timeout=5.0, max_queue=64,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = f"HTTP {status} refused the WebSocket"
            raise Lost(None, reason, None if status in RETRY_STATUSES else FinalClose(status, reason)) from None
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise Lost(None, str(exc) or type(exc).__name__) from None
        self._ws = ws
        try:
            await self._serve(ws)
        finally:
            if self._ws is ws:
                self._ws = None
                self._ready.clear()
            await _close_quietly(ws)
            self.on_lost(ConnectionLost())
        raise _why(ws)

    async def _serve(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.open_timeout
        while self._ws is ws:
            if self.wants_out():
                await _leave(ws, "reading too slowly; will resume")
                return
            waiting = self.patience()
            if not self._ready.is_set():
                waiting = deadline - loop.time()
                if waiting <= 0:
                    await _leave(ws, "no opening frame")
                    raise Lost(None, f"no opening frame within {self.options.open_timeout:g} s")
            try:
                frame = await asyncio.wait_for(ws.recv(), waiting)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if self._ws is not ws:
                return  # abandoned meanwhile
            if isinstance(frame, bytes):
                self.skip("a binary frame")
                continue
            self.on_text(frame)

    def skip(self, what: str) -> None:
        """A frame that is not the protocol's: counted, logged (the first at warning level), never fatal."""
        self.skipped_frames += 1
        level = logging.WARNING if self.skipped_frames == 1 else logging.DEBUG
        logger.log(level, "fastim client: skipped %s from the node (%d so far)", what[:200], self.skipped_frames)


def _why(ws: ClientConnection) -> Lost:
    """How a finished connection ended: the node's close, or the SDK's own."""
    protocol = ws.protocol
    rcvd, sent = protocol.close_rcvd, protocol.close_sent
    if sent is not None and (rcvd is None or protocol.close_rcvd_then_sent is False):  # the SDK closed first
        if sent.code == CLOSE_NORMAL:
            return Lost(None, sent.reason or "closed")
        return Lost(sent.code, sent.reason, ours=True)
    if rcvd is not None:
        return Lost(rcvd.code, rcvd.reason)
    return Lost(None, "the connection broke")


async def _leave(ws: ClientConnection, reason: str) -> None:
    """Close ``ws``, discarding what it still brings, so the close handshake is not stuck behind unread frames.

    The library stops reading a connection whose frames nobody takes; the
    node's answer to the close would wait behind them until close_timeout.
    """
    closing = asyncio.ensure_future(ws.close(CLOSE_NORMAL, reason))
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    await closing


async def _close_quietly(ws: ClientConnection) -> None:
    try:
        await _leave(ws, "")
    except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
        pass
