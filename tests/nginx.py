"""A real nginx for tests, running the committed ``deploy/nginx.conf`` with the test's own ports and paths.

The committed file is an http{}-level include; the test writes the main
configuration around it (pid, error log, temp directories in its own
directory), renders the include with its ports (the listen port and the two
upstream ports) and its access log path, and nothing else, then runs nginx in
the foreground as the current user and stops it by PID.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import REPO_ROOT, terminate
from tests.redis_server import redis_required

NGINX_CONF = REPO_ROOT / "deploy" / "nginx.conf"
# Debian installs it in /usr/sbin, which is not on a non-root PATH.
NGINX_PLACES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.02

# What the committed file says, and what a test changes (each must occur exactly as many times as listed).
LISTEN = re.compile(r"^(\s*listen\s+)9000(\s*;)", re.M)
UPSTREAM = re.compile(r"^(\s*server\s+127\.0\.0\.1:)(9001|9002)(\s)", re.M)
ACCESS_LOG = re.compile(r"^(\s*access_log\s+)/var/log/nginx/fastim\.access\.log(\s)", re.M)


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return next((place for place in NGINX_PLACES if os.access(place, os.X_OK)), None)


def nginx_binary() -> str:
    """nginx's path; skips without one, unless FASTIM_REQUIRE_REDIS is set (CI): then the test fails."""
    binary = find_nginx()
    if binary is None:
        reason = "no nginx binary (apt-get install nginx)"
        if redis_required():
            pytest.fail(f"{reason} and FASTIM_REQUIRE_REDIS is set")
        pytest.skip(reason)
    return binary


def render(text: str, listen_port: int, upstream_ports: tuple[int, int], access_log: Path) -> str:
    """The committed configuration with the test's ports and access log; fails if the file no longer matches."""
    text, listens = LISTEN.subn(rf"\g<1>127.0.0.1:{listen_port}\g<2>", text)
    ports = {"9001": upstream_ports[0], "9002": upstream_ports[1]}
    text, upstreams = UPSTREAM.subn(lambda m: f"{m.group(1)}{ports[m.group(2)]}{m.group(3)}", text)
    text, logs = ACCESS_LOG.subn(rf"\g<1>{access_log}\g<2>", text)
    assert (listens, upstreams, logs) == (1, 4, 1), "deploy/nginx.conf no longer has the lines the tests render"
    return text


def main_conf(directory: Path, include: Path) -> str:
    """The main nginx.conf around the include: everything in ``directory``, in the foreground."""
    user = ""
    if os.geteuid() == 0:  # as root nginx would switch its workers to nobody, who cannot read the test's files
        user = f"user {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name};"
    temp = "\n".join(f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                                 "uwsgi", "scgi"))
    return f"""{user}
daemon off;
master_process on;
worker_processes 1;
pid {directory / "nginx.pid"};
lock_file {directory / "nginx.lock"};
error_log {directory / "error.log"} info;
events {{ worker_connections 1024; }}
http {{
{temp}
    access_log off;
    include {include};
}}
"""


class NginxProcess:
    """nginx in front of two upstream ports, listening on 127.0.0.1:``port``; stopped by PID."""

    def __init__(self, directory: Path, port: int, upstream_ports: tuple[int, int], binary: str | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.binary = binary or nginx_binary()
        self.access_log = self.directory / "access.log"
        self.error_log = self.directory / "error.log"
        include = self.directory / "fastim.conf"
        include.write_text(render(NGINX_CONF.read_text(encoding="utf-8"), port, upstream_ports, self.access_log))
        self.conf = self.directory / "nginx.conf"
        self.conf.write_text(main_conf(self.directory, include))
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self, *extra: str) -> list[str]:
        return [self.binary, "-p", str(self.directory), "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the rendered configuration."""
        return subprocess.run(self.argv("-t"), capture_output=True, text=True, timeout=10)

    def start(self) -> "NginxProcess":
        self.process = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening():
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.errors()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nginx did not listen within {START_TIMEOUT_S:g} s:\n{self.errors()}")
            time.sleep(POLL_S)
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace")[-3000:] if self.error_log.exists() else ""

    def access_lines(self) -> list[str]:
        return self.access_log.read_text(errors="replace").splitlines() if self.access_log.exists() else []

    def stop(self) -> int | None:
        """Fast shutdown (SIGTERM: the master stops its workers), then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return None
        return terminate(process, STOP_TIMEOUT_S)

    def __enter__(self) -> "NginxProcess":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
