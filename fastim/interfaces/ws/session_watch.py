"""Sockets live no longer than the login token they were opened with.

A socket opened under ``login_auth`` is closed (the text ``440``, then close
code 4440) within a second of its token ending: a logout or a new login of the
user (announced to every node as a notice), or the token's expiry (a check at
the time it is due to expire; HTTP calls may have renewed it meanwhile). A
token changed by a program that announces nothing (a fast-im Java node) is
noticed at the next periodic check. While the storage does not answer,
sockets stay open and the check is retried.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from collections.abc import Coroutine, Iterable
from typing import Any, Protocol

from fastim.domain.errors import StorageUnavailable
from fastim.domain.model import Notice, SessionsChanged
from fastim.domain.ports import Broker
from fastim.domain.sessions import Sessions

logger = logging.getLogger(__name__)

# A token replaced by a program that announces nothing is noticed within this; one storage call
# per distinct token per minute, pipelined with everything else.
RECHECK_S = 60.0
# Storage unavailable: sockets stay open and the token is looked at again this soon.
RETRY_S = 2.0
# A token due to expire is checked just after its deadline, when Redis has surely dropped it.
EXPIRY_MARGIN_S = 0.05

_Key = tuple[str, str]  # (userId, token)


class Endable(Protocol):
    def end_login(self) -> None:
        """The socket's token ended: tell the client and close."""


class SessionWatch:
    def __init__(self, sessions: Sessions, broker: Broker, recheck_s: float = RECHECK_S) -> None:
        self._sessions = sessions
        self._broker = broker
        self._recheck_s = recheck_s
        self._sockets: dict[_Key, set[Endable]] = {}
        self._tokens_of: dict[str, set[str]] = {}  # userId -> tokens watched
        self._due_at: dict[_Key, float] = {}  # loop time of each token's next check
        self._heap: list[tuple[float, _Key]] = []  # the same, ordered; stale entries are skipped
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._listening = False
        self._tasks: set[asyncio.Task[None]] = set()
        broker.on_resume(self._on_resume)

    def __len__(self) -> int:
        return len(self._sockets)

    async def add(self, socket: Endable, user_id: str, token: str, lives_s: float) -> None:
        """Watch ``socket``, opened with ``token`` that lives ``lives_s`` more seconds."""
        key = (user_id, token)
        sockets = self._sockets.get(key)
        if sockets is None:
            sockets = self._sockets[key] = set()
            self._tokens_of.setdefault(user_id, set()).add(token)
            self._schedule(key, min(lives_s + EXPIRY_MARGIN_S, self._recheck_s))
        sockets.add(socket)
        if not self._listening:  # the first socket: from now on this node hears of every token change
            self._listening = True
            await self._broker.watch_notices(self._on_notice)

    def discard(self, socket: Endable, user_id: str, token: str) -> None:
        key = (user_id, token)
        sockets = self._sockets.get(key)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            self._forget(key)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in tuple(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _forget(self, key: _Key) -> None:
        self._sockets.pop(key, None)
        self._due_at.pop(key, None)
        tokens = self._tokens_of.get(key[0])
        if tokens is not None:
            tokens.discard(key[1])
            if not tokens:
                del self._tokens_of[key[0]]

    # -- when to look -------------------------------------------------------------------

    def _schedule(self, key: _Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + max(delay, EXPIRY_MARGIN_S)
        self._due_at[key] = due
        heapq.heappush(self._heap, (due, key))
        if due < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = due
            self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = asyncio.get_running_loop().time()
        due: list[_Key] = []
        while self._heap and self._heap[0][0] <= now:
            at, key = heapq.heappop(self._heap)
            if self._due_at.get(key) == at:
                del self._due_at[key]
                due.append(key)
        if self._heap:
            self._timer_at = self._heap[0][0]
            self._timer = asyncio.get_running_loop().call_at(self._timer_at, self._on_timer)
        if due:
            self._spawn(self._check(due))

    def _on_notice(self, notice: Notice) -> None:
        if not isinstance(notice, SessionsChanged):
            return  # a disconnect closes the user's sockets by itself (Disconnects)
        tokens = self._tokens_of.get(notice.user_id)
        if tokens:
            self._spawn(self._check([(notice.user_id, token) for token in tokens]))

    def _on_resume(self, groups: frozenset[str]) -> None:
        # Notices sent while the broker was away were lost: look at every token now.
        if self._sockets:
            self._spawn(self._check(list(self._sockets)))

    # -- looking -------------------------------------------------------------------------

    async def _check(self, keys: Iterable[_Key]) -> None:
        keys = list(keys)
        results = await asyncio.gather(
            *(self._sessions.remaining(user_id, token) for user_id, token in keys), return_exceptions=True
        )
        for key, result in zip(keys, results):
            if key not in self._sockets:
                continue  # its sockets closed meanwhile
            if isinstance(result, StorageUnavailable):
                self._schedule(key, RETRY_S)
            elif isinstance(result, BaseException):
                logger.error("checking a login token failed", exc_info=result)
                self._schedule(key, RETRY_S)
            elif result is None:
                self._end(key)
            else:
                self._schedule(key, min(result + EXPIRY_MARGIN_S, self._recheck_s))

    def _end(self, key: _Key) -> None:
        sockets = self._sockets.get(key, set())
        self._forget(key)
        logger.info("login of user %s ended; closing %d sockets opened with it", key[0], len(sockets))
        for socket in tuple(sockets):
            try:
                socket.end_login()
            except Exception:
                logger.exception("closing a socket whose login ended failed")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
