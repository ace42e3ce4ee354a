"""fastim inside an existing Tornado application: its routes under a path prefix, its start and stop hooks.

The host keeps its event loop, its ``Application`` (and that application's
settings) and its ``HTTPServer``; fastim brings URL rules and a node's
life without the listening::

    im = fastim.embed.mount("/im", authenticator=MyUsers())
    app = tornado.web.Application([(r"/", Home), *im.rules])
    await im.start()
    server = app.listen(8888)
    ...
    server.stop()
    await im.stop()
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable, Iterable

import tornado.httpserver
from dependency_injector import providers

from fastim.app import routes
from fastim.container import Container, build_container, open_logins
from fastim.domain.ports import Authenticator, JoinPolicy
from fastim.interfaces.http.base import NotFoundHandler
from fastim.server import Node
from fastim.settings import Settings, load_settings

logger = logging.getLogger(__name__)

# One or more path segments, no trailing slash: "/im", "/chat/v1". "" mounts at the root.
PREFIX_PATTERN = re.compile(r"(/[^/?#\s]+)*")


class Mounted:
    """fastim mounted in a host application: :attr:`rules` to route, :meth:`start` and :meth:`stop` to call.

    Built by :func:`mount`. :attr:`rules` are the URL rules of everything fastim
    serves, under :attr:`prefix`; any other path under the prefix answers fastim's
    JSON 404. :attr:`container` is the node's container (read it, do not override
    providers any more: the rules are built).
    """

    def __init__(self, prefix: str, settings: Settings, container: Container) -> None:
        self.prefix = prefix
        self.settings = settings
        self.container = container
        self._node = _MountedNode(prefix, settings, container)
        self.rules: list[tuple] = routes(container, prefix)
        if prefix:
            http = container.http_context()
            self.rules.append((re.escape(prefix) + r"(?:/.*)?", NotFoundHandler, {"http": http}))
        self._state = "mounted"

    async def start(self) -> None:
        """Check the storage (a Redis backend must answer) and start the node's background tasks.

        Call it in the host's event loop before the host starts listening. A
        failure releases what was opened and raises
        :class:`fastim.server.StartupError`, whose text is one line for the operator.
        """
        if self._state != "mounted":
            raise RuntimeError(f"fastim under {self.prefix!r} is {self._state}; start() is called once")
        self._state = "starting"
        try:
            await self._node.start()
        except BaseException:
            self._state = "stopped"
            raise
        self._state = "started"

    async def stop(self) -> None:
        """Close fastim's WebSockets with 1001, let its HTTP requests finish, release the storage; within about 7 s.

        The host's own connections are the host's to close (``HTTPServer.close_all_connections``),
        after this. Calling it again, or before :meth:`start`, does nothing more.
        """
        if self._state != "started":
            return
        self._state = "stopping"
        try:
            await self._node.stop()
        finally:
            self._state = "stopped"

    def accept(self, server: tornado.httpserver.HTTPServer, sockets: Iterable[socket.socket]) -> None:
        """Optional: accept the host server's connections as a fastim node does, instead of ``server.add_sockets``.

        Every connection on ``sockets`` (the host's own routes' included) then
        counts against ``[server] max_connections`` and ``max_connections_per_ip``,
        is refused over them with a canned 503, and ``EMFILE`` pauses accepting
        instead of spinning. Protected mode applies to the sockets' addresses.
        :meth:`stop` stops accepting on them. Call it after :meth:`start`.
        """
        if self._state != "started":
            raise RuntimeError("accept() needs a started fastim: await start() first")
        self._node.accept(server, list(sockets))


class _MountedNode(Node):
    """A node that does not listen: the host's HTTPServer serves its routes."""

    def __init__(self, prefix: str, settings: Settings, container: Container) -> None:
        super().__init__(settings, container)
        self.prefix = prefix

    def check_protected_mode(self, host: str | None = None) -> None:
        if host is not None:  # [server] host means nothing here; accept() names the real addresses
            super().check_protected_mode(host)

    def _listen(self) -> None:
        return  # the host listens

    def _started(self) -> None:
        # The collector is the host process's to tune: fastim leaves it alone here.
        logger.info(
            "fastim mounted at %s (backend=%s, node=%d)", self.prefix or "/", self.settings.storage.backend, self.node_id
        )
        for reason in open_logins(self.container):
            logger.warning("logins are open: %s", reason)

    def accept(self, server: tornado.httpserver.HTTPServer, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.check_protected_mode(sock.getsockname()[0])
        self._accept(server, sockets)
        logger.info("fastim admits the host's connections: %s", self._capacity)


def mount(
    prefix: str = "/im",
    *,
    settings: Settings | None = None,
    authenticator: Authenticator | None = None,
    join_policy: JoinPolicy | None = None,
    customize: Callable[[Container], None] | None = None,
) -> Mounted:
    """fastim for a host application, under ``prefix`` (``"/im"``; ``""`` for fast-im's own URLs at the root).

    ``settings`` default to what ``fastim serve`` reads (``./settings.ini`` when it
    exists, ``FASTIM_<SECTION>_<KEY>`` variables, built-in defaults); ``[server]
    open_paths`` are named without the prefix (``/user/login``), which is put in
    front of them. ``authenticator`` decides logins (any object with
    ``async authenticate(user_id, password) -> bool``: the host's own user
    store), ``join_policy`` who may join which group; ``customize(container)``
    overrides any other provider. Call it outside or inside the host's event
    loop, then route :attr:`Mounted.rules` and call :meth:`Mounted.start` and
    :meth:`Mounted.stop`.
    """
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"prefix must be empty or '/' and path segments, without a trailing '/': {prefix!r}")
    if settings is None:
        settings = load_settings()
    container = build_container(settings)
    if authenticator is not None:
        container.authenticator.override(providers.Object(authenticator))
    if join_policy is not None:
        container.join_policy.override(providers.Object(join_policy))
    if customize is not None:
        customize(container)
    # The gate judges the path a request came in on, which carries the prefix.
    container.config.server.open_paths.from_value(tuple(prefix + path for path in settings.server.open_paths))
    return Mounted(prefix, settings, container)
