"""A node's container and Tornado app on each backend, for handler tests."""

from __future__ import annotations

import json
import time

import pytest

from fastim.app import make_app
from fastim.container import build_container, close_container
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.sql.engine import migrate
from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.settings_factory import make_settings


@pytest.fixture(params=[
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
])
def backend_name(request):
    return request.param


@pytest.fixture
def node_settings():
    """Per-test setting overrides; a test module may override this fixture."""
    return {}


@pytest.fixture
def clock():
    """The node's clock, moved by hand so recall windows are tested to the millisecond."""
    return ManualClock(start_ms=time.time_ns() // 1_000_000)


@pytest.fixture
def container(request, backend_name, node_settings, clock, io_loop):
    overrides = {"storage__backend": backend_name}
    if backend_name == "redis":
        overrides["storage__redis_url"] = request.getfixturevalue("fresh_redis").url
    elif backend_name == "sqlite":
        overrides["storage__database_url"] = f"sqlite:///{request.getfixturevalue('tmp_path') / 'chat.db'}"
    elif backend_name == "postgres":
        database = request.getfixturevalue("postgres_database")
        io_loop.run_sync(database.truncate)
        overrides["storage__database_url"] = database.url
    overrides.update(node_settings)
    container = build_container(make_settings(**overrides))
    container.clock.override(clock)
    if backend_name in ("sqlite", "postgres"):
        io_loop.run_sync(lambda: migrate(container.sql_engine()))
    yield container
    io_loop.run_sync(lambda: close_container(container))


@pytest.fixture
def app(container):
    return make_app(container)


@pytest.fixture
def node(container, http_server, base_url, http_client):
    """The node under test: its container, its chat sockets, its HTTP API."""
    return Node(container, base_url, Api(http_client, base_url))


class Node:
    def __init__(self, container, base_url, api):
        self.container, self.base_url, self.api = container, base_url, api

    async def chat(self, group, user, token="any"):
        return await Client.connect(self.base_url, f"/group/chat/{group}/{user}/{token}")

    async def joined(self, group, user, token="any"):
        """A chat socket past its snapshot."""
        client = await self.chat(group, user, token)
        await client.json()
        return client

    async def get(self, path, headers):
        """An API call with ``headers``; (status, decoded body)."""
        response = await self.api.call(path, {}, headers)
        return response.code, json.loads(response.body)
