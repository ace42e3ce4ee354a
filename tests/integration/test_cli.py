"""The real ``python -m fastim`` process: start-up, probes, exit codes, signals, logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.processes import child_environ, free_port

START_TIMEOUT_S = 15.0
EXIT_TIMEOUT_S = 5.0


class Fastim:
    """One fastim process this test started; its stderr goes to a file so it never blocks."""

    def __init__(self, argv: list[str], cwd: Path, environ: dict[str, str]) -> None:
        self._stderr_path = cwd / f"stderr-{time.monotonic_ns()}.log"
        self._stderr = open(self._stderr_path, "wb")
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=environ, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    @property
    def stderr(self) -> str:
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr_tail(self) -> str:
        """The end of stderr, for assertion messages that stay readable."""
        return self.stderr[-3000:]

    def wait(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)

    def wait_for_log(self, text: str, timeout: float = EXIT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            assert time.monotonic() < deadline, f"{text!r} not logged; stderr:\n{self.stderr_tail}"
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        self._stderr.close()


@pytest.fixture
def run_fastim(tmp_path):
    """Start fastim processes in ``tmp_path``; every one still running at the end is killed by PID."""
    started: list[Fastim] = []

    def start(*args: str, module_argv: list[str] | None = None, **environ: str) -> Fastim:
        argv = module_argv or [sys.executable, "-m", "fastim", *args]
        proc = Fastim(argv, tmp_path, child_environ(environ))
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.cleanup()


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until_serving(proc: Fastim, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.process.poll() is None, f"fastim exited early; stderr:\n{proc.stderr_tail}"
        try:
            if get(f"http://127.0.0.1:{port}/healthz") == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"fastim did not start; stderr:\n{proc.stderr_tail}"
        time.sleep(0.1)


def assert_one_line_failure(proc: Fastim) -> str:
    assert proc.wait() == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fastim: ")
    return lines[0]


# --- a node that starts, serves and stops -----------------------------------------


def test_memory_node_serves_probes_and_stops_on_sigterm(run_fastim):
    port = free_port()
    proc = run_fastim("serve", "--port", str(port))
    wait_until_serving(proc, port)

    assert get(f"http://127.0.0.1:{port}/healthz") == 200
    assert get(f"http://127.0.0.1:{port}/readyz") == 200
    proc.wait_for_log("tornado.access")
    log = proc.stderr
    pid = proc.process.pid
    assert f"fastim listening on http://127.0.0.1:{port} (backend=memory, node={pid})" in log
    assert "WARNING fastim.server: logins are open: [im] login_auth = 0 lets WebSockets in without a token" in log
    assert "WARNING fastim.server: logins are open: the default authenticator accepts any password" in log
    assert "INFO tornado.access: 200 GET /healthz" in log

    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    assert time.monotonic() - started < EXIT_TIMEOUT_S
    assert "received SIGTERM, shutting down" in proc.stderr
    assert "fastim stopped" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigint_stops_gracefully_and_json_logs_are_one_object_per_line(run_fastim):
    port = free_port()
    proc = run_fastim("serve", "--port", str(port), FASTIM_SERVER_LOG_FORMAT="json")
    wait_until_serving(proc, port)
    assert get(f"http://127.0.0.1:{port}/nowhere") == 404
    proc.wait_for_log('"logger": "tornado.access"')

    proc.signal(signal.SIGINT)
    assert proc.wait() == 0
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {"ts", "level", "logger", "msg"} <= set(events[0])
    assert events[0]["ts"].endswith("Z")
    assert events[0]["msg"].startswith("fastim listening on ")
    assert any(e["logger"] == "tornado.access" and "404 GET /nowhere" in e["msg"] for e in events)
    assert events[-1]["msg"] == "fastim stopped"


def test_settings_ini_in_working_directory_is_used(run_fastim, tmp_path):
    port = free_port()
    (tmp_path / "settings.ini").write_text(f"[server]\nport = {port}\n[im]\nlogin_auth = 1\n")
    proc = run_fastim("serve")
    wait_until_serving(proc, port)
    assert "not authenticated" not in proc.stderr
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


@pytest.mark.redis
def test_redis_node_checks_redis_and_serves(run_fastim, fresh_redis):
    port = free_port()
    proc = run_fastim("serve", "--port", str(port), "--backend", "redis", "--redis-url", fresh_redis.url)
    wait_until_serving(proc, port)
    assert get(f"http://127.0.0.1:{port}/readyz") == 200
    assert "(backend=redis, node=" in proc.stderr
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


# --- start-up failures: one line on stderr, exit 2 -----------------------------------


def test_unreachable_redis_is_one_line_and_exit_2(run_fastim):
    proc = run_fastim(
        "serve", "--port", str(free_port()), "--backend", "redis", "--redis-url", "redis://127.0.0.1:1/0"
    )
    line = assert_one_line_failure(proc)
    assert line.startswith("fastim: cannot reach Redis at redis://127.0.0.1:1/0: ")


@pytest.mark.parametrize(("flags", "start"), [
    (["--redis-cluster", "127.0.0.1:1"],
     "fastim: cannot reach the Redis Cluster at 127.0.0.1:1: no node answered CLUSTER SLOTS (127.0.0.1:1: "),
    (["--redis-sentinel", "127.0.0.1:1", "--redis-sentinel-master", "chat"],
     "fastim: cannot reach Redis master 'chat' through the sentinels at 127.0.0.1:1: 127.0.0.1:1: ConnectionError"),
    (["--storage", "postgres", "--database-url", "postgresql://fastim@127.0.0.1:1/chat"],
     "fastim: cannot reach the database at postgresql://fastim@127.0.0.1:1/chat: "),
])
def test_an_unreachable_cluster_sentinel_or_database_is_one_line_and_exit_2(run_fastim, flags, start):
    line = assert_one_line_failure(run_fastim("serve", "--port", str(free_port()), *flags))
    assert line.startswith(start), line


def test_redis_password_is_not_printed(run_fastim):
    url = "redis://user:s3cret@127.0.0.1:1/0"
    proc = run_fastim("serve", "--port", str(free_port()), "--backend", "redis", "--redis-url", url)
    line = assert_one_line_failure(proc)
    assert "s3cret" not in line
    assert "redis://user:***@127.0.0.1:1/0" in line


def test_non_numeric_port_is_one_line_naming_port(run_fastim):
    line = assert_one_line_failure(run_fastim("serve", "--port", "abc"))
    assert line == "fastim: invalid setting [server] port = 'abc' (from --port): Not a valid integer."


def test_unknown_backend_is_one_line(run_fastim):
    line = assert_one_line_failure(run_fastim("serve", "--backend", "nosuch"))
    assert "[storage] backend = 'nosuch' (from --backend)" in line


def test_bad_environment_value_is_one_line(run_fastim):
    line = assert_one_line_failure(run_fastim("serve", FASTIM_IM_RATE_BURST="0"))
    assert "[im] rate_burst = '0' (from FASTIM_IM_RATE_BURST)" in line


def test_missing_config_file_is_one_line(run_fastim):
    line = assert_one_line_failure(run_fastim("serve", "--config", "missing.ini"))
    assert line == "fastim: config file not found: missing.ini"


def test_port_in_use_is_one_line(run_fastim):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = assert_one_line_failure(run_fastim("serve", "--port", str(port)))
    assert line.startswith(f"fastim: cannot listen on 127.0.0.1:{port}: ")


# Protected mode (issue 12, finding 5). The node stops before it binds anything, so these
# tests never listen beyond loopback.
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_open_logins_on_a_non_loopback_address_refuse_to_start(run_fastim, host):
    line = assert_one_line_failure(run_fastim("serve", "--host", host, "--port", str(free_port())))
    assert line.startswith(f"fastim: refusing to listen on {host}: logins are open (")
    assert "the default authenticator accepts any password" in line
    assert "[im] login_auth = 0" in line and "[server] protected_mode = 0" in line


def test_checking_tokens_is_not_enough_while_any_password_logs_in(run_fastim):
    proc = run_fastim("serve", "--host", "0.0.0.0", "--port", str(free_port()), FASTIM_IM_LOGIN_AUTH="1")
    line = assert_one_line_failure(proc)
    assert "logins are open (the default authenticator accepts any password), " in line


def test_workers_refuse_in_the_supervisor_before_any_fork(run_fastim, fresh_redis):
    proc = run_fastim("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--workers", "2",
                      "--backend", "redis", "--redis-url", fresh_redis.url)
    assert assert_one_line_failure(proc).startswith("fastim: refusing to listen on 0.0.0.0")


def test_no_subcommand_prints_help_and_exits_2(run_fastim):
    proc = run_fastim()
    assert proc.wait() == 2
    assert "serve" in proc.stderr


# --- shutdown stays bounded ------------------------------------------------------------

HANGING_SHUTDOWN = """
import asyncio, sys
import fastim.server as server
from fastim.cli import main

async def hang(self):
    await asyncio.Event().wait()

server.SHUTDOWN_DEADLINE_SECONDS = 1.0
server.Node._close_connections = hang
sys.exit(main(["serve", "--port", sys.argv[1]]))
"""


def test_stuck_shutdown_is_forced_after_the_deadline(run_fastim):
    port = free_port()
    proc = run_fastim(module_argv=[sys.executable, "-c", HANGING_SHUTDOWN, str(port)])
    wait_until_serving(proc, port)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 1
    assert "shutdown did not finish within 1 s; forcing exit" in proc.stderr


def test_second_signal_ends_a_stuck_shutdown_at_once(run_fastim):
    port = free_port()
    proc = run_fastim(module_argv=[sys.executable, "-c", HANGING_SHUTDOWN, str(port)])
    wait_until_serving(proc, port)
    proc.signal(signal.SIGTERM)
    proc.wait_for_log("received SIGTERM, shutting down")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=0.9) == -signal.SIGTERM
