"""A throw-away redis-server on a free loopback port, for the tests that need a real one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence

import redis

START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process that this test run owns and stops by PID."""

    def __init__(self, binary: str, port: int | None = None, *, persistent: bool = False,
                 args: Sequence[str] = (), password: str | None = None) -> None:
        """``args``: more of redis-server's options (TLS, a unix socket, ...); ``password``: its requirepass."""
        self.binary = binary
        self.args = list(args)
        self.password = password
        # With an append-only file fsynced on every write, a restart keeps every acknowledged write.
        self.persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="fastim-redis-")
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", *self.persistence, "--dir", self._dir,
                *(["--requirepass", self.password] if self.password else []), *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, password=self.password)
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"redis-server did not start on port {self.port}")
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._process = None

    def flush(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, password=self.password)
        try:
            client.flushall()
        finally:
            client.close()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def redis_required() -> bool:
    return os.environ.get("FASTIM_REQUIRE_REDIS", "") not in ("", "0")


def find_binary() -> str | None:
    return shutil.which("redis-server")
