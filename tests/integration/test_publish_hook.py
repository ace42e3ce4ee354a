"""The publish hook on a real ``fastim serve`` node with a real redis-server, the application played by the test."""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.hook_server import HookServer, serving
from tests.interfaces.ws_client import Client
from tests.processes import free_port

pytestmark = pytest.mark.redis

TIMEOUT_S = 1.0  # [hooks] timeout of the nodes here


def moderate(request: dict) -> tuple[int, bytes]:
    """The application: refuses spam, masks one word, accepts the rest."""
    info = request["info"]
    if "spam" in info:
        return 200, json.dumps({"reject": "no spam here"}).encode()
    if "darn" in info:
        return 200, json.dumps({"info": info.replace("darn", "****")}).encode()
    return 200, b"{}"


@pytest.fixture
def hook_server(io_loop):
    with serving(io_loop, HookServer(moderate)) as server:
        yield server


@pytest.fixture
def hooked_node(node_factory, hook_server):
    def start(**settings):
        node = node_factory(FASTIM_HOOKS_PUBLISH_URL=hook_server.url, FASTIM_HOOKS_TIMEOUT=TIMEOUT_S,
                            FASTIM_IM_RATE_LIMIT=1000, FASTIM_IM_RATE_BURST=1000, **settings)
        return node
    return start


async def fetch(url: str):
    return await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=5)


async def metric(node, sample: str) -> float:
    text = (await fetch(node.base_url + "/metrics")).body.decode()
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError(f"{sample} not in the node's metrics")


async def joined(sockets, node, group, user) -> Client:
    client = await Client.connect(node.base_url, f"/group/chat/{group}/{user}/any")
    sockets.append(client)
    await client.json()
    return client


async def history(sockets, node, group) -> list[str]:
    """The texts of the group as a newly opened socket's opening frame lists them."""
    client = await Client.connect(node.base_url, f"/group/chat/{group}/watcher/any")
    sockets.append(client)
    return [message["info"] for message in (await client.json())["list"]]


def assert_no_errors(node) -> None:
    log = node.stderr
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.gen_test(timeout=30)
async def test_the_application_rejects_replaces_and_accepts(hooked_node, hook_server, sockets):
    node = hooked_node()
    sender = await joined(sockets, node, "1", "7")
    reader = await joined(sockets, node, "1", "8")
    await sender.send("buy spam now")
    assert await sender.json() == {"code": 403, "msg": "no spam here"}
    await sender.send("oh darn it")
    assert (await sender.json())["info"] == "oh **** it"
    assert (await reader.json())["info"] == "oh **** it"
    await sender.send("fine")
    assert (await sender.json())["info"] == "fine"
    assert await history(sockets, node, "1") == ["oh **** it", "fine"]
    assert hook_server.requests[0] == {"groupId": "1", "userId": "7", "info": "buy spam now"}
    for outcome in ("rejected", "replaced", "accepted"):
        assert await metric(node, f'fastim_hook_calls_total{{outcome="{outcome}"}}') == 1
    assert await metric(node, "fastim_hook_latency_seconds_count") == 3
    assert await metric(node, 'fastim_rejected_frames_total{reason="rejected"}') == 1
    for i in range(30):
        await sender.send(f"more {i}")
        await sender.json()
    assert hook_server.connections <= 2  # one kept-alive connection served them all
    assert_no_errors(node)


@pytest.mark.gen_test(timeout=30)
async def test_a_hanging_then_stopped_application_gets_503_and_the_node_stays_responsive(
        hooked_node, hook_server, sockets):
    node = hooked_node()

    def hang_on_stuck(request):
        return hook_server.hang(request) if request["info"] == "stuck" else moderate(request)

    hook_server.answer = hang_on_stuck
    stuck = await joined(sockets, node, "1", "7")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stuck.send("stuck")
    await asyncio.sleep(0.1)
    # While that review hangs, the node opens sockets, stores other sends, and answers /healthz.
    other = await joined(sockets, node, "2", "8")
    await other.send("meanwhile")
    assert (await other.json())["info"] == "meanwhile"
    assert (await fetch(node.base_url + "/healthz")).code == 200
    assert loop.time() - started < TIMEOUT_S
    frame = await stuck.json(timeout=TIMEOUT_S + 3)
    assert frame["code"] == 503 and "not sent" in frame["msg"]
    assert loop.time() - started >= TIMEOUT_S * 0.9
    assert await metric(node, 'fastim_hook_failures_total{cause="timeout"}') == 1

    await hook_server.stop()
    for i in range(20):
        await stuck.send(f"down {i}")
        frame = await stuck.json()
        assert frame["code"] == 503, frame
    assert await history(sockets, node, "1") == []
    assert await metric(node, 'fastim_hook_failures_total{cause="unreachable"}') == 20
    assert await metric(node, 'fastim_rejected_frames_total{reason="hook_failed"}') == 21
    lines = [line for line in node.stderr.splitlines() if "publish hook failed" in line]
    assert 1 <= len(lines) <= 2, lines  # rationed: not one line per send
    assert_no_errors(node)


@pytest.mark.gen_test(timeout=30)
async def test_fail_open_stores_sends_unreviewed_while_the_application_is_down(node_factory, sockets):
    node = node_factory(FASTIM_HOOKS_PUBLISH_URL=f"http://127.0.0.1:{free_port()}/review",
                        FASTIM_HOOKS_FAIL="open", FASTIM_HOOKS_TIMEOUT=TIMEOUT_S)
    client = await joined(sockets, node, "1", "7")
    await client.send("buy spam now")  # the application would refuse it, were it up
    assert (await client.json())["info"] == "buy spam now"
    assert await history(sockets, node, "1") == ["buy spam now"]
    assert await metric(node, 'fastim_hook_failures_total{cause="unreachable"}') == 1
    assert "sends are stored unreviewed" in node.stderr
    assert_no_errors(node)
