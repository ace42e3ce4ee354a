"""SPEC §6 promises on real processes and a real redis-server: slow consumers, Redis outages, shutdown, metrics."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from urllib.parse import urlencode

import pytest
import redis
from tornado.httpclient import AsyncHTTPClient

from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess, start_nodes
from tests.redis_server import RedisServer, find_binary

pytestmark = pytest.mark.redis


async def fetch(url, body=None, method=None, headers=None):
    client = AsyncHTTPClient()
    method = method or ("POST" if body is not None else "GET")
    return await client.fetch(url, method=method, body=body, headers=headers, raise_error=False, request_timeout=5)


async def envelope(node, path, fields=None):
    response = await fetch(node.base_url + path, urlencode(fields or {}))
    return response.code, json.loads(response.body)


def metric(text: str, name: str) -> float:
    """The value of one sample line of a Prometheus exposition."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"{name} not in metrics")


async def metrics_of(node) -> str:
    return (await fetch(node.base_url + "/metrics")).body.decode()


@pytest.fixture
def redis_url(fresh_redis):
    return fresh_redis.url


class TestSlowConsumer:
    PENDING = 64 * 1024
    INFO = "x" * 3000
    COUNT = 4000  # 12 MB: more than loopback socket buffers absorb, so the backlog must build up in the node

    @pytest.fixture
    def node(self, redis_url, tmp_path):
        environ = {
            "FASTIM_IM_MAX_PENDING_BYTES": str(self.PENDING),
            "FASTIM_IM_RATE_LIMIT": "100000",
            "FASTIM_IM_RATE_BURST": "100000",
            "FASTIM_IM_HISTORY_MAX": "100",
        }
        node = ServeProcess(tmp_path, backend="redis", redis_url=redis_url, environ=environ).start()
        yield node.wait_until_serving()
        node.stop()

    @pytest.mark.gen_test(timeout=90)
    async def test_a_client_that_stops_reading_is_closed_1008_and_the_others_get_everything(self, node):
        slow = await Client.connect(node.ws_url, "/group/chat/1/slow/any")
        await slow.json()  # the snapshot; from now on it reads nothing
        fast = await Client.connect(node.ws_url, "/group/chat/1/fast/any")
        await fast.json()
        sender = await Client.connect(node.ws_url, "/group/chat/1/sender/any")
        await sender.json()

        async def send_all():
            for i in range(self.COUNT):
                await sender.send(f"{i} {self.INFO}")

        async def read_all(client):
            for i in range(self.COUNT):
                frame = await client.json(timeout=20)
                assert frame["info"].startswith(f"{i} "), frame.get("info", frame)[:40]

        await asyncio.gather(send_all(), read_all(fast), read_all(sender))
        text = await metrics_of(node)
        assert metric(text, "fastim_slow_consumer_disconnects_total") == 1
        assert "closing a chat socket whose unsent backlog passed" in node.stderr
        code, _ = await slow.closed(timeout=30)  # draining what was queued before the close frame
        assert code == 1008


class TestRedisOutage:
    """Stop and restart a real, persistent redis-server under two nodes with connected clients."""

    @pytest.fixture
    def own_redis(self):
        server = RedisServer(find_binary(), persistent=True)
        server.start()
        yield server
        server.cleanup()

    @pytest.fixture
    def nodes(self, own_redis, tmp_path):
        pair = [
            ServeProcess(tmp_path, name=name, backend="redis", redis_url=own_redis.url) for name in ("a", "b")
        ]
        start_nodes(pair)
        yield pair
        for node in pair:
            node.stop()

    @pytest.mark.gen_test(timeout=90)
    async def test_nodes_answer_503_keep_sockets_and_resume_and_no_acknowledged_message_is_lost(
        self, own_redis, nodes
    ):
        a, b = nodes
        sender = await Client.connect(a.ws_url, "/group/chat/g/alice/any")
        await sender.json()
        receiver = await Client.connect(b.ws_url, "/group/chat/g/bob/any")
        await receiver.json()
        echoed: list[dict] = []
        refused: list[dict] = []

        async def send_and_wait(text):
            await sender.send(text)
            frame = await sender.json(timeout=10)
            (echoed if "info" in frame else refused).append(frame)
            return frame

        for i in range(5):
            await send_and_wait(f"before {i}")
        assert [f["info"] for f in [await receiver.json() for _ in range(5)]] == [f"before {i}" for i in range(5)]

        own_redis.stop()
        frame = await send_and_wait("during the outage")
        assert frame["code"] == 503, frame
        code, body = await envelope(a, "/user/login", {"userId": "1", "password": "x"})
        assert code == 503 and body["code"] == 503
        assert (await fetch(b.base_url + "/readyz")).code == 503
        assert sender.close_code is None and receiver.close_code is None  # the sockets stay open

        own_redis.start()  # same port, same append-only file
        deadline = time.monotonic() + 20
        while (await fetch(b.base_url + "/readyz")).code != 200:
            assert time.monotonic() < deadline, "node b never became ready again"
            await asyncio.sleep(0.1)
        resumed = None
        for attempt in range(100):  # the broker resubscribes with backoff; send until the other node hears
            frame = await send_and_wait(f"after {attempt}")
            if "info" in frame:
                try:
                    resumed = await receiver.json(timeout=1)
                except asyncio.TimeoutError:
                    continue
                break
            await asyncio.sleep(0.1)
        assert resumed is not None and resumed["info"].startswith("after"), "delivery did not resume"
        assert sender.close_code is None and receiver.close_code is None  # no client had to reconnect

        stored = redis.Redis.from_url(own_redis.url, decode_responses=True).lrange("gml:g", 0, -1)
        stored_keys = {(m["userId"], m["ts"], m["info"]) for m in map(json.loads, stored)}
        for frame in echoed:
            assert (frame["userId"], frame["ts"], frame["info"]) in stored_keys, frame
        assert any(frame["code"] == 503 for frame in refused)
        text = await metrics_of(a)
        assert metric(text, "fastim_storage_errors_total") >= 2
        assert metric(await metrics_of(b), "fastim_broker_reconnects_total") >= 1


class TestGracefulShutdown:
    @pytest.mark.gen_test(timeout=60)
    async def test_sigterm_closes_sockets_with_1001_and_exits_0(self, redis_url, tmp_path):
        node = ServeProcess(tmp_path, backend="redis", redis_url=redis_url).start().wait_until_serving()
        try:
            chat = await Client.connect(node.ws_url, "/group/chat/1/u/any")
            await chat.json()
            group_list = await Client.connect(node.ws_url, "/group/list/u/any")
            await group_list.json()
            started = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            assert (await chat.closed(timeout=10))[0] == 1001
            assert (await group_list.closed(timeout=10))[0] == 1001
            assert await asyncio.to_thread(node.process.wait, 10) == 0
            assert time.monotonic() - started < 10
            assert "closing 2 WebSocket connections" in node.stderr
        finally:
            node.stop()


class TestMetrics:
    @pytest.mark.gen_test(timeout=60)
    async def test_metrics_count_sockets_messages_deliveries_and_rejections(self, redis_url, tmp_path):
        environ = {"FASTIM_IM_MAX_MESSAGE_BYTES": "10"}
        node = ServeProcess(tmp_path, backend="redis", redis_url=redis_url, environ=environ).start()
        node.wait_until_serving()
        try:
            first = await Client.connect(node.ws_url, "/group/chat/1/a/any")
            await first.json()
            second = await Client.connect(node.ws_url, "/group/chat/1/b/any")
            await second.json()
            listing = await Client.connect(node.ws_url, "/group/list/a/any")
            await listing.json()
            await first.send("hello")
            await first.json()
            await second.json()
            await first.send("far too long for ten bytes")
            assert (await first.json())["code"] == 413
            response = await fetch(node.base_url + "/metrics")
            assert response.code == 200 and response.headers["Content-Type"].startswith("text/plain")
            text = response.body.decode()
            assert metric(text, 'fastim_open_sockets{kind="chat"}') == 2
            assert metric(text, 'fastim_open_sockets{kind="list"}') == 1
            assert metric(text, "fastim_messages_received_total") == 1
            assert metric(text, "fastim_deliveries_total") == 3  # two chat sockets and a's group-list socket
            assert metric(text, 'fastim_rejected_frames_total{reason="too_large"}') == 1
            assert metric(text, "fastim_fanout_latency_seconds_count") == 1
        finally:
            node.stop()
