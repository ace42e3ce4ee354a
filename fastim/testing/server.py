"""A live node for tests: served from a thread of its own, in its own event loop, on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import quote

from tornado.netutil import bind_sockets

from fastim.container import Container
from fastim.server import Node
from fastim.settings import Settings, load_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
# Starting a memory node takes milliseconds; a Redis one waits up to 3 s for its PING.
START_TIMEOUT_S = 10.0
# The node's own shutdown takes up to about 7 s (2 s for sockets, 5 s for requests).
STOP_TIMEOUT_S = 15.0


def make_settings(**overrides: object) -> Settings:
    """Settings for a test node: built-in defaults, the memory backend, and ``section__key=value`` overrides.

    Neither ``settings.ini`` nor the environment is read: ``make_settings(im__login_auth=1)``.
    """
    flags = {("storage", "backend"): "memory"}
    for name, value in overrides.items():
        section, separator, key = name.partition("__")
        if not separator:
            raise TypeError(f"name settings as section__key (im__login_auth), not {name!r}")
        flags[section, key] = str(value)
    return load_settings(config_path=os.devnull, environ={}, overrides=flags)


class _TestNode(Node):
    def _started(self) -> None:
        self._log_started()  # the collector is the test process's: left as it is


class ServerThread:
    """A node serving ``container`` on a free port of 127.0.0.1, from a daemon thread: the ``fastim_server`` fixture.

    Any test can reach it, sync or async, in any event loop. Its objects live
    in the node's loop: touch the container's services through :meth:`run`.
    """

    def __init__(self, settings: Settings, container: Container) -> None:
        self.settings = settings
        self.container = container
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{LOOPBACK}:{self.port}"

    def ws_url(self, path: str = "") -> str:
        """``ws://127.0.0.1:PORT`` followed by ``path`` (``/group/list/alice/TOKEN``)."""
        return f"ws://{LOOPBACK}:{self.port}{path}"

    def chat_url(self, group_id: str, user_id: str, token: str = "-") -> str:
        """The URL of a chat socket (any token will do while ``[im] login_auth = 0``, the default)."""
        return self.ws_url("/group/chat/" + "/".join(quote(part, safe="") for part in (group_id, user_id, token)))

    def start(self, timeout: float = START_TIMEOUT_S) -> ServerThread:
        """Bind a free port, start the node, return once it serves; raise what stopped it from starting."""
        assert self._thread is None, "a ServerThread starts once"
        sockets = bind_sockets(0, address=LOOPBACK)
        self.port = sockets[0].getsockname()[1]
        server = dataclasses.replace(self.settings.server, host=LOOPBACK, port=self.port)
        node = _TestNode(dataclasses.replace(self.settings, server=server), self.container, sockets)
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(node, sockets),), daemon=True,
                                        name=f"fastim-node-{self.port}")
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the fastim node did not start within {timeout:g} s")
        if self._failure is not None:
            self._thread.join(timeout)
            raise self._failure
        return self

    async def _serve(self, node: Node, sockets: list) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            await node.start()
        except BaseException as exc:
            for sock in sockets:
                sock.close()
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        await node.stop()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = START_TIMEOUT_S) -> T:
        """Run ``coroutine`` in the node's event loop and return its result: ``server.run(messages.newest("g1", 10))``."""
        assert self._loop is not None, "the node is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the node as SIGTERM would (sockets closed with 1001, the port closed); wait for its thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the fastim node on port {self.port} did not stop within {timeout:g} s")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
