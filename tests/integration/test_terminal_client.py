"""``fastim send``, ``fastim tail`` (subprocesses) and ``fastim chat`` (in a real terminal: tmux) against a real node."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.processes import ServeProcess, child_environ, free_port

pytestmark = pytest.mark.redis

KEY = "terminal-test-api-key-0123456789"
RUN_TIMEOUT_S = 20.0  # one command against a local node; a cold interpreter takes about a second
POLL_S = 0.1
# Under the 4095 characters a terminal in canonical mode passes as one line, so a typed line can be too long.
MAX_MESSAGE_BYTES = 1000


@pytest.fixture(scope="module")
def node(redis_server, tmp_path_factory):
    """One node with open WebSockets (login_auth = 0: the token '-' is accepted) and the server API."""
    workdir = tmp_path_factory.mktemp("terminal")
    environ = {"FASTIM_API_KEY": KEY, "FASTIM_IM_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
    with ServeProcess(workdir, backend="redis", redis_url=redis_server.url, environ=environ) as serving:
        yield serving


def fastim(*args: str, timeout: float = RUN_TIMEOUT_S, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastim", *args], env=child_environ(), capture_output=True,
                          text=True, timeout=timeout, input=stdin)


def api(node: ServeProcess, path: str, body: dict) -> dict:
    request = urllib.request.Request(node.base_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def history(node: ServeProcess, group: str) -> list[dict]:
    """The group's messages, read over HTTP by a user who logs in for it."""
    def post(path: str, form: str, headers: dict[str, str]) -> dict:
        request = urllib.request.Request(node.base_url + path, data=form.encode(), method="POST", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    token = post("/user/login", "userId=reader&password=any", {})["msg"]
    answer = post("/group/listMessage", f"groupId={group}&startPage=0&endPage=-1",
                  {"userId": "reader", "token": token})
    return [json.loads(item) for item in answer["data"]]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- fastim send -----------------------------------------------------------------------------

def test_send_prints_the_id_of_the_stored_message(node):
    group = unique("send")
    done = fastim("send", "--url", node.base_url, group, "alice", "hello there")
    assert done.returncode == 0, done.stderr
    stored = history(node, group)
    assert [(m["userId"], m["info"]) for m in stored] == [("alice", "hello there")]
    assert done.stdout == stored[0]["id"] + "\n" and done.stderr == ""


def test_send_refused_by_the_node_exits_1_with_its_reason(node):
    done = fastim("send", "--url", node.base_url, unique("send"), "alice", "x" * 1500)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "413" in done.stderr and "over the limit of 1000" in done.stderr


def test_send_usage_errors_exit_2(node):
    assert fastim("send", "--url", node.base_url, "g").returncode == 2
    done = fastim("send", "--url", "ftp://example", "g", "u", "x")
    assert done.returncode == 2 and "http://HOST:PORT" in done.stderr


def test_send_to_a_node_that_is_not_there_exits_3():
    done = fastim("send", "--url", f"http://127.0.0.1:{free_port()}", "g", "u", "x")
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and "cannot reach" in done.stderr


def test_send_with_a_password_logs_in_first(node):
    done = fastim("send", "--url", node.base_url, "--password", "any", unique("send"), "bob", "logged in")
    assert done.returncode == 0, done.stderr
    refused = fastim("send", "--url", node.base_url, "--password", "any", "g", "has space", "x")
    assert refused.returncode == 1 and refused.stderr.startswith("fastim send: 400 ")


# -- fastim tail -----------------------------------------------------------------------------

class Tail:
    """A ``fastim tail`` process; its stdout read line by line with a deadline, stopped by PID."""

    def __init__(self, *args: str, workdir: Path) -> None:
        self.stderr_path = workdir / f"tail-{uuid.uuid4().hex[:8]}.err"
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "fastim", "tail", *args], env=child_environ(),
                                        stdout=subprocess.PIPE, stderr=self._stderr)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""

    def line(self, timeout: float = RUN_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            assert time.monotonic() < deadline, f"no line from tail; stderr: {self.stderr}"
            try:
                chunk = os.read(self.process.stdout.fileno(), 65536)
            except BlockingIOError:
                time.sleep(POLL_S)
                continue
            assert chunk, f"tail exited: {self.stderr}"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        self._stderr.close()


@pytest.fixture
def tails(tmp_path):
    started: list[Tail] = []

    def start(*args: str) -> Tail:
        tail = Tail(*args, workdir=tmp_path)
        started.append(tail)
        return tail

    yield start
    for tail in started:
        tail.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_tail_prints_each_event_as_a_json_line_until_interrupted(node, tails, signum):
    group = unique("tail")
    assert fastim("send", "--url", node.base_url, group, "alice", "before").returncode == 0
    tail = tails("--url", node.base_url, group)
    first = tail.line()
    assert (first["userId"], first["info"], first["seq"]) == ("alice", "before", 1)  # the newest, first
    sent = fastim("send", "--url", node.base_url, group, "bob", "héllo \"quoted\"\nsecond line")
    assert sent.returncode == 0, sent.stderr
    second = tail.line()
    assert second == {"groupId": group, "userId": "bob", "info": "héllo \"quoted\"\nsecond line",
                      "ts": second["ts"], "id": sent.stdout.strip(), "seq": 2}
    recall = api(node, "/api/recall", {"groupId": group, "id": second["id"]})
    assert recall["code"] == 200, recall
    assert tail.line() == recall["data"]  # {"event":"recall",...}, as the node sends it
    tail.process.send_signal(signum)
    assert tail.wait() == 0
    assert tail.stderr == ""


def test_tail_ends_with_1_and_one_line_when_the_node_closes_it_for_good(node, tails):
    user, group = unique("victim"), unique("tail")
    tail = tails("--url", node.base_url, "--user", user, "--password", "any", group)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not online(node, group):  # until its socket is open: the disconnect must find it
        assert tail.process.poll() is None and time.monotonic() < deadline, tail.stderr
        time.sleep(POLL_S)
    assert api(node, "/api/disconnect", {"userId": user})["code"] == 200
    assert tail.wait() == 1
    assert tail.stderr.count("\n") == 1 and "4403" in tail.stderr, tail.stderr


def online(node: ServeProcess, group: str) -> list[str]:
    """The users the node counts online in the group (the server API's presence)."""
    request = urllib.request.Request(node.base_url + f"/api/presence/{group}", headers={"Authorization": f"apikey {KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return [user["userId"] for user in json.loads(response.read())["data"]["users"]]


# -- fastim chat, in a real terminal ---------------------------------------------------------

@pytest.fixture
def terminal(tmp_path):
    """A private tmux server (its own socket): ``start(command)`` opens a 200x50 session; killed by name at the end."""
    if shutil.which("tmux") is None:
        if os.environ.get("FASTIM_REQUIRE_REDIS"):
            pytest.fail("tmux is not installed and FASTIM_REQUIRE_REDIS is set (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    socket_name = unique("fastim-test")
    sessions: list[str] = []

    def tmux(*args: str) -> str:
        done = subprocess.run(["tmux", "-L", socket_name, *args], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "TERM": "xterm"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    class Terminal:
        def start(self, command: list[str]) -> str:
            name = unique("chat")
            sessions.append(name)
            environ = " ".join(f"{k}={shlex.quote(v)}" for k, v in child_environ().items() if k == "PYTHONPATH")
            shell = f"env {environ} {shlex.join(command)}; echo EXIT=$?; sleep 60"
            tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50", shell)
            return name

        def keys(self, name: str, *keys: str) -> None:
            tmux("send-keys", "-t", name, *keys)

        def screen(self, name: str) -> str:
            return tmux("capture-pane", "-p", "-t", name)

        def wait_for(self, name: str, text: str, timeout: float = RUN_TIMEOUT_S) -> str:
            deadline = time.monotonic() + timeout
            while text not in (screen := self.screen(name)):
                assert time.monotonic() < deadline, f"{text!r} not on the screen:\n{screen}"
                time.sleep(POLL_S)
            return screen

    yield Terminal()
    for name in sessions:
        subprocess.run(["tmux", "-L", socket_name, "kill-session", "-t", name], capture_output=True, timeout=10)


def test_chat_in_a_terminal(node, terminal):
    group = unique("room")
    assert fastim("send", "--url", node.base_url, group, "carol", "earlier").returncode == 0
    session = terminal.start([sys.executable, "-m", "fastim", "chat", "--url", node.base_url, group, "alice"])
    terminal.wait_for(session, "Ctrl-D or Ctrl-C to leave")
    terminal.wait_for(session, "<carol> earlier")  # the newest messages come first

    terminal.keys(session, "hello from a terminal", "Enter")
    terminal.wait_for(session, "<alice> hello from a terminal")  # the echo: stored

    sent = fastim("send", "--url", node.base_url, group, "bob", "hi alice")
    assert sent.returncode == 0
    terminal.wait_for(session, "<bob> hi alice")
    assert api(node, "/api/recall", {"groupId": group, "id": sent.stdout.strip()})["code"] == 200
    terminal.wait_for(session, "* bob recalled a message")

    terminal.keys(session, "x" * 1500, "Enter")
    terminal.wait_for(session, "! not sent: 413")

    terminal.keys(session, "C-d")
    screen = terminal.wait_for(session, "EXIT=")
    assert "EXIT=0" in screen, screen
    lines = [line for line in screen.splitlines() if line.strip()]
    timed = [line for line in lines if "<" in line]
    assert all(line[:8].count(":") == 2 and line[:2].isdigit() for line in timed), timed
    assert [m["info"] for m in history(node, group)] == ["earlier", "hello from a terminal"]


def test_chat_reads_piped_lines_and_sends_each_before_leaving(node):
    group = unique("piped")
    done = fastim("chat", "--url", node.base_url, group, "gina", stdin="one\n\ntwo\n" + "y" * 1500 + "\nthree")
    assert done.returncode == 0, done.stderr
    assert [m["info"] for m in history(node, group)] == ["one", "two", "three"]  # the empty line is not sent
    assert "! not sent: 413" in done.stdout and "<gina> three" in done.stdout


def test_chat_ends_with_1_when_the_node_closes_it_for_good(node, terminal):
    user = unique("idle")
    session = terminal.start([sys.executable, "-m", "fastim", "chat", "--url", node.base_url, unique("room"), user])
    terminal.wait_for(session, "Ctrl-D or Ctrl-C to leave")
    assert api(node, "/api/disconnect", {"userId": user})["code"] == 200
    screen = terminal.wait_for(session, "EXIT=")  # at once, though nothing was typed
    assert "closed by the node: 4403" in screen and "EXIT=1" in screen, screen


def test_chat_leaves_on_ctrl_c_with_status_0(node, terminal):
    session = terminal.start([sys.executable, "-m", "fastim", "chat", "--url", node.base_url, unique("room"), "dave"])
    terminal.wait_for(session, "Ctrl-D or Ctrl-C to leave")
    terminal.keys(session, "C-c")
    screen = terminal.wait_for(session, "EXIT=")
    assert "EXIT=0" in screen and "Traceback" not in screen, screen


def test_chat_and_tail_ride_out_a_node_restart(redis_server, tmp_path, terminal, tails):
    """The node goes away (SIGTERM) and comes back on its port: one status line in chat, nothing lost or doubled."""
    group = unique("restart")
    first = ServeProcess(tmp_path, name="first", backend="redis", redis_url=redis_server.url).start()
    again = ServeProcess(tmp_path, name="again", backend="redis", redis_url=redis_server.url, port=first.port)
    try:
        first.wait_until_serving()
        url = first.base_url
        session = terminal.start([sys.executable, "-m", "fastim", "chat", "--url", url, group, "erin"])
        terminal.wait_for(session, "Ctrl-D or Ctrl-C to leave")
        tail = tails("--url", url, group)
        terminal.keys(session, "before the restart", "Enter")
        terminal.wait_for(session, "<erin> before the restart")
        assert tail.line()["info"] == "before the restart"

        assert first.stop() == 0
        again.start().wait_until_serving()
        sent = fastim("send", "--url", url, group, "frank", "after the restart")
        assert sent.returncode == 0, sent.stderr
        screen = terminal.wait_for(session, "<frank> after the restart")
        assert screen.count("-- reconnected after 1001") == 1, screen
        assert screen.count("connection lost") <= 1  # said once, and only if the node took over 5 s to return
        assert tail.line()["info"] == "after the restart"  # and not "before the restart" again

        terminal.keys(session, "still here", "Enter")
        terminal.wait_for(session, "<erin> still here")
        assert tail.line()["info"] == "still here"
        assert tail.stderr.count("reconnecting") == 1
    finally:
        first.stop()
        again.stop()
