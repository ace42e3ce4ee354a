"""Every open socket of this node, by kind: what shutdown closes and what the gauge counts."""

from __future__ import annotations

from typing import Protocol

from fastim.interfaces.metrics import Metrics


class Closable(Protocol):
    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Connections:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._sockets: dict[str, set[Closable]] = {"chat": set(), "list": set()}
        # Sockets whose user was admitted, by userId: the socket itself while it is the user's only
        # one (most users have one; a set costs 200 bytes more per socket), a set once there are more.
        self._by_user: dict[str, Closable | set[Closable]] = {}

    def add(self, kind: str, socket: Closable) -> None:
        sockets = self._sockets[kind]
        if socket not in sockets:
            sockets.add(socket)
            self._metrics.open_sockets.labels(kind).inc()

    def discard(self, kind: str, socket: Closable) -> None:
        sockets = self._sockets[kind]
        if socket in sockets:
            sockets.discard(socket)
            self._metrics.open_sockets.labels(kind).dec()
        user_id = getattr(socket, "user_id", None)
        mine = self._by_user.get(user_id) if user_id is not None else None
        if mine is socket:
            del self._by_user[user_id]
        elif isinstance(mine, set):
            mine.discard(socket)
            if len(mine) == 1:
                self._by_user[user_id] = next(iter(mine))

    def identify(self, socket: Closable, user_id: str) -> None:
        """Index an open socket under its user (its ``user_id`` attribute must say the same)."""
        mine = self._by_user.get(user_id)
        if mine is None:
            self._by_user[user_id] = socket
        elif isinstance(mine, set):
            mine.add(socket)
        elif mine is not socket:
            self._by_user[user_id] = {mine, socket}

    def of_user(self, user_id: str) -> list[Closable]:
        mine = self._by_user.get(user_id)
        if mine is None:
            return []
        return list(mine) if isinstance(mine, set) else [mine]

    def close_user(self, user_id: str, code: int, reason: str) -> int:
        """Close every socket of the user on this node; how many."""
        closing = self.of_user(user_id)
        for socket in closing:
            socket.close(code, reason)
        return len(closing)

    def snapshot(self) -> list[Closable]:
        """Every open socket, as a list that stays the same while sockets come and go."""
        return [socket for sockets in self._sockets.values() for socket in sockets]

    def count(self, kind: str | None = None) -> int:
        if kind is not None:
            return len(self._sockets[kind])
        return sum(len(sockets) for sockets in self._sockets.values())

    def close_all(self, code: int, reason: str) -> int:
        """Close every socket (e.g. 1001 on shutdown, so clients reconnect elsewhere); how many."""
        closing = self.snapshot()
        for socket in closing:
            socket.close(code, reason)
        return len(closing)
