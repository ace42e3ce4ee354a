"""One node's life: check storage, listen, serve until SIGTERM/SIGINT, shut down in stages."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import tornado.httpserver
from tornado.netutil import bind_sockets

from fastim.app import make_app, socket_endpoints
from fastim.container import Container, build_container, close_container, open_logins
from fastim.interfaces.acceptor import Acceptor, Admission
from fastim.infrastructure.jwt_verifier import JwtSettingsError
from fastim.infrastructure.redis.sentinel import check_master
from fastim.infrastructure.sql.engine import describe as describe_sql_error
from fastim.infrastructure.sql.engine import migrate
from fastim.interfaces.http.body_limit import BodyLimit
from fastim.interfaces.http.client_address import ForwardedClients, TrustedProxies
from fastim.interfaces.ws.handshake import Handshakes
from fastim.settings import Settings

logger = logging.getLogger(__name__)

# A reachable Redis answers PING in milliseconds; 3 s covers a slow network
# while an operator who mistyped the URL still gets an answer at once.
STARTUP_PING_TIMEOUT_SECONDS = 3.0
# Creating or migrating the schema is a few statements; a database that takes longer is not there.
MIGRATION_TIMEOUT_SECONDS = 30.0
# Orchestrators (Kubernetes: terminationGracePeriodSeconds = 30) kill a node that
# takes too long to stop; 10 s leaves room while keeping a stuck node from hanging.
SHUTDOWN_DEADLINE_SECONDS = 10.0
# The exit status when the deadline forced the exit (a graceful stop exits 0).
FORCED_EXIT_STATUS = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Within SHUTDOWN_DEADLINE_SECONDS: clients answer a close frame in milliseconds,
# and a request still running after a few seconds is not worth the wait.
SOCKET_CLOSE_GRACE_SECONDS = 2.0
REQUEST_GRACE_SECONDS = 5.0
CLOSE_GOING_AWAY = 1001
# With [server] max_connections = 0 a node takes as many connections as its open-files limit
# allows, less this many descriptors for its Redis connections, log files and the like.
OPEN_FILES_RESERVE = 128
MIN_AUTO_CONNECTIONS = 32
# A hard limit of "unlimited" is raised to no more than this.
MAX_OPEN_FILES = 1 << 20


class StartupError(Exception):
    """The node cannot start; ``str()`` is one line for the operator."""


class Node:
    """This process's server: :meth:`start` opens it, :meth:`stop` closes it in stages.

    Shutdown stages run in order; one that fails is logged and the rest still run.
    """

    prefix = ""  # where the node's URLs are (an application that embeds fastim mounts them under its own)

    def __init__(
        self,
        settings: Settings,
        container: Container | None = None,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.container = container if container is not None else build_container(settings)
        self.node_id = os.getpid()
        self._sockets = sockets  # already bound by a supervisor (--workers), else the node binds its own
        self._http_server: tornado.httpserver.HTTPServer | None = None
        self._acceptor: Acceptor | None = None
        self._capacity = ""  # what the node accepts, for the start-up line
        self.proxies = TrustedProxies(settings.server.trusted_proxies)  # whose X-Forwarded-For names the client

    async def start(self) -> None:
        """Check the settings and the storage, then listen; on failure release everything and raise StartupError."""
        try:
            self.check_credentials()
            self.check_protected_mode()
            await self.check_storage()
            self._listen()
            self.container.keepalive().start()
        except BaseException:
            try:
                await self._close_container()
            except Exception:
                logger.debug("closing the container after a failed start failed", exc_info=True)
            raise
        self._started()

    async def stop(self) -> None:
        for name, stage in self._shutdown_stages():
            logger.debug("shutdown: %s", name)
            try:
                await stage()
            except Exception:
                logger.exception("shutdown stage %r failed; continuing", name)
        logger.info("fastim stopped")

    def _shutdown_stages(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        return [
            ("stop accepting connections", self._stop_listening),
            ("close WebSockets with 1001", self._close_sockets),
            ("finish in-flight HTTP requests", self._finish_requests),
            ("close HTTP connections", self._close_connections),
            ("close storage and broker", self._close_container),
        ]

    def check_credentials(self) -> None:
        """The JWT key must load: a key that verifies nothing would lock every client out."""
        try:
            self.container.grant_verifier()
        except JwtSettingsError as exc:
            raise StartupError(str(exc)) from None

    def check_protected_mode(self, host: str | None = None) -> None:
        """Like Redis's protected mode: with open logins, listen on loopback only unless told otherwise.

        ``host`` is where the node is to listen: ``[server] host`` unless given.
        """
        server = self.settings.server
        host = server.host if host is None else host
        if not server.protected_mode:
            return
        reasons = open_logins(self.container)
        if reasons and not is_loopback(host):
            raise StartupError(
                f"refusing to listen on {host}: logins are open ({'; '.join(reasons)}), so anyone could "
                "act as any user; set [im] login_auth = 1 and replace the authenticator, or set "
                "[server] protected_mode = 0 to serve anyway"
            )

    async def check_storage(self) -> None:
        storage = self.settings.storage
        if storage.backend in ("sqlite", "postgres"):
            await self._migrate_database()
        if "redis" in (storage.backend, self.settings.broker.backend):
            await self._check_redis()

    async def _migrate_database(self) -> None:
        """Reach the database and bring its schema up to date, or stop with one line saying why."""
        where = f"the database at {redact_url(self.settings.storage.database_url)}"
        try:
            async with asyncio.timeout(MIGRATION_TIMEOUT_SECONDS):
                await migrate(self.container.sql_engine())
        except TimeoutError:
            raise StartupError(f"cannot reach {where}: no answer within {MIGRATION_TIMEOUT_SECONDS:g} s")
        except Exception as exc:
            raise StartupError(f"cannot reach {where}: {describe_sql_error(exc)}") from exc

    async def _check_redis(self) -> None:
        storage = self.settings.storage
        # Redis is asked directly, not through Storage.ping(), so that the
        # reason reaches the operator in the one line that stops the process.
        if storage.redis_mode == "cluster":
            where, check = f"the Redis Cluster at {storage.redis_cluster}", self.container.redis_commands().check
        elif storage.redis_mode == "sentinel":
            where = f"Redis master {storage.redis_sentinel_master!r} through the sentinels at {storage.redis_sentinels}"

            async def check() -> None:
                await check_master(self.container.redis_sentinel(), storage.redis_sentinel_master)
        else:
            where, check = f"Redis at {redact_url(storage.redis_url)}", self.container.redis_client().ping
        try:
            async with asyncio.timeout(STARTUP_PING_TIMEOUT_SECONDS):
                await check()
        except TimeoutError:
            reason = f"no answer within {STARTUP_PING_TIMEOUT_SECONDS:g} s"
            raise StartupError(f"cannot reach {where}: {reason}")
        except Exception as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise StartupError(f"cannot reach {where}: {reason}") from exc

    def _listen(self) -> None:
        settings = self.settings.server
        application = make_app(self.container)
        if self.proxies:
            application = ForwardedClients(application, self.proxies)
        application = BodyLimit(application, settings.max_body_bytes, self.container.cors())
        server = tornado.httpserver.HTTPServer(
            application,
            idle_connection_timeout=settings.header_timeout,  # Tornado's header timeout, idle keep-alive included
            body_timeout=settings.body_timeout,
        )
        sockets = self._sockets
        if sockets is None:
            try:
                sockets = bind_sockets(settings.port, address=settings.host)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {reason}") from exc
        self._accept(server, sockets)
        self._http_server = server

    def _accept(self, server: tornado.httpserver.HTTPServer, sockets: list[socket.socket]) -> None:
        """Accept on ``sockets`` for ``server``, within ``[server] max_connections`` and ``max_connections_per_ip``."""
        settings = self.settings.server
        open_files = raise_open_files_limit()
        limit = settings.max_connections or max(MIN_AUTO_CONNECTIONS, open_files - OPEN_FILES_RESERVE)
        refused = self.container.metrics().refused_connections
        handshakes = Handshakes(
            socket_endpoints(self.container, self.prefix), self.container.cors(), self.container.transport_limits(),
            self.proxies, settings.header_timeout,
        )
        self._acceptor = Acceptor(
            server, Admission(limit, settings.max_connections_per_ip), lambda which: refused.labels(which).inc(),
            trusted_proxy=self.proxies.trusts_peer, handshakes=handshakes,
        )
        self._acceptor.add_sockets(sockets)
        per_address = f", {settings.max_connections_per_ip} per address" if settings.max_connections_per_ip else ""
        self._capacity = f"up to {limit} connections{per_address} (open-files limit {open_files})"

    def _started(self) -> None:
        """What a node does once it serves: a process of its own, it tunes the collector for its sockets."""
        tune_garbage_collector()
        self._log_started()

    def _log_started(self) -> None:
        server = self.settings.server
        host = f"[{server.host}]" if ":" in server.host else server.host
        logger.info(
            "fastim listening on http://%s:%d (backend=%s, node=%d); %s",
            host, server.port, self.settings.storage.backend, self.node_id, self._capacity,
        )
        for reason in open_logins(self.container):
            logger.warning("logins are open: %s", reason)

    async def _stop_listening(self) -> None:
        if self._acceptor is not None:
            self._acceptor.stop()

    async def _close_sockets(self) -> None:
        """Tell every client to go elsewhere (1001 Going Away), then give the close frames time to leave."""
        connections = self.container.connections()
        closing = connections.close_all(CLOSE_GOING_AWAY, "server shutting down")
        logger.info("closing %d WebSocket connections", closing)
        await _until(lambda: connections.count() == 0, SOCKET_CLOSE_GRACE_SECONDS)

    async def _finish_requests(self) -> None:
        http = self.container.http_context()
        if not await _until(lambda: http.in_flight == 0, REQUEST_GRACE_SECONDS):
            logger.warning("%d HTTP requests still running at shutdown", http.in_flight)

    async def _close_connections(self) -> None:
        if self._http_server is not None:
            await self._http_server.close_all_connections()

    async def _close_container(self) -> None:
        await close_container(self.container)


async def _until(condition: Callable[[], bool], seconds: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` for up to ``seconds``; whether it came true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


# Collect young objects after this many net allocations instead of CPython's 700. A node
# holding thousands of sockets keeps a few hundred thousand objects alive, and every
# young collection that runs walks over more of them than the garbage it finds: with
# CPython's default, 5,000 sockets open at about 1,700 a second; with this, at 3,100.
# Cyclic garbage waits a little longer, some MB at most.
GC_YOUNG_THRESHOLD = 50_000
GC_OLDER_THRESHOLDS = (20, 100)


def tune_garbage_collector() -> None:
    """Move everything built at start-up out of the collector's sight and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)


class ShutdownDeadline:
    """Forces the exit if the graceful shutdown has not finished in time.

    A thread, not a loop timer, so that it fires even when the event loop is stuck.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._force_exit)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _force_exit(self) -> None:
        logger.error("shutdown did not finish within %g s; forcing exit", self.seconds)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(FORCED_EXIT_STATUS)


async def serve(
    settings: Settings,
    deadline: ShutdownDeadline,
    container: Container | None = None,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Run a node until SIGTERM or SIGINT, then stop it; return the exit status.

    The first signal starts the graceful shutdown and arms ``deadline``; a second
    one gets the default action, so it ends the process at once.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signum: signal.Signals) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        logger.info("received %s, shutting down", signum.name)
        deadline.arm()
        stopping.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        node = Node(settings, container, sockets)
        await node.start()
        await stopping.wait()
        await node.stop()
        return 0
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run(
    settings: Settings, container: Container | None = None, sockets: list[socket.socket] | None = None
) -> int:
    """Serve in a fresh event loop; raise StartupError if the node cannot start.

    Pass a ``container`` whose providers you overrode (your own Authenticator,
    another repository) to serve with it instead of the default wiring.
    """
    deadline = ShutdownDeadline(SHUTDOWN_DEADLINE_SECONDS)
    try:
        return asyncio.run(serve(settings, deadline, container, sockets))
    finally:
        deadline.disarm()


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a descriptor); the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    return MAX_OPEN_FILES if soft == resource.RLIM_INFINITY else soft


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` stands for is a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and error lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))
