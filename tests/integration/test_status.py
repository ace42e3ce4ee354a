"""``fastim status`` against two real nodes on one redis-server, with sockets open and messages flowing."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.interfaces.ws_client import Client
from tests.processes import REPO_ROOT, ServeProcess, child_environ, start_nodes

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def nodes(redis_server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("status")
    pair = [ServeProcess(workdir, name=name, backend="redis", redis_url=redis_server.url) for name in ("a", "b")]
    start_nodes(pair)
    yield pair
    assert [node.stop() for node in pair] == [0, 0]


async def status(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastim", "status", *args, cwd=REPO_ROOT, env=child_environ(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    return process.returncode, out.decode(), err.decode()


def row(output: str, url: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.startswith(url))


@pytest.mark.gen_test(timeout=30)
async def test_status_shows_each_nodes_sockets_groups_and_rates(nodes):
    a, b = nodes
    sockets = [await Client.connect(a.base_url, f"/group/chat/st{i % 2}/u{i}/any") for i in range(3)]
    sockets.append(await Client.connect(b.base_url, "/group/chat/st0/w/any"))
    sockets.append(await Client.connect(b.base_url, "/group/list/w/any"))
    for socket in sockets:
        await socket.json()
    sender = sockets[0]

    async def send_steadily():
        for i in range(40):
            await sender.send(f"m{i}")
            await asyncio.sleep(0.05)

    sending = asyncio.ensure_future(send_steadily())
    code, out, err = await status("--url", f"{a.base_url},{b.base_url}", "--interval", "1")
    await sending
    assert code == 0, err
    assert out.splitlines()[0].split()[:5] == ["node", "ready", "chat", "list", "groups"]
    on_a, on_b = row(out, a.base_url), row(out, b.base_url)
    assert on_a[1:5] == ["yes", "3", "0", "2"] and on_b[1:5] == ["yes", "1", "1", "1"]
    assert 5 <= float(on_a[5]) <= 25  # messages stored per second from a's sockets (about 20)
    assert float(on_b[6]) >= 5  # b delivers them to its chat socket
    assert on_a[8] == "ok" and on_b[8] == "ok"
    assert "total (2/2 up)" in out
    for socket in sockets:
        socket.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_node_that_is_down_is_shown_and_fails_the_exit_status(nodes):
    code, out, _ = await status("--url", nodes[0].base_url, "--url", "http://127.0.0.1:1", "--interval", "0.2")
    assert code == 1
    assert row(out, "http://127.0.0.1:1")[1] == "DOWN"
    assert row(out, nodes[0].base_url)[1] == "yes"
