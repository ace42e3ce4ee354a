"""Issue 13 on real nodes and a real redis-server: resume by seq, gap repair, honest answers during a stall."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import redis
from tornado.httpclient import AsyncHTTPClient

from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess, start_nodes
from tests.redis_server import RedisServer, find_binary

pytestmark = pytest.mark.redis

FAST = {"FASTIM_IM_RATE_LIMIT": "10000", "FASTIM_IM_RATE_BURST": "10000"}


@pytest.fixture
def two_nodes(fresh_redis, tmp_path):
    def start(**environ: str) -> list[ServeProcess]:
        pair = [ServeProcess(tmp_path, name=name, backend="redis", redis_url=fresh_redis.url,
                             environ={**FAST, **environ}) for name in ("a", "b")]
        started.extend(pair)
        return start_nodes(pair)

    started: list[ServeProcess] = []
    yield start
    for node in started:
        node.stop()


async def open_chat(node: ServeProcess, group: str, user: str, since: int | None = None,
                    epoch: str | None = None) -> tuple[Client, dict]:
    query = "" if since is None else f"?since={since}" + (f"&epoch={epoch}" if epoch is not None else "")
    client = await Client.connect(node.base_url, f"/group/chat/{group}/{user}/any{query}")
    return client, await client.json()


async def events_of(client: Client, count: int, timeout: float = 10) -> list[dict]:
    return [await client.json(timeout=timeout) for _ in range(count)]


@pytest.mark.gen_test(timeout=60)
async def test_a_client_back_after_30_messages_and_2_recalls_gets_exactly_what_it_missed(two_nodes):
    a, b = two_nodes()
    watcher, opening = await open_chat(a, "g", "watcher")
    sender, _ = await open_chat(b, "g", "sender")
    for i in range(5):
        await sender.send(f"before {i}")
    seen = await events_of(watcher, 5)
    since, epoch = seen[-1]["seq"], opening["epoch"] or seen[-1]["id"].split("-")[0]
    early_id = seen[2]["id"]
    watcher.close()

    sent = []
    for i in range(30):
        await sender.send(f"missed {i}")
    sent = await events_of(sender, 5 + 30)
    sent = sent[5:]
    api = Api(AsyncHTTPClient(), b.base_url)
    await api.login("sender")
    for message_id in (sent[9]["id"], early_id):
        status, body = await api.post("/group/delMessage", {"groupId": "g", "id": message_id}, user="sender")
        assert body["code"] == 200, body

    back, opening = await open_chat(a, "g", "watcher", since=since, epoch=epoch)
    assert opening["recovered"] is True and opening["epoch"] == epoch and opening["seq"] == 37
    listed = opening["list"]
    assert [event["seq"] for event in listed] == [*range(6, 15), *range(16, 38)]  # 15 was recalled
    assert [event.get("info") for event in listed[:3]] == ["missed 0", "missed 1", "missed 2"]
    recalls = [event for event in listed if event.get("event") == "recall"]
    assert [(r["id"], r["seq"]) for r in recalls] == [(sent[9]["id"], 36), (early_id, 37)]
    assert len({event["seq"] for event in listed}) == len(listed)
    await sender.send("live again")
    live = await back.json()
    assert (live["info"], live["seq"]) == ("live again", 38)
    assert await back.silent_for(0.3)


@pytest.mark.gen_test(timeout=60)
async def test_a_resume_that_cannot_be_whole_says_so_and_sends_the_newest_list(two_nodes):
    a, b = two_nodes(FASTIM_IM_HISTORY_MAX="10", FASTIM_IM_LIST_NUM="3", FASTIM_IM_RECOVER_MAX="20")
    sender, opening = await open_chat(b, "g", "sender")
    for i in range(30):
        await sender.send(f"m{i}")
    sent = await events_of(sender, 30)
    epoch = sent[0]["id"].split("-")[0]

    trimmed, opening = await open_chat(a, "g", "late", since=15, epoch=epoch)  # 16..19 are trimmed
    assert opening["recovered"] is False and [m["seq"] for m in opening["list"]] == [28, 29, 30]
    whole, opening = await open_chat(a, "g", "late", since=22, epoch=epoch)  # 23..30 are kept
    assert opening["recovered"] is True and [m["seq"] for m in opening["list"]] == list(range(23, 31))
    other_epoch, opening = await open_chat(a, "g", "late", since=22, epoch="0badc0de")
    assert opening["recovered"] is False and opening["epoch"] == epoch and len(opening["list"]) == 3
    too_far, opening = await open_chat(a, "g", "late", since=5, epoch=epoch)  # 25 events back, more than 20
    assert opening["recovered"] is False
    ahead, opening = await open_chat(a, "g", "late", since=99, epoch=epoch)
    assert opening["recovered"] is False
    bad, _ = await Client.connect(a.base_url, "/group/chat/g/late/any?since=-1"), None
    assert (await bad.closed())[0] == 4400


@pytest.mark.gen_test(timeout=60)
async def test_after_the_group_expired_a_resume_gets_the_new_stream(two_nodes):
    a, b = two_nodes(FASTIM_IM_MESSAGE_TIMEOUT="1")
    sender, _ = await open_chat(b, "g", "sender")
    await sender.send("before")
    old = await sender.json()
    sender.close()
    await asyncio.sleep(2.5)  # the list and its stream expire
    sender, opening = await open_chat(b, "g", "sender")
    assert opening["seq"] == 0
    await sender.send("after")
    new = await sender.json()
    assert new["seq"] == 1 and new["id"] != old["id"]
    back, opening = await open_chat(a, "g", "watcher", since=old["seq"], epoch=old["id"].split("-")[0])
    assert opening["recovered"] is False and opening["epoch"] == new["id"].split("-")[0]
    assert [m["info"] for m in opening["list"]] == ["after"]


@pytest.mark.gen_test(timeout=90)
async def test_killing_the_pubsub_connections_mid_stream_loses_nothing_and_reorders_nothing(two_nodes, fresh_redis):
    a, b = two_nodes()
    receiver, _ = await open_chat(b, "g", "receiver")
    sender, _ = await open_chat(a, "g", "sender")
    plain = redis.Redis.from_url(fresh_redis.url)

    async def stream() -> None:
        for i in range(200):
            await sender.send(f"n{i}")
            await asyncio.sleep(0.01)
            if i in (40, 120):
                plain.client_kill_filter(_type="pubsub")  # both nodes' subscriptions, mid-stream

    sending = asyncio.ensure_future(stream())
    received = await events_of(receiver, 200, timeout=15)
    await sending
    plain.close()
    assert [event["seq"] for event in received] == list(range(1, 201))
    assert [event["info"] for event in received] == [f"n{i}" for i in range(200)]
    assert receiver.close_code is None  # the client never reconnected
    assert await receiver.silent_for(0.5)
    assert "redis pub/sub reconnected" in b.stderr


class TestRedisStall:
    """redis-server stopped with SIGSTOP for 3 s while sockets send: every answer is the truth."""

    @pytest.fixture
    def stalled(self, tmp_path):
        server = RedisServer(find_binary())
        server.start()
        pair = [ServeProcess(tmp_path, name=name, backend="redis", redis_url=server.url, environ=FAST)
                for name in ("a", "b")]
        start_nodes(pair)
        yield server, pair
        for node in pair:
            node.stop()
        os.kill(server._process.pid, signal.SIGCONT)
        server.cleanup()

    @pytest.mark.gen_test(timeout=90)
    async def test_what_is_answered_as_sent_is_stored_and_delivered_once_and_nothing_refused_is_stored(
        self, stalled
    ):
        server, (a, b) = stalled
        receiver, _ = await open_chat(b, "g", "receiver")
        senders = [(await open_chat(a, "g", f"s{n}"))[0] for n in range(5)]
        texts = {n: [f"s{n} m{i}" for i in range(40)] for n in range(5)}

        async def burst(n: int, client: Client) -> None:
            for text in texts[n]:
                await client.send(text)
                await asyncio.sleep(0.02)

        async def stall() -> None:
            await asyncio.sleep(0.2)
            os.kill(server._process.pid, signal.SIGSTOP)
            await asyncio.sleep(3.0)
            os.kill(server._process.pid, signal.SIGCONT)

        await asyncio.gather(stall(), *(burst(n, client) for n, client in enumerate(senders)))

        echoed: dict[int, list[str]] = {n: [] for n in range(5)}
        refused: dict[int, int] = {n: 0 for n in range(5)}
        for n, client in enumerate(senders):
            # Every send is answered: by its echo (stored) or by an error frame (not stored).
            deadline = time.monotonic() + 30
            while len(echoed[n]) + refused[n] < 40 and time.monotonic() < deadline:
                frame = await client.json(timeout=15)
                if "code" in frame:
                    assert frame["code"] == 503, frame  # "not sent": never 504 when Redis came back
                    refused[n] += 1
                elif frame["userId"] == f"s{n}":
                    echoed[n].append(frame["info"])
            assert len(echoed[n]) + refused[n] == 40
        answered_sent = {text for texts_of in echoed.values() for text in texts_of}
        assert sum(refused.values()) > 0, "the stall refused nothing: the test did not stall Redis"
        assert answered_sent, "nothing was stored: the test did not send around the stall"

        stored = [json.loads(item)["info"] for item in redis.Redis.from_url(server.url).lrange("gml:g", 0, -1)]
        assert sorted(stored) == sorted(answered_sent)  # stored once each, and nothing that was refused
        delivered = []
        while len(delivered) < len(answered_sent):
            delivered.append((await receiver.json(timeout=15))["info"])
        assert sorted(delivered) == sorted(answered_sent)
        assert await receiver.silent_for(0.5)
