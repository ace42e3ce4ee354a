"""A chat room: ``send()`` answered by the node's ack, ``async for`` every event once and in order, resumed.

The socket is opened with ``?ack=1``: the node answers every text frame, in
the order sent, with ``{"event":"ack","id","seq","ts"}`` once the message is
stored or an error frame ``{"code","msg"}``; answers are matched to sends in
that order, so several sends may await their answers at once. After a lost
connection the chat reconnects with ``?since=<seq>&epoch=<epoch>`` of the last
event it yielded, and lets each event through once by (epoch, seq).

**A consumer that falls behind.** Events wait in a buffer of
``queue_size`` events. When it is full the chat stops taking events from the
connection, lets the sends in flight be answered (for up to ``answer_timeout``),
closes the connection, waits until the consumer has read half the buffer, and
resumes from the last event it buffered: the node lists what was missed, so
nothing is lost (unless more than ``recover_max`` events went by meanwhile:
then a :class:`NotRecovered` says so). Presence and status events that find
the buffer full are dropped; they are not part of the group's stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from urllib.parse import quote, urlencode

from websockets.exceptions import ConnectionClosed

from fastim.client import parsing
from fastim.client.cursor import Cursor
from fastim.client.errors import ConnectionLost, FastimError, NotSent, SendError
from fastim.client.events import ChatEvent, Joined, Left, Message, NotRecovered, Notice, Opened, Presence, Recall
from fastim.client.stream import Stream, StreamOptions

Credentials = Callable[[], tuple[str, str]]  # (userId, token) for the next connection


class Chat(Stream[ChatEvent]):
    """``/group/chat/{groupId}/{userId}/{token}?ack=1``, kept open across reconnects.

    Iterate it for :class:`Message`, :class:`Recall`, :class:`Joined`,
    :class:`Left`, :class:`Presence`, :class:`Opened`, :class:`NotRecovered`,
    :class:`Disconnected` and :class:`Notice` events. Iteration ends with
    :class:`~fastim.client.errors.FinalClose` (a subclass per close code) when
    the node closes the socket for good, and stops after :meth:`close`.
    """

    def __init__(
        self,
        ws_base: str,
        group_id: str,
        credentials: Credentials,
        options: StreamOptions,
        *,
        since: int | None = None,
        epoch: str | None = None,
    ) -> None:
        super().__init__(ws_base, options)
        self.group_id = group_id
        self._credentials = credentials
        self._cursor = Cursor(epoch, since)
        self._pending: deque[tuple[asyncio.Future[Message], str]] = deque()  # written, not answered yet
        self._send_lock = asyncio.Lock()  # a send is queued for its answer and written in one step
        self._opened_before = False
        self._behind_since: float | None = None  # when the buffer filled on this connection

    @property
    def user_id(self) -> str:
        return self._credentials()[0]

    @property
    def position(self) -> tuple[str | None, int | None]:
        """(epoch, seq) of the last event yielded or buffered: where a resume would start."""
        return self._cursor.epoch, self._cursor.seq

    def path(self) -> str:
        user_id, token = self._credentials()
        query = {**self._cursor.resume_query(), "ack": "1"}
        segments = "/".join(quote(part, safe="") for part in (self.group_id, user_id, token or "-"))
        return f"/group/chat/{segments}?{urlencode(query)}"

    # -- sending ---------------------------------------------------------------------------

    async def send(self, text: str) -> Message:
        """Send ``text`` as a message; the stored message once the node acked it.

        Raises :class:`~fastim.client.errors.SendError` with the node's code and
        msg when it refused the frame (413 too large, 429 too fast, 403 rejected
        by the application, 503 not stored, 504 maybe stored: see
        ``maybe_stored``); :class:`~fastim.client.errors.ConnectionLost` when the
        connection dropped before the answer (the message may or may not be
        stored; it is never sent again by itself); :class:`~fastim.client.errors.NotSent`
        when the chat is closed or found no connection within ``send_timeout``.
        The node's echo of the message is yielded by the iterator as any message.
        """
        if not isinstance(text, str):
            raise TypeError("a message is a str")
        options = self.options
        async with self._send_lock:
            ws = await self.connection(options.send_timeout)
            if ws is None:
                raise NotSent(str(self.error) if self.error else
                              "the chat is closed" if self.closed else
                              f"not connected within {options.send_timeout:g} s; the message was not sent")
            future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
            self._pending.append((future, text))
            try:
                await ws.send(text)
            except ConnectionClosed:
                pass  # it broke mid-write: on_lost fails the future with ConnectionLost
        try:
            return await asyncio.wait_for(asyncio.shield(future), options.answer_timeout)
        except TimeoutError:
            # Answers come in order: one missing means the node stopped answering this connection.
            self.abandon(ws, ConnectionLost(f"no answer within {options.answer_timeout:g} s; the message may or "
                                            "may not have been stored"))
            return await future

    def on_lost(self, error: FastimError) -> None:
        self._behind_since = None
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error if isinstance(error, SendError) else ConnectionLost())
                future.exception()  # a send cancelled by its caller leaves nobody to read it

    def _answer(self, frame: parsing.Ack | parsing.ErrorFrame | parsing.Refreshed) -> None:
        """The node's answer to the oldest send still waiting (answers come in the order sent)."""
        if not self._pending:
            if isinstance(frame, parsing.ErrorFrame):
                self.notify(Notice(frame.code, frame.msg))
            else:
                self.skip("an answer to no send")
            return
        future, text = self._pending.popleft()
        if future.done():
            return  # its caller cancelled the send
        if isinstance(frame, parsing.Ack):
            user_id = self._credentials()[0]
            future.set_result(Message(self.group_id, user_id, text, frame.ts, frame.id, frame.seq))
        elif isinstance(frame, parsing.Refreshed):  # a socket opened with a JWT took '{"refresh":...}' as one
            future.set_exception(SendError(None, "the node took this text as a token refresh, not as a message"))
        else:
            future.set_exception(SendError(frame.code, frame.msg, maybe_stored=frame.code == 504))

    # -- receiving -------------------------------------------------------------------------

    def on_text(self, text: str) -> None:
        try:
            frame = parsing.chat_frame(text)
        except parsing.Malformed as exc:
            self.skip(f"a malformed frame ({exc})")
            return
        if isinstance(frame, (parsing.Ack, parsing.ErrorFrame, parsing.Refreshed)):
            self._answer(frame)
        elif isinstance(frame, parsing.Opening):
            self._open(frame)
        elif isinstance(frame, (Message, Recall)):
            if frame.group_id == self.group_id:
                self._take(frame)
            else:
                self.skip("an event of another group")
        elif isinstance(frame, (Joined, Left, Presence)):
            self.notify(frame)
        # None (an event this SDK does not know) and the bare 440 (its close follows) are passed over

    def _take(self, event: Message | Recall) -> bool:
        """Buffer a stream event if it is new; False when the buffer is full (and nothing more is taken)."""
        if self._behind_since is not None:
            return False
        if not self.has_room():
            self._behind_since = asyncio.get_running_loop().time()
            self.fell_behind()
            return False
        if self._cursor.admit(event):
            self.deliver(event)
        return True

    def _open(self, opening: parsing.Opening) -> None:
        cursor = self._cursor
        since, epoch = cursor.seq, cursor.epoch
        events = tuple(e for e in opening.events if e.group_id == self.group_id)
        if not self.has_room(2):
            self._behind_since = asyncio.get_running_loop().time()
            self.fell_behind()
            return
        self.deliver(Opened(self.group_id, events, opening.total, opening.seq, opening.epoch, opening.recovered,
                            resumed=self._opened_before))
        if opening.recovered is False:
            self.deliver(NotRecovered(self.group_id, since or 0, epoch, opening.epoch))
        self._opened_before = True
        cursor.begin(opening.epoch, opening.seq)
        if all(self._take(event) for event in events):
            cursor.settle(opening.epoch, opening.seq)
        self.opened(ready=self._behind_since is None)  # a connection the consumer fell behind on takes no sends

    def wants_out(self) -> bool:
        if self._behind_since is None:
            return False
        return not self._pending or self.patience() <= 0

    def patience(self) -> float | None:
        if self._behind_since is None:
            return None
        return max(0.0, self._behind_since + self.options.answer_timeout - asyncio.get_running_loop().time())
