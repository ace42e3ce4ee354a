"""Real ``python -m fastim serve`` nodes for tests: a free loopback port, /healthz to wait on, stop by PID."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# A cold interpreter imports Tornado, redis-py and marshmallow in about a second;
# 15 s leaves room for a loaded CI machine.
START_TIMEOUT_S = 15.0
# A graceful stop takes milliseconds; the node's own shutdown deadline is 10 s.
STOP_TIMEOUT_S = 12.0
POLL_S = 0.05
SETTING_PREFIXES = ("FASTIM_SERVER_", "FASTIM_STORAGE_", "FASTIM_BROKER_", "FASTIM_IM_", "FASTIM_AUTH_",
                    "FASTIM_HOOKS_")


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without the caller's fastim settings, with the repository importable."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), environ.get("PYTHONPATH", "")) if p)
    environ.update(extra or {})
    return environ


def terminate(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM a process we started, then SIGKILL if it has not exited in ``timeout``; its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class ServeProcess:
    """One ``python -m fastim serve`` process that a test owns.

    It runs in ``workdir`` (so no repository settings.ini is read), listens on
    127.0.0.1 at a free port, and writes stderr to a file there so that a
    chatty node never blocks on a full pipe. Settings go in as environment
    variables (``FASTIM_IM_GROUP_LIST_UPDATE_RATE="0.3"``). Usable as a
    context manager: it is stopped on exit, by PID.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        name: str = "node",
        backend: str = "memory",
        redis_url: str | None = None,
        environ: Mapping[str, str] | None = None,
        port: int | None = None,
        args: Sequence[str] = (),
        script: Path | None = None,
        open_files: int | tuple[int, int] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.name = name
        self.port = port or free_port()
        self.environ = child_environ(environ)
        if script is None:
            self.argv = [sys.executable, "-m", "fastim", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                         "--backend", backend]
            if redis_url is not None:
                self.argv += ["--redis-url", redis_url]
        else:  # a program that serves like `fastim serve` (examples/), configured by the environment
            self.argv = [sys.executable, str(script)]
            self.environ.update({"FASTIM_SERVER_HOST": "127.0.0.1", "FASTIM_SERVER_PORT": str(self.port),
                                 "FASTIM_STORAGE_BACKEND": backend})
            if redis_url is not None:
                self.environ["FASTIM_STORAGE_REDIS_URL"] = redis_url
        self.argv += list(args)  # more flags of `fastim serve`, e.g. ["--workers", "2"]
        # RLIMIT_NOFILE of the node, as `prlimit --nofile=N` (both limits) or `--nofile=SOFT:HARD` sets it
        self.open_files = (open_files, open_files) if isinstance(open_files, int) else open_files
        self.stderr_path = self.workdir / f"{name}-{self.port}-stderr.log"
        self.process: subprocess.Popen | None = None
        self._stderr_file = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def stderr(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr_tail(self) -> str:
        """The end of stderr, for assertion messages that stay readable."""
        return self.stderr[-3000:]

    def start(self) -> "ServeProcess":
        """Launch the process without waiting; see :meth:`wait_until_serving`."""
        assert self.process is None, f"{self.name} already started"
        self._stderr_file = open(self.stderr_path, "ab")
        limit = self.open_files

        def limit_open_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)

        self.process = subprocess.Popen(
            self.argv, cwd=self.workdir, env=self.environ, stdout=subprocess.DEVNULL, stderr=self._stderr_file,
            preexec_fn=limit_open_files if limit is not None else None,
        )
        return self

    def wait_until_serving(self, timeout: float = START_TIMEOUT_S) -> "ServeProcess":
        """Poll GET /healthz until it answers 200; fail with the node's stderr if it exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}; stderr:\n{self.stderr_tail}")
            try:
                if http_status(f"{self.base_url}/healthz", timeout=1.0) == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not serve within {timeout:g} s; stderr:\n{self.stderr_tail}")
            time.sleep(POLL_S)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            assert time.monotonic() < deadline, f"{text!r} not logged by {self.name}; stderr:\n{self.stderr_tail}"
            time.sleep(POLL_S)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in ``timeout``; the exit status (None if never started)."""
        process = self.process
        if process is None:
            return None
        try:
            return terminate(process, timeout)
        finally:
            if self._stderr_file is not None:
                self._stderr_file.close()
                self._stderr_file = None

    def __enter__(self) -> "ServeProcess":
        return self.start().wait_until_serving()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_nodes(nodes: list[ServeProcess], timeout: float = START_TIMEOUT_S) -> list[ServeProcess]:
    """Start several nodes at once (their start-ups overlap), then wait for each; stop all on failure."""
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_until_serving(timeout)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


@contextlib.contextmanager
def node_pair(
    workdir: Path, redis_url: str, environ: Mapping[str, str] | None = None
) -> Iterator[list[ServeProcess]]:
    """Nodes ``a`` and ``b`` on one Redis, started together; both must stop cleanly (exit 0) at the end."""
    pair = [ServeProcess(workdir, name=name, backend="redis", redis_url=redis_url, environ=environ)
            for name in ("a", "b")]
    start_nodes(pair)
    yield pair
    statuses = [node.stop() for node in pair]
    assert statuses == [0, 0], [node.stderr_tail for node in pair]


@contextlib.contextmanager
def no_errors_logged(nodes: list[ServeProcess], secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Whatever the block does, no node logs an error, a traceback or one of ``secrets`` meanwhile."""
    before = [len(node.stderr) for node in nodes]
    yield
    time.sleep(0.05)  # let the last lines of a closing socket reach the file
    for node, offset in zip(nodes, before):
        log = node.stderr[offset:]
        assert " ERROR " not in log and "Traceback" not in log, f"node {node.name} logged:\n{log[-3000:]}"
        for secret in secrets:
            assert secret not in log, f"node {node.name} logged a secret"
