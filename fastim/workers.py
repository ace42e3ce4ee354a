"""``fastim serve --workers N``: N node processes sharing one port, supervised by the parent.

The parent checks Redis once, binds one listening socket per worker with
SO_REUSEPORT (so the kernel spreads connections evenly across workers), and
forks each worker onto its own socket. Each worker is a complete node with its
own Hub and Redis subscriptions. SIGTERM or SIGINT to the parent is passed on
to every worker, which shuts down gracefully; the parent exits 0 once all have.
A worker that dies is replaced; one that fails to start stops them all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from tornado.netutil import bind_sockets

from fastim.container import Container, build_container, close_container
from fastim.server import SHUTDOWN_DEADLINE_SECONDS, Node, StartupError, run
from fastim.settings import Settings

logger = logging.getLogger(__name__)

EXIT_STARTUP_FAILED = 2  # a worker that could not start says so; restarting it would only loop
# More than this many replacements in a minute means something is wrong with every worker.
MAX_RESTARTS_PER_MINUTE = 10
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


ContainerFactory = Callable[[Settings], Container]


class Supervisor:
    def __init__(self, settings: Settings, make_container: ContainerFactory = build_container) -> None:
        self.settings = settings
        self.make_container = make_container  # each worker builds its own, after the fork
        self.count = settings.server.workers
        self.workers: dict[int, int] = {}  # pid -> worker number
        self.stopping = False
        self.restarts: list[float] = []

    def run(self) -> int:
        asyncio.run(_preflight(self.settings, self.make_container))  # one clear line, before any fork
        for number in range(self.count):
            self._fork(number)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        logger.info("supervising %d workers on port %d", self.count, self.settings.server.port)
        status = 0
        while self.workers:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            number = self.workers.pop(pid, None)
            if number is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if self.stopping:
                status = status or (0 if code == 0 else 1)
                continue
            status = self._on_unexpected_exit(number, code) or status
        logger.info("all workers stopped")
        return status

    def _on_unexpected_exit(self, number: int, code: int) -> int:
        now = time.monotonic()
        if code == EXIT_STARTUP_FAILED:
            logger.error("worker %d failed to start (exit %d); stopping", number, code)
            self._stop_all()
            return EXIT_STARTUP_FAILED
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > MAX_RESTARTS_PER_MINUTE:
            logger.error("workers keep dying (%d restarts in a minute); stopping", len(self.restarts))
            self._stop_all()
            return 1
        logger.warning("worker %d exited unexpectedly (exit %d); starting a new one", number, code)
        self._fork(number)
        return 0

    def _fork(self, number: int) -> None:
        server = self.settings.server
        try:
            sockets = bind_sockets(server.port, server.host, reuse_port=True)
        except OSError as exc:
            self._stop_all()
            raise StartupError(f"cannot listen on {server.host}:{server.port}: {exc.strerror or exc}") from exc
        pid = os.fork()
        if pid == 0:  # the worker
            os.setpgrp()  # a terminal's Ctrl-C reaches the parent only, which stops workers in order
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = run(self.settings, self.make_container(self.settings), sockets=sockets)
            except StartupError as exc:
                print(f"fastim: worker {number}: {exc}", flush=True, file=sys.stderr)
                code = EXIT_STARTUP_FAILED
            except BaseException:
                logger.exception("worker %d crashed", number)
            finally:
                logging.shutdown()
                os._exit(code)
        for sock in sockets:  # the parent must not hold a share of the port it never accepts on
            sock.close()
        self.workers[pid] = number

    def _on_signal(self, signum: int, frame: object) -> None:
        logger.info("received %s, stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self._stop_all()

    def _stop_all(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for pid in self.workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        signal.signal(signal.SIGALRM, self._kill_stragglers)
        signal.alarm(int(SHUTDOWN_DEADLINE_SECONDS) + 2)

    def _kill_stragglers(self, signum: int, frame: object) -> None:
        for pid in self.workers:
            logger.error("worker pid %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def _preflight(settings: Settings, make_container: ContainerFactory) -> None:
    node = Node(settings, make_container(settings))
    try:
        node.check_protected_mode()
        await node.check_storage()
    finally:
        await close_container(node.container)


def run_workers(settings: Settings, make_container: ContainerFactory = build_container) -> int:
    """Supervise ``[server] workers`` nodes on one port; each gets ``make_container(settings)``."""
    return Supervisor(settings, make_container).run()
