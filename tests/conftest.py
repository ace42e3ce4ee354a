"""Fixtures shared by every test layer: a real redis-server owned by the test run."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer, find_binary, redis_required


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free loopback port, started once per run and stopped by PID.

    Skips when no binary is found, unless FASTIM_REQUIRE_REDIS is set: then it fails,
    so CI can never go green without the Redis tests.
    """
    binary = find_binary()
    if binary is None:
        reason = "no redis-server binary on PATH"
        if redis_required():
            pytest.fail(f"{reason} and FASTIM_REQUIRE_REDIS is set")
        pytest.skip(reason)
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_redis(redis_server):
    """The session's redis-server, emptied for this test."""
    redis_server.flush()
    return redis_server
