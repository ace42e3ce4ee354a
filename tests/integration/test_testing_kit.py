"""fastim.testing, the pytest plugin for users' tests: the README example run for real, overrides, clean-up."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from dependency_injector import providers

from fastim.server import StartupError
from fastim.testing import (  # noqa: F401 - the plugin's fixtures, for the tests of this module
    Client,
    FastimError,
    ServerThread,
    SocketClosed,
    fastim_client,
    fastim_container,
    fastim_server,
    fastim_settings,
    make_settings,
)
from tests.processes import REPO_ROOT, SETTING_PREFIXES

# Where the example lives: the README's "Testing your code against fastim".
EXAMPLE_SOURCES = (REPO_ROOT / "README.md",)
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
# A fresh interpreter imports pytest, Tornado and fastim in a few seconds; each test starts a node.
PYTEST_TIMEOUT_S = 120


def example_file(name: str) -> str:
    """The README's Python block whose first line is ``# {name}``, exactly as printed."""
    for source in EXAMPLE_SOURCES:
        for block in CODE_BLOCK.findall(source.read_text(encoding="utf-8")):
            if block.startswith(f"# {name}\n"):
                return block
    raise AssertionError(f"no python block starting with '# {name}' in {[str(s) for s in EXAMPLE_SOURCES]}")


def run_pytest(directory: Path) -> subprocess.CompletedProcess:
    """``python -m pytest`` in ``directory``, as a user runs it there: no fastim settings, this repository unseen."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES) and k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=directory, env=environ, capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S,
    )


def a_users_project(tmp_path: Path, files: dict[str, str]) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    assert not any(project.iterdir())
    for name, text in files.items():
        (project / name).write_text(text, encoding="utf-8")
    return project


def test_the_readme_example_passes_in_an_empty_directory(tmp_path):
    project = a_users_project(tmp_path, {"conftest.py": example_file("conftest.py"),
                                         "test_chat.py": example_file("test_chat.py")})
    result = run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout


CLEAN_UP = '''
import threading
import urllib.request

seen = {}


def test_a_sync_test_reaches_the_node(fastim_server):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(fastim_server.url + "/healthz", timeout=5) as answer:
        assert answer.status == 200
    seen["port"] = int(fastim_server.url.rsplit(":", 1)[1])
    assert any(thread.name.startswith("fastim-node-") for thread in threading.enumerate())


def test_the_node_is_gone_after_its_test():
    import socket
    try:
        socket.create_connection(("127.0.0.1", seen["port"]), timeout=1).close()
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("the port is still open")
    assert not any(thread.name.startswith("fastim-node-") for thread in threading.enumerate())
'''


def test_the_server_fixture_stops_the_node_and_closes_its_port_after_the_test(tmp_path):
    project = a_users_project(tmp_path, {"conftest.py": 'pytest_plugins = ["fastim.testing"]\n',
                                         "test_clean_up.py": CLEAN_UP})
    result = run_pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2 passed\b", result.stdout), result.stdout


class OnlyAlice:
    async def authenticate(self, user_id: str, password: str) -> bool:
        return (user_id, password) == ("alice", "secret")


def test_a_provider_overridden_on_the_container_is_the_one_the_node_uses(fastim_settings, fastim_container):
    fastim_container.authenticator.override(providers.Object(OnlyAlice()))
    with ServerThread(fastim_settings, fastim_container) as server:
        client = Client(server.url)
        assert asyncio.run(client.login("alice", "secret")).user_id == "alice"
        for user_id, password in (("alice", "password"), ("bob", "secret")):
            with pytest.raises(FastimError) as refused:
                asyncio.run(client.login(user_id, password))
            assert refused.value.code == 100
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


@pytest.mark.gen_test(timeout=20)
async def test_the_client_works_in_gen_test_and_run_reaches_the_nodes_services(fastim_server, fastim_client,
                                                                                fastim_container):
    session = await fastim_client.login("u1")
    async with session.chat("g1") as room:
        assert room.opening["list"] == [] and room.opening["total"] == 0
        await room.send("from the socket")
        assert (await room.receive())["info"] == "from the socket"
        # A message posted by the node's own services reaches the socket too.
        fastim_server.run(fastim_container.messages().post("g1", "bot", "from the server side"))
        assert (await room.receive())["userId"] == "bot"
        with pytest.raises(TimeoutError):
            await room.receive(timeout=0.2)
    page = fastim_server.run(fastim_container.message_repository().newest("g1", 10))
    assert [message.info for message in page.messages] == ["from the socket", "from the server side"]
    assert fastim_server.chat_url("g 1", "u1", "t") == fastim_server.ws_url("/group/chat/g%201/u1/t")


def test_error_frames_and_refused_sockets_raise():
    settings = make_settings(im__login_auth=1, im__max_message_bytes=8)
    with ServerThread(settings, make_container(settings)) as server:
        async def scenario():
            client = Client(server.url)
            with pytest.raises(SocketClosed) as closed:
                await client.chat("g1", "u1", "not-a-token")
            assert closed.value.code == 4440
            session = await client.login("u1")
            async with session.chat("g1") as room:
                await room.send("far too long for eight bytes")
                with pytest.raises(FastimError) as refused:
                    await room.receive()
                assert refused.value.code == 413

        asyncio.run(scenario())


def test_a_node_that_cannot_start_raises_and_leaves_nothing_behind():
    settings = make_settings(storage__backend="redis", storage__redis_url="redis://127.0.0.1:1/0")
    before = {thread.name for thread in threading.enumerate()}
    server = ServerThread(settings, make_container(settings))
    with pytest.raises(StartupError, match="cannot reach Redis"):
        server.start()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    assert {thread.name for thread in threading.enumerate()} <= before


def test_settings_are_named_section__key():
    assert make_settings(im__list_num=3).im.list_num == 3
    assert make_settings().storage.backend == "memory"
    with pytest.raises(TypeError):
        make_settings(list_num=3)


def make_container(settings):
    from fastim.container import build_container

    return build_container(settings)
