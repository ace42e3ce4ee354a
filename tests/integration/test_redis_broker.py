"""The standalone broker's pub/sub connection against a real redis-server: confirmations, bursts, a server that
misbehaves (replies held back, garbage, a reply cut in two), and every way of reaching Redis (TLS, unix socket,
password, ACL user).

A proxy between the broker and Redis (:class:`tests.redis_proxy.RedisProxy`) plays the misbehaving server;
what the broker sends always reaches the real one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time

import pytest
import redis.asyncio

from fastim.domain.model import Message, SessionsChanged
from fastim.infrastructure.redis.broker import RedisBroker
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.pipeline import PipelinedConnection
from tests.contract.conftest import wait_for
from tests.redis_proxy import RedisProxy
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.redis

T0 = 1_648_368_380_132
# Fast enough for a test to see several rounds of each.
QUICK = {"backoff_initial_seconds": 0.05, "backoff_cap_seconds": 0.2, "poll_s": 0.05}


@pytest.fixture
def proxy(fresh_redis, io_loop):
    proxy = RedisProxy(fresh_redis.port)
    io_loop.run_sync(proxy.start)
    yield proxy
    io_loop.run_sync(proxy.close)


@pytest.fixture
def brokers(fresh_redis, io_loop):
    """``brokers(url, **options)``: a RedisBroker receiving from ``url``, publishing straight to the test's Redis."""
    made: list = []

    def make(url: str, **options) -> RedisBroker:
        commands = PipelinedConnection(fresh_redis.url)
        broker = RedisBroker(Endpoint(url), commands, **options)
        made.append((broker, commands))
        return broker

    yield make

    async def close() -> None:
        for broker, commands in made:
            await broker.close()
            await commands.aclose()

    io_loop.run_sync(close)


@pytest.fixture
def raw(fresh_redis, io_loop):
    client = redis.asyncio.Redis.from_url(fresh_redis.url, decode_responses=True)
    yield client
    io_loop.run_sync(client.aclose)


class Inbox:
    def __init__(self) -> None:
        self.infos: list[str] = []

    def __call__(self, group_id, event) -> None:
        self.infos.append(event.info)


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "fastim.infrastructure.redis.broker" and record.levelno >= logging.WARNING]


# -- confirmations -------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_a_subscribe_returns_once_redis_confirmed_it(proxy, brokers, raw):
    broker = brokers(proxy.url())
    inbox = Inbox()
    await broker.subscribe("warm", inbox)  # the connection is open
    proxy.hold()
    subscribing = asyncio.ensure_future(broker.subscribe_many(["g1", "g2"], inbox))

    async def subscribed_on_redis() -> bool:
        return [count for _, count in await raw.pubsub_numsub("mq:g1", "mq:g2")] == [1, 1]

    await wait_for(subscribed_on_redis)
    await asyncio.sleep(0.3)
    assert not subscribing.done()  # Redis subscribed the channels; its confirmations are held back
    proxy.release()
    await asyncio.wait_for(subscribing, 2)
    assert broker.subscribed_groups == {"warm", "g1", "g2"}


@pytest.mark.gen_test(timeout=20)
async def test_once_subscribe_returns_redis_delivers_what_is_published(brokers, fresh_redis):
    broker = brokers(fresh_redis.url)
    inbox = Inbox()
    groups = [f"m{i}" for i in range(300)]
    await broker.subscribe_many(groups, inbox)
    publisher = PipelinedConnection(fresh_redis.url)
    try:  # no waiting for Redis: each channel already has its subscriber
        receivers = await asyncio.gather(*(publisher.execute("PUBLISH", f"mq:{g}", _payload(g, 0)) for g in groups))
    finally:
        await publisher.aclose()
    assert receivers == [1] * len(groups)
    await wait_for(lambda: len(inbox.infos) == len(groups))


@pytest.mark.gen_test(timeout=20)
async def test_a_confirmation_later_than_the_wait_lets_the_group_catch_up(proxy, brokers, caplog):
    broker = brokers(proxy.url(), subscribe_wait_s=0.2, **QUICK)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    await broker.subscribe("warm", Inbox())
    proxy.hold()
    began = time.monotonic()
    await broker.subscribe("late", Inbox())
    assert 0.15 < time.monotonic() - began < 1.5  # the caller went on after the wait
    assert any("did not confirm 1 of 1" in line for line in warnings_of(caplog))
    proxy.release()
    await wait_for(lambda: resumed == [frozenset({"late"})])
    assert broker.reconnects == 0 and broker.healthy


@pytest.mark.gen_test(timeout=20)
async def test_a_subscribe_left_unanswered_has_the_connection_replaced(proxy, brokers):
    broker = brokers(proxy.url(), subscribe_wait_s=0.1, reply_timeout_s=0.3, **QUICK)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    inbox = Inbox()
    await broker.subscribe("warm", inbox)
    proxy.hold()  # this connection's answers never come
    await broker.subscribe("g1", inbox)
    await wait_for(lambda: broker.reconnects == 1 and resumed == [frozenset({"warm", "g1"})])
    assert proxy.connections == 2 and broker.healthy
    await broker.publish(Message("g1", "u", "after", T0))
    await wait_for(lambda: inbox.infos == ["after"])


# -- many messages -------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_a_burst_reaches_every_listener_in_the_order_redis_pushed_it(brokers, fresh_redis):
    broker = brokers(fresh_redis.url)
    first, second = Inbox(), []

    async def later(group_id, event) -> None:  # an async listener: started in order, one task each
        second.append(event.info)

    await broker.subscribe("g", first)
    await broker.subscribe("g", later)
    publisher = PipelinedConnection(fresh_redis.url)
    try:
        # One loop turn: one write, so Redis pushes them back to back, many per read.
        await asyncio.gather(*(publisher.execute("PUBLISH", "mq:g", _payload("g", i)) for i in range(3000)))
    finally:
        await publisher.aclose()
    await wait_for(lambda: len(second) == 3000)
    assert first.infos == second == [str(i) for i in range(3000)]


def _payload(group_id: str, i: int) -> str:
    from fastim.domain.codec import encode_event

    return encode_event(Message(group_id, "u", str(i), T0 + i))


@pytest.mark.gen_test(timeout=20)
async def test_bad_payloads_are_dropped_and_the_rest_of_the_read_delivered(brokers, fresh_redis, caplog):
    broker = brokers(fresh_redis.url)
    inbox = Inbox()
    await broker.subscribe("g", inbox)
    publisher = PipelinedConnection(fresh_redis.url)
    bad = ["not json", "[" * 100_000 + "]" * 100_000, _payload("elsewhere", 1), '{"groupId":"g"}', "\ufffd"]
    try:
        await asyncio.gather(*(publisher.execute("PUBLISH", "mq:g", payload)
                               for payload in [_payload("g", 0), *bad, _payload("g", 2)]))
    finally:
        await publisher.aclose()
    await wait_for(lambda: inbox.infos == ["0", "2"])
    assert broker.reconnects == 0 and broker.healthy
    dropped = [r for r in caplog.records if "dropping an invalid payload" in r.getMessage()]
    assert len(dropped) == len(bad)


# -- a server that misbehaves --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_garbage_from_redis_has_the_connection_replaced_and_every_channel_subscribed_again(
    proxy, brokers, caplog
):
    broker = brokers(proxy.url(), **QUICK)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    inbox, notices = Inbox(), []
    await broker.subscribe_many(["g1", "g2"], inbox)
    await broker.watch_notices(notices.append)
    proxy.inject(b"\x00\x01 this is not RESP\r\n")
    await wait_for(lambda: broker.reconnects == 1 and resumed == [frozenset({"g1", "g2"})])
    assert broker.subscribed_groups == {"g1", "g2"} and broker.healthy
    await broker.publish(Message("g1", "u", "one", T0))
    await broker.publish(Message("g2", "u", "two", T0))
    await broker.notify(SessionsChanged("u1"))
    await wait_for(lambda: len(inbox.infos) == 2 and notices)
    assert sorted(inbox.infos) == ["one", "two"] and notices == [SessionsChanged("u1")]
    [warning] = warnings_of(caplog)
    assert "unreadable reply" in warning


@pytest.mark.gen_test(timeout=20)
async def test_a_connection_closed_mid_reply_delivers_nothing_of_that_reply_and_reconnects(proxy, brokers):
    broker = brokers(proxy.url(), **QUICK)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    inbox = Inbox()
    await broker.subscribe("g1", inbox)
    whole = b"*3\r\n$7\r\nmessage\r\n$5\r\nmq:g1\r\n$%d\r\n%s\r\n" % (
        len(_payload("g1", 0)), _payload("g1", 0).encode())
    proxy.inject(whole + whole[: len(whole) // 2])
    await wait_for(lambda: inbox.infos == ["0"])
    proxy.cut()
    await wait_for(lambda: broker.reconnects == 1 and resumed == [frozenset({"g1"})])
    await broker.publish(Message("g1", "u", "after", T0))
    await wait_for(lambda: inbox.infos == ["0", "after"])


@pytest.mark.gen_test(timeout=20)
async def test_a_server_that_only_sends_garbage_is_retried_with_capped_backoff_and_one_warning(brokers, caplog):
    accepted = []

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(time.monotonic())
        writer.write(b"%%% not redis %%%\r\n" * 100)
        await reader.read()  # until the broker hangs up
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    try:
        broker = brokers(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0",
                         backoff_initial_seconds=0.05, backoff_cap_seconds=0.2)
        began = time.monotonic()
        await broker.subscribe("g1", Inbox())
        assert time.monotonic() - began < 1.0  # the caller is not kept waiting for a broken server
        await asyncio.sleep(1.5)
        assert not broker.healthy and broker.reconnects == 0
        # Backoff of 0.05, 0.1, 0.2, 0.2, ... (halved at worst by the jitter): a few attempts a second, not a spin.
        assert 3 <= len(accepted) <= 30, len(accepted)
        [warning] = warnings_of(caplog)
        assert "unreadable reply" in warning or "closed" in warning
    finally:
        server.close()


# -- every way of reaching Redis -----------------------------------------------------------------------

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def secured_redis(redis_binary, tmp_path_factory):
    """A redis-server with a password, an ACL user, a unix socket and a TLS port (its certificate for 127.0.0.1)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a certificate with")
    files = tmp_path_factory.mktemp("secured-redis")
    cert, key = files / "cert.pem", files / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    tls_port, socket_path = free_port(), files / "redis.sock"
    server = RedisServer(redis_binary, password=PASSWORD, args=[
        "--unixsocket", str(socket_path), "--unixsocketperm", "700",
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
        "--user", "alice", "on", ">wonderland", "~*", "&*", "+@all",
    ])
    server.start()
    try:
        yield {
            "password": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
            "user": f"redis://alice:wonderland@127.0.0.1:{server.port}/0",
            "unix": f"unix://:{PASSWORD}@{socket_path}?db=0",
            "tls": f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}",
            "wrong": f"redis://:wrong@127.0.0.1:{server.port}/0",
        }
    finally:
        server.cleanup()


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("how", ["password", "user", "unix", "tls"])
async def test_the_broker_reaches_redis_every_way_a_url_can_say(secured_redis, how):
    url = secured_redis[how]
    commands = PipelinedConnection(url)
    broker = RedisBroker(Endpoint(url), commands)
    other = RedisBroker(Endpoint(url), commands)
    inbox, notices = Inbox(), []
    try:
        await broker.subscribe("g", inbox)
        await broker.watch_notices(notices.append)
        await other.publish(Message("g", "u", how, T0))
        await other.notify(SessionsChanged("u1"))
        await wait_for(lambda: inbox.infos == [how] and notices == [SessionsChanged("u1")])
        assert broker.healthy and broker.subscribed_groups == {"g"}
    finally:
        await broker.close()
        await other.close()
        await commands.aclose()


@pytest.mark.gen_test(timeout=20)
async def test_a_wrong_password_is_one_warning_and_the_broker_keeps_trying(secured_redis, caplog):
    commands = PipelinedConnection(secured_redis["password"])
    broker = RedisBroker(Endpoint(secured_redis["wrong"]), commands, **QUICK)
    try:
        await asyncio.wait_for(broker.subscribe("g", Inbox()), 3)
        await asyncio.sleep(0.8)
        assert not broker.healthy and broker.subscribed_groups == frozenset()
        [warning] = warnings_of(caplog)
        assert "WRONGPASS" in warning
    finally:
        await broker.close()
        await commands.aclose()
