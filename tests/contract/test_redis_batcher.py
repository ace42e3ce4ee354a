"""Automatic pipelining against fakeredis and a real redis-server."""

from __future__ import annotations

import asyncio

import fakeredis
import pytest
import redis.exceptions

from fastim.infrastructure.redis.batcher import CommandBatcher, LuaScript
from fastim.infrastructure.redis.client import make_client


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def raw(request, io_loop):
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(decode_responses=True)
    else:
        client = make_client(request.getfixturevalue("fresh_redis").url)
    yield client
    io_loop.run_sync(client.aclose)


@pytest.fixture
def batcher(raw):
    return CommandBatcher(raw)


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
    assert results[0] is True and results[2] == "1"
    assert isinstance(results[1], redis.exceptions.ResponseError)


@pytest.mark.gen_test
async def test_scripts_run_by_sha_and_are_sent_whole_when_redis_forgot_them(batcher, raw):
    assert await batcher.run(COUNTER, ["n"], [2]) == 2
    await raw.script_flush()
    assert await batcher.run(COUNTER, ["n"], [3]) == 5
