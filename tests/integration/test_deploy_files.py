"""deploy/: the systemd units verified by systemd itself, their readiness command run, nginx's file checked and run.

The units cannot be started here (no systemd as PID 1), so ``systemd-analyze
verify`` judges them (with the fastim executable, which lives in /opt on a
real host, replaced by a stub) and their ExecStartPost is run as systemd would
run it, against a starting node and against a /readyz that says 503 first.
"""

from __future__ import annotations

import configparser
import http.server
import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from fastim.server import SHUTDOWN_DEADLINE_SECONDS
from fastim.settings import load_settings
from tests.nginx import NGINX_CONF, NginxProcess, nginx_binary, render
from tests.processes import REPO_ROOT, ServeProcess, free_port, http_status
from tests.redis_server import redis_required

DEPLOY = REPO_ROOT / "deploy"
TEMPLATE = DEPLOY / "fastim@.service"
SINGLE = DEPLOY / "fastim.service"
FASTIM_EXECUTABLE = "/opt/fastim/bin/fastim"
SANDBOXING = {
    "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes",
}


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",), comment_prefixes=("#",))
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def required(tool: str) -> str:
    found = shutil.which(tool) or next((p for p in (f"/usr/bin/{tool}", f"/bin/{tool}") if Path(p).exists()), None)
    if found is None:
        if redis_required():
            pytest.fail(f"no {tool} and FASTIM_REQUIRE_REDIS is set")
        pytest.skip(f"no {tool}")
    return found


def ready_command(port: int) -> list[str]:
    """The template's ExecStartPost for the instance on ``port``, as systemd would run it."""
    line = unit(TEMPLATE)["Service"]["ExecStartPost"].replace("%i", str(port))
    argv = shlex.split(line)
    assert argv[0] == "/usr/bin/curl"
    return [required("curl"), *argv[1:]]  # where Debian puts it, or wherever this machine has it


@pytest.mark.parametrize("path", [TEMPLATE, SINGLE], ids=lambda p: p.name)
def test_the_units_say_what_the_deployment_needs(path):
    service = unit(path)["Service"]
    assert service["Type"] == "exec"
    assert "/readyz" in service["ExecStartPost"] and "--retry-connrefused" in service["ExecStartPost"]
    assert (service["Restart"], service["LimitNOFILE"], service["KillSignal"]) == ("on-failure", "1048576", "SIGTERM")
    assert service["KillMode"] == "mixed"  # --workers: only the supervisor gets SIGTERM, and passes it on
    assert int(service["RestartSec"]) >= 1 and service["EnvironmentFile"] == "-/etc/fastim/fastim.env"
    # systemd waits longer than the node's own shutdown deadline before it kills
    assert float(service["TimeoutStopSec"]) > SHUTDOWN_DEADLINE_SECONDS
    assert {key: service.get(key) for key in SANDBOXING} == SANDBOXING


def test_the_template_takes_its_port_from_the_instance_and_differs_from_the_single_unit_only_there():
    template, single = unit(TEMPLATE)["Service"], unit(SINGLE)["Service"]
    assert template["ExecStart"].endswith("--port %i") and ":%i/readyz" in template["ExecStartPost"]
    assert template["ExecStart"].replace("%i", "9000") == single["ExecStart"]
    assert template["ExecStartPost"].replace("%i", "9000") == single["ExecStartPost"]
    strip = {"ExecStart", "ExecStartPost"}
    assert {k: v for k, v in template.items() if k not in strip} == {k: v for k, v in single.items() if k not in strip}


def test_systemd_verifies_both_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here; the units are checked by parsing above")
    stub = tmp_path / "fastim"  # /opt/fastim/bin/fastim on a real host: verify checks that it is executable
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for source in (TEMPLATE, SINGLE):
        (tmp_path / source.name).write_text(source.read_text().replace(FASTIM_EXECUTABLE, str(stub)))
    (tmp_path / "fastim@9001.service").symlink_to("fastim@.service")
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "fastim.service"), str(tmp_path / "fastim@9001.service")],
        capture_output=True, text=True, timeout=60,
    )
    # verify warns about unknown keys and bad values but still exits 0: a clean unit says nothing at all
    said = [line for line in (result.stdout + result.stderr).splitlines() if "fastim" in line]
    assert result.returncode == 0 and not said, result.stdout + result.stderr


def test_the_readiness_command_returns_once_a_starting_node_is_ready(tmp_path):
    node = ServeProcess(tmp_path, name="unit").start()  # not waited for: the command does the waiting
    try:
        result = subprocess.run(ready_command(node.port), capture_output=True, text=True, timeout=40)
        assert result.returncode == 0, result.stderr
        assert http_status(f"{node.base_url}/readyz") == 200
    finally:
        assert node.stop() == 0, node.stderr_tail


def test_the_readiness_command_waits_out_a_503():
    answers = iter([503, 503])

    class Readyz(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(next(answers, 200) if self.path == "/readyz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(ready_command(server.server_address[1]), capture_output=True, text=True, timeout=40)
        assert result.returncode == 0 and next(answers, "done") == "done", result.stderr
    finally:
        server.shutdown()
        server.server_close()


# -- nginx ----------------------------------------------------------------------------------------------


def location(text: str, pattern: str) -> str:
    match = re.search(r"location " + pattern + r" \{(.*?)\n    \}", text, flags=re.S)
    assert match, pattern
    return match.group(1)


def seconds(block: str, directive: str) -> float:
    return float(re.search(rf"^\s*{directive} (\d+)s;", block, flags=re.M).group(1))


def test_nginx_conf_passes_websockets_and_the_client_address_and_outwaits_the_nodes_pings():
    text = NGINX_CONF.read_text()
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*''\s+close;\s*\}", text)
    for header in ("Upgrade $http_upgrade", "Connection $connection_upgrade", "X-Real-IP $remote_addr",
                   "X-Forwarded-For $proxy_add_x_forwarded_for"):
        assert f"proxy_set_header {header};" in text
    assert "proxy_http_version 1.1;" in text
    sockets = location(text, r"~ \^/group/\(chat\|list\)/")
    im = load_settings(environ={}).im
    assert seconds(sockets, "proxy_read_timeout") > im.ping_interval + im.ping_timeout
    assert "proxy_buffering off;" in sockets and "proxy_pass http://fastim_sockets;" in sockets
    assert "proxy_next_upstream error timeout;" in sockets  # never on a 503: that is one client's refusal
    assert "proxy_next_upstream error timeout http_502 http_503;" in location(text, "/")
    assert len(re.findall(r"server 127\.0\.0\.1:900[12] max_fails=\d+ fail_timeout=\d+s;", text)) == 2


def test_nginx_accepts_the_rendered_file_which_differs_from_the_committed_one_only_in_ports_and_log(tmp_path):
    text = NGINX_CONF.read_text()
    rendered = render(text, 18000, (18001, 18002), tmp_path / "access.log")
    changed = [(a, b) for a, b in zip(text.splitlines(), rendered.splitlines()) if a != b]
    assert len(changed) == 6 and len(text.splitlines()) == len(rendered.splitlines())
    result = NginxProcess(tmp_path / "nginx", free_port(), (free_port(), free_port())).check()
    assert result.returncode == 0, result.stderr


def test_readyz_through_nginx_answers_while_one_node_is_down(tmp_path):
    binary = nginx_binary()
    node = ServeProcess(tmp_path, name="only")
    with node, NginxProcess(tmp_path / "nginx", free_port(), (free_port(), node.port), binary) as proxy:
        statuses = [http_status(f"{proxy.base_url}/readyz") for _ in range(10)]  # the other port refuses
        assert statuses == [200] * 10, proxy.errors()
        assert http_status(f"{proxy.base_url}/metrics") == 404  # each node's own, scraped at the node
        assert http_status(f"{proxy.base_url}/test/websocket") == 200
