"""SessionWatch: sockets end with the login token they were opened with, and only then."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.errors import StorageUnavailable
from fastim.domain.model import SessionsChanged
from fastim.domain.sessions import Sessions
from fastim.infrastructure.auth import AcceptAnyPassword
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import MemoryTokenRepository
from fastim.interfaces.ws.session_watch import SessionWatch


class FakeSocket:
    def __init__(self) -> None:
        self.ended = 0

    def end_login(self) -> None:
        self.ended += 1


class Broker(MemoryBroker):
    """The memory broker, with the resume hook a test can fire."""

    def __init__(self) -> None:
        super().__init__()
        self.resume_listeners = []

    def on_resume(self, listener) -> None:
        self.resume_listeners.append(listener)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def broker():
    return Broker()


@pytest.fixture
def sessions(clock, broker):
    return Sessions(MemoryTokenRepository(clock), AcceptAnyPassword(), broker, token_ttl=60, login_auth=True)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.gen_test
async def test_a_logout_ends_the_sockets_of_that_token_only(sessions, broker):
    watch = SessionWatch(sessions, broker)
    token, other = await sessions.login("u1", "pw"), await sessions.login("u2", "pw")
    first, second, bystander = FakeSocket(), FakeSocket(), FakeSocket()
    await watch.add(first, "u1", token, 60)
    await watch.add(second, "u1", token, 60)
    await watch.add(bystander, "u2", other, 60)
    await sessions.logout("u1", token)
    await settle()
    assert (first.ended, second.ended, bystander.ended) == (1, 1, 0)
    assert len(watch) == 1
    await watch.close()


@pytest.mark.gen_test
async def test_a_new_login_ends_the_old_tokens_sockets(sessions, broker):
    watch = SessionWatch(sessions, broker)
    old = await sessions.login("u1", "pw")
    socket = FakeSocket()
    await watch.add(socket, "u1", old, 60)
    new = await sessions.login("u1", "pw")
    await settle()
    assert socket.ended == 1
    fresh = FakeSocket()
    await watch.add(fresh, "u1", new, 60)
    await broker.notify(SessionsChanged("u1"))  # the same token is still the user's: nothing ends
    await settle()
    assert fresh.ended == 0
    await watch.close()


@pytest.mark.gen_test
async def test_a_token_is_checked_when_it_is_due_to_expire(sessions, broker, clock):
    watch = SessionWatch(sessions, broker)
    token = await sessions.login("u1", "pw")
    socket = FakeSocket()
    await watch.add(socket, "u1", token, 0.1)  # says it lives 0.1 s more
    await asyncio.sleep(0.3)
    assert socket.ended == 0  # renewed meanwhile (the store still has 60 s): looked at, kept
    clock.advance(61)  # now the store has let it expire
    await broker.notify(SessionsChanged("u1"))
    await settle()
    assert socket.ended == 1
    await watch.close()


@pytest.mark.gen_test
async def test_a_discarded_socket_is_forgotten(sessions, broker):
    watch = SessionWatch(sessions, broker)
    token = await sessions.login("u1", "pw")
    socket = FakeSocket()
    await watch.add(socket, "u1", token, 60)
    watch.discard(socket, "u1", token)
    assert len(watch) == 0
    await sessions.logout("u1", token)
    await settle()
    assert socket.ended == 0
    await watch.close()


@pytest.mark.gen_test
async def test_while_storage_is_away_sockets_stay_and_the_check_is_retried(sessions, broker, monkeypatch):
    watch = SessionWatch(sessions, broker)
    token = await sessions.login("u1", "pw")
    socket = FakeSocket()
    await watch.add(socket, "u1", token, 60)

    async def away(user_id, token):
        raise StorageUnavailable("redis is away")

    monkeypatch.setattr(sessions, "remaining", away)
    await broker.notify(SessionsChanged("u1"))
    await settle()
    assert socket.ended == 0 and len(watch) == 1
    await watch.close()


@pytest.mark.gen_test
async def test_after_a_broker_outage_every_token_is_looked_at_again(sessions, broker, clock):
    watch = SessionWatch(sessions, broker)
    token = await sessions.login("u1", "pw")
    socket = FakeSocket()
    await watch.add(socket, "u1", token, 60)
    await sessions._tokens.revoke("u1", token)  # logged out while the notice could not get through
    for listener in broker.resume_listeners:
        listener(frozenset())
    await settle()
    assert socket.ended == 1
    await watch.close()
