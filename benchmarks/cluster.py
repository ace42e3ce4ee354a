"""The processes a benchmark run owns: one redis-server and fastim nodes, pinned to CPUs, stopped by PID."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
# A cold interpreter imports Tornado and redis-py in about a second; 15 s covers a loaded box.
START_TIMEOUT_S = 15.0
# A node's own shutdown deadline is 10 s; past 12 s it is killed.
STOP_TIMEOUT_S = 12.0
POLL_S = 0.05
SETTING_PREFIXES = ("FASTIM_SERVER_", "FASTIM_STORAGE_", "FASTIM_BROKER_", "FASTIM_IM_", "FASTIM_AUTH_",
                    "FASTIM_HOOKS_")

# The node settings every scenario runs with, and why.
NODE_SETTINGS = {
    # The default 10 msg/s (burst 20) per connection would refuse the benchmark's senders.
    "FASTIM_IM_RATE_LIMIT": "1000000",
    "FASTIM_IM_RATE_BURST": "1000000",
    # Keeps gml:{g} short so Redis memory and LTRIM cost stay flat however long the run.
    "FASTIM_IM_HISTORY_MAX": "1000",
    # An empty snapshot on open: S3 measures the socket, not the size of a history page.
    "FASTIM_IM_LIST_NUM": "0",
    # 16 MiB of backlog per socket before a 1008 close: bursts in the "max" steps must
    # show up as latency, and only a real stall as loss.
    "FASTIM_IM_MAX_PENDING_BYTES": str(16 * 1024 * 1024),
    # One log line per socket at info level would be measured as server CPU.
    "FASTIM_SERVER_LOG_LEVEL": "warning",
}


@dataclass(frozen=True)
class Pinning:
    """Which CPU the server processes get and which the load generator and Redis share."""

    server_cpu: int | None
    client_cpu: int | None

    @classmethod
    def choose(cls, server_cpu: int, client_cpu: int) -> "Pinning":
        """Pin only when both CPUs exist; a one-CPU box runs unpinned (and the figures say less)."""
        available = os.sched_getaffinity(0)
        if {server_cpu, client_cpu} <= available and server_cpu != client_cpu:
            return cls(server_cpu, client_cpu)
        return cls(None, None)

    def server_prefix(self) -> list[str]:
        return _taskset(self.server_cpu)

    def client_prefix(self) -> list[str]:
        return _taskset(self.client_cpu)

    def pin_this_process(self) -> None:
        if self.client_cpu is not None:
            os.sched_setaffinity(0, {self.client_cpu})


def _taskset(cpu: int | None) -> list[str]:
    # taskset execs the command, so the PID we hold is the server's own.
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to the hard limit; the servers it starts inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM this one process (by its PID), then SIGKILL it if it outlives ``timeout``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class RedisProcess:
    """A private redis-server on a free loopback port, never the machine's shared one."""

    def __init__(self, binary: str, workdir: Path, prefix: list[str]) -> None:
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self.argv = [*prefix, binary, "--port", str(self.port), "--bind", LOOPBACK,
                     "--save", "", "--appendonly", "no", "--dir", str(workdir)]
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> "RedisProcess":
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self._client().ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(POLL_S)

    def flush(self) -> None:
        """Empty it between scenarios so each starts from the same state."""
        client = self._client()
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, 5.0)

    def _client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=2)


class NodeProcess:
    """One ``python -m fastim serve --backend redis`` process, pinned to the server CPU."""

    def __init__(self, redis_url: str, workdir: Path, prefix: list[str], name: str,
                 settings: dict[str, str] | None = None, checkout: Path = REPO_ROOT,
                 storage: list[str] = ()) -> None:
        self.port = free_port()
        self.settings = settings or {}
        self.checkout = checkout  # the fastim source the node runs: this one, or another build to compare
        self.name = name
        self.argv = [*prefix, sys.executable, "-m", "fastim", "serve", "--host", LOOPBACK,
                     "--port", str(self.port), "--backend", "redis", "--redis-url", redis_url, *storage]
        self.workdir = workdir  # holds no settings.ini, so only NODE_SETTINGS apply
        self.stderr_path = workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self._stderr = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def start(self) -> "NodeProcess":
        self._stderr = open(self.stderr_path, "ab")
        self.process = subprocess.Popen(self.argv, cwd=self.workdir, env=_node_environ(self.settings, self.checkout),
                                        stdout=subprocess.DEVNULL, stderr=self._stderr)
        return self

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; stderr:\n{self.stderr_tail()}")
            time.sleep(POLL_S)

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    def stop(self) -> None:
        try:
            if self.process is not None:
                _stop(self.process, STOP_TIMEOUT_S)
        finally:
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.port}/healthz", timeout=1.0) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False


def _node_environ(settings: dict[str, str], checkout: Path = REPO_ROOT) -> dict[str, str]:
    """This environment minus the caller's fastim settings, plus NODE_SETTINGS and the scenario's; ``checkout`` importable."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), environ.get("PYTHONPATH", "")) if p)
    environ.update(NODE_SETTINGS)
    environ.update(settings)
    return environ


class Cluster:
    """Redis for the whole run; a fresh set of nodes for each scenario (``with cluster.nodes(n)``)."""

    def __init__(self, pinning: Pinning, redis_binary: str | None = None) -> None:
        binary = redis_binary or shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.pinning = pinning
        self.workdir = Path(tempfile.mkdtemp(prefix="fastim-bench-"))
        self.redis = RedisProcess(binary, self.workdir, pinning.client_prefix())
        self._databases = 0
        self._postgres_databases: list[str] = []

    def __enter__(self) -> "Cluster":
        self.redis.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.redis.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        for name in self._postgres_databases:
            _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def nodes(self, count: int, settings: dict[str, str] | None = None, storage: str = "redis") -> "Nodes":
        """``count`` fresh nodes on the flushed Redis, with ``settings`` (FASTIM_* variables) on top of NODE_SETTINGS.

        ``storage`` other than redis: memory or sqlite (one node; a fresh file each time), or postgres
        (a fresh database on FASTIM_BENCH_POSTGRES_URL's server, events between nodes on the Redis).
        """
        self.redis.flush()
        prefix = self.pinning.server_prefix()
        flags = self._storage_flags(storage, count)
        return Nodes([NodeProcess(self.redis.url, self.workdir, prefix, f"node{i}", settings, storage=flags)
                      for i in range(count)])

    def _storage_flags(self, storage: str, count: int) -> list[str]:
        if storage == "redis":
            return []
        if storage in ("memory", "sqlite") and count > 1:
            raise RuntimeError(f"{storage} storage serves one node")
        if storage == "memory":
            return ["--storage", "memory", "--broker", "memory"]
        self._databases += 1
        if storage == "sqlite":
            return ["--storage", "sqlite", "--database-url", f"sqlite:///{self.workdir}/bench-{self._databases}.db",
                    "--broker", "memory"]
        name = f"fastim_bench_{os.getpid()}_{self._databases}"
        _postgres(f'CREATE DATABASE "{name}"')
        self._postgres_databases.append(name)
        return ["--storage", "postgres", "--database-url", f"{POSTGRES_URL.rpartition('/')[0]}/{name}",
                "--broker", "redis" if count > 1 else "memory"]


class Nodes:
    """Started together (their imports overlap), stopped together, each by its own PID."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.all = nodes

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.all]

    @property
    def ws_urls(self) -> list[str]:
        return [node.ws_url for node in self.all]

    def __enter__(self) -> "Nodes":
        try:
            for node in self.all:
                node.start()
            for node in self.all:
                node.wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.all:
            node.stop()


# The PostgreSQL server of --storage postgres (trust auth on these machines).
POSTGRES_URL = os.environ.get("FASTIM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres(statement: str) -> None:
    """One administrative statement (CREATE/DROP DATABASE) on POSTGRES_URL's server."""
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())
