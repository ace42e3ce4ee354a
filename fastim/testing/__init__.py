"""Fixtures for testing your code against a live fastim node: ``pytest_plugins = ["fastim.testing"]``.

- ``fastim_settings``: the node's settings (built-in defaults, memory backend);
  override the fixture to change them, e.g. with :func:`make_settings`.
- ``fastim_container``: the node's container, everything in memory; override
  providers (``fastim_container.authenticator.override(...)``) before the node
  starts, i.e. in a fixture of your own named ``fastim_container``.
- ``fastim_server``: a node serving that container on a free loopback port, from
  a thread with its own event loop, so that sync tests and async tests of any
  runner can reach it; ``.url``, ``.ws_url(path)``, ``.chat_url(g, u, token)``.
  It is stopped, its port closed, after the test.
- ``fastim_client``: a :class:`Client` of that node, for async code (its chat
  sockets need ``websockets``, which fastim's ``test`` extra installs).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastim.container import Container, build_container
from fastim.settings import Settings
from fastim.testing.client import ChatSocket, Client, FastimError, Session, SocketClosed
from fastim.testing.server import ServerThread, make_settings

__all__ = [
    "ChatSocket",
    "Client",
    "FastimError",
    "ServerThread",
    "Session",
    "SocketClosed",
    "make_settings",
]


@pytest.fixture
def fastim_settings() -> Settings:
    """Built-in defaults and the memory backend; neither settings.ini nor FASTIM_* variables are read."""
    return make_settings()


@pytest.fixture
def fastim_container(fastim_settings: Settings) -> Container:
    """A fresh container from ``fastim_settings``; nothing in it is built until first use."""
    return build_container(fastim_settings)


@pytest.fixture
def fastim_server(fastim_settings: Settings, fastim_container: Container) -> Iterator[ServerThread]:
    """A live node serving ``fastim_container`` on a free port of 127.0.0.1, stopped after the test."""
    with ServerThread(fastim_settings, fastim_container) as server:
        yield server


@pytest.fixture
def fastim_client(fastim_server: ServerThread) -> Client:
    """A client of ``fastim_server``, used from the test's own event loop."""
    return Client(fastim_server.url)
