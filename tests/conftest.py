"""Fixtures shared by every test layer: a real redis-server, and a real Redis Cluster, owned by the test run."""

from __future__ import annotations

import pytest

from tests.redis_server import RedisServer, find_binary, redis_required
from tests.databases import POSTGRES_ADMIN_URL, PostgresDatabase, postgres_reachable, postgres_required
from tests.redis_topologies import RedisClusterProcesses, find_cli


@pytest.fixture(scope="session")
def redis_server():
    """A real redis-server on a free loopback port, started once per run and stopped by PID.

    Skips when no binary is found, unless FASTIM_REQUIRE_REDIS is set: then it fails,
    so CI can never go green without the Redis tests.
    """
    server = RedisServer(_binary())
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


@pytest.fixture(scope="session")
def redis_cluster():
    """A real Redis Cluster (3 masters, 3 replicas) on free loopback ports, started once per run."""
    binary = _binary()
    if find_cli(binary) is None:
        _skip_or_fail("no redis-cli next to redis-server or on PATH")
    cluster = RedisClusterProcesses(binary)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """The redis-server binary, for tests that start topologies of their own."""
    return _binary()


@pytest.fixture
def fresh_redis_cluster(redis_cluster):
    """The session's Redis Cluster, emptied for this test."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture(scope="session")
def postgres_database():
    """A PostgreSQL database of this run's own (on 127.0.0.1:5432 unless FASTIM_TEST_POSTGRES_URL says where).

    Skips when the server does not answer, unless FASTIM_REQUIRE_POSTGRES is set: then it fails.
    """
    reason = postgres_reachable()
    if reason is not None:
        message = f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {reason}"
        if postgres_required():
            pytest.fail(f"{message} and FASTIM_REQUIRE_POSTGRES is set")
        pytest.skip(message)
    database = PostgresDatabase()
    database.create()
    try:
        yield database
    finally:
        database.drop()


def _binary() -> str:
    binary = find_binary()
    if binary is None:
        _skip_or_fail("no redis-server binary on PATH")
    return binary


def _skip_or_fail(reason: str) -> None:
    """Skip, unless FASTIM_REQUIRE_REDIS is set: then fail, so CI can never go green without the Redis tests."""
    if redis_required():
        pytest.fail(f"{reason} and FASTIM_REQUIRE_REDIS is set")
    pytest.skip(reason)
