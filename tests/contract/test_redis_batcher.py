"""Automatic pipelining: redis-py's pipeline on fakeredis and real Redis, and the node's own connection on real Redis."""

from __future__ import annotations

import asyncio
import socket
import ssl

import fakeredis
import pytest
import redis.exceptions

from fastim.domain.errors import StorageUnavailable
from fastim.infrastructure.redis.batcher import CommandBatcher, LuaScript
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.endpoint import Endpoint
from fastim.infrastructure.redis.pipeline import CommandInFlight, PipelinedConnection
from fastim.infrastructure.redis.repositories import RedisMembershipRepository


@pytest.fixture(
    params=[
        "redis-py pipeline on fakeredis",
        pytest.param("redis-py pipeline on redis", marks=pytest.mark.redis),
        pytest.param("pipelined connection on redis", marks=pytest.mark.redis),
    ]
)
def setup(request, io_loop):
    """(the batcher under test, a plain redis-py client on the same data for assertions)."""
    if request.param.endswith("fakeredis"):
        raw = fakeredis.FakeAsyncRedis(decode_responses=True)
        closables = [raw]
        batcher = CommandBatcher(raw)
    else:
        url = request.getfixturevalue("fresh_redis").url
        raw = make_client(url)
        batcher = CommandBatcher(raw) if request.param.startswith("redis-py") else PipelinedConnection(url)
        closables = [raw, batcher] if isinstance(batcher, PipelinedConnection) else [raw]
    yield batcher, raw
    for closable in closables:
        io_loop.run_sync(closable.aclose)


@pytest.fixture
def batcher(setup):
    return setup[0]


@pytest.fixture
def raw(setup):
    return setup[1]


COUNTER = LuaScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")


@pytest.mark.gen_test
async def test_commands_of_one_turn_share_a_pipeline_and_keep_their_order(batcher, raw):
    replies = await asyncio.gather(*(batcher.execute("RPUSH", "k", str(i)) for i in range(200)))
    assert replies == list(range(1, 201))
    assert await raw.lrange("k", 0, 2) == ["0", "1", "2"]


@pytest.mark.gen_test
async def test_a_failing_command_fails_only_its_caller(batcher, raw):
    await raw.rpush("a-list", "x")
    results = await asyncio.gather(
        batcher.execute("SET", "s", "1"),
        batcher.execute("SADD", "a-list", "y"),  # wrong type
        batcher.execute("GET", "s"),
        return_exceptions=True,
    )
    assert results[0] in (True, "OK") and results[2] == "1"
    assert isinstance(results[1], redis.exceptions.ResponseError)


@pytest.mark.gen_test
async def test_scripts_run_by_sha_and_are_sent_whole_when_redis_forgot_them(batcher, raw):
    assert await batcher.run(COUNTER, ["n"], [2]) == 2
    await raw.script_flush()
    assert await batcher.run(COUNTER, ["n"], [3]) == 5


@pytest.mark.gen_test
async def test_commands_of_many_turns_may_be_in_flight_at_once_and_come_back_in_order(batcher, raw):
    async def one(i):
        for _ in range(i % 3):
            await asyncio.sleep(0)  # spread the commands over several loop turns
        return await batcher.execute("INCR", "c")

    replies = await asyncio.gather(*(one(i) for i in range(300)))
    assert sorted(replies) == list(range(1, 301))
    assert await raw.get("c") == "300"


# -- the node's own connection ---------------------------------------------------------------


@pytest.fixture
def redis_url(fresh_redis):
    return fresh_redis.url


@pytest.mark.redis
@pytest.mark.gen_test
async def test_a_reply_that_is_not_utf8_is_decoded_with_replacement_characters(redis_url):
    connection = PipelinedConnection(redis_url)
    try:
        await connection.execute("SET", "bin", b"\xff\xfeok")
        assert await connection.execute("GET", "bin") == "\ufffd\ufffdok"
    finally:
        await connection.aclose()


@pytest.mark.redis
@pytest.mark.gen_test
async def test_the_database_of_the_url_is_selected(fresh_redis):
    connection = PipelinedConnection(fresh_redis.url.rsplit("/", 1)[0] + "/5")
    other = make_client(fresh_redis.url.rsplit("/", 1)[0] + "/5")
    try:
        await connection.execute("SET", "where", "db5")
        assert await other.get("where") == "db5"
    finally:
        await connection.aclose()
        await other.aclose()


@pytest.mark.redis
@pytest.mark.gen_test
async def test_a_lost_connection_fails_what_was_in_flight_and_the_next_command_reconnects(redis_url):
    connection = PipelinedConnection(redis_url)
    admin = make_client(redis_url)
    try:
        assert await connection.execute("CLIENT", "SETNAME", "fastim-test") == "OK"
        in_flight = asyncio.ensure_future(connection.execute("BLPOP", "nothing-comes", 5))
        await asyncio.sleep(0.1)
        await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        with pytest.raises(redis.exceptions.ConnectionError):
            await asyncio.wait_for(in_flight, 2)
        assert await connection.execute("PING") == "PONG"
        await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        await asyncio.sleep(0.1)
        assert await connection.execute("PING") == "PONG"  # killed while idle: nobody notices
    finally:
        await connection.aclose()
        await admin.aclose()


@pytest.mark.gen_test
async def test_an_unreachable_redis_fails_each_command_as_storage_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe is closed
    connection = PipelinedConnection(f"redis://127.0.0.1:{port}/0")
    memberships = RedisMembershipRepository(None, connection)
    try:
        for _ in range(2):  # and again: a failed attempt leaves nothing stuck
            with pytest.raises(StorageUnavailable):
                await memberships.groups_of("u")
    finally:
        await connection.aclose()


@pytest.mark.gen_test
async def test_a_server_that_never_answers_times_out_as_storage_unavailable():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    connection = PipelinedConnection(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", connect_timeout=0.2)
    memberships = RedisMembershipRepository(None, connection)
    try:
        with pytest.raises(StorageUnavailable, match="no connection to Redis within 0.2 s"):
            await asyncio.wait_for(memberships.groups_of("u"), 5)
    finally:
        await connection.aclose()
        listener.close()


async def answers_time_then_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A Redis that introduces itself (its TIME) and then stops answering, as a stalled one does."""
    await reader.readuntil(b"TIME\r\n")
    writer.write(b"*2\r\n$10\r\n1700000000\r\n$6\r\n250000\r\n")
    await reader.read()  # whatever comes next goes unanswered


@pytest.mark.gen_test
async def test_commands_a_stalled_server_never_answers_fail_as_in_flight_after_the_reply_timeout():
    server = await asyncio.start_server(answers_time_then_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = PipelinedConnection(f"redis://127.0.0.1:{port}/0", reply_timeout=0.2)
    memberships = RedisMembershipRepository(None, connection)
    try:
        with pytest.raises(StorageUnavailable, match="no reply") as failed:
            await asyncio.wait_for(memberships.groups_of("u"), 5)
        assert isinstance(failed.value.__cause__, CommandInFlight)  # it was sent: it may have run
        assert connection.reached.clock_offset_ms < -1_000_000  # that server's clock says 2023
    finally:
        await connection.aclose()
        server.close()


@pytest.mark.gen_test
async def test_a_closed_connection_refuses_commands():
    connection = PipelinedConnection("redis://127.0.0.1:1/0")
    await connection.aclose()
    with pytest.raises(redis.exceptions.ConnectionError):
        await connection.execute("PING")


def test_tls_is_used_for_rediss_urls_only_with_the_urls_verification():
    assert Endpoint("redis://127.0.0.1:6390/0").tls_context() is None
    assert Endpoint("unix:///tmp/redis.sock").tls_context() is None
    strict = Endpoint("rediss://redis.example:6380/0").tls_context()
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    relaxed = Endpoint("rediss://redis.example:6380/0?ssl_cert_reqs=none").tls_context()
    assert relaxed.verify_mode == ssl.CERT_NONE and not relaxed.check_hostname
