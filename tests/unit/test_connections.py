"""Connections: every open socket by kind, and by user for /api/disconnect."""

from __future__ import annotations

from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.connections import Connections


class FakeSocket:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.closed_with: tuple[int, str] | None = None

    def close(self, code=None, reason=None) -> None:
        self.closed_with = (code, reason)


def test_a_users_sockets_are_found_closed_and_forgotten_one_or_many():
    connections = Connections(Metrics(object()))
    a1, a2, a3, b = FakeSocket("a"), FakeSocket("a"), FakeSocket("a"), FakeSocket("b")
    for socket in (a1, a2, a3, b):
        connections.add("chat", socket)
        connections.identify(socket, socket.user_id)
    connections.identify(b, "b")  # twice: still one
    assert connections.of_user("b") == [b]
    assert set(connections.of_user("a")) == {a1, a2, a3}
    connections.discard("chat", a1)
    connections.discard("chat", a2)
    assert connections.of_user("a") == [a3]
    connections.identify(a1, "a")
    assert set(connections.of_user("a")) == {a1, a3}
    assert connections.close_user("a", 4403, "bye") == 2
    assert a1.closed_with == a3.closed_with == (4403, "bye") and b.closed_with is None
    for socket in (a1, a3, b):
        connections.discard("chat", socket)
    assert connections.of_user("a") == connections.of_user("b") == [] and connections.count() == 0
    assert connections.close_user("nobody", 4403, "bye") == 0
