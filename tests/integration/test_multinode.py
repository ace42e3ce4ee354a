"""Two real ``fastim serve`` nodes on one redis-server: cross-node delivery, list pushes, interop, subscriptions."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time

import pytest
import redis
from tornado.httpclient import AsyncHTTPClient

from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.processes import no_errors_logged, node_pair

pytestmark = pytest.mark.redis

RATE = 0.3  # group_list_update_rate of both nodes, in seconds
MARGIN = 0.4  # a cross-node hop (PUBLISH, pub/sub read, one summary read) on a loaded machine
QUIET = 0.5  # how long "gets nothing" is watched
SUBSCRIPTION_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def nodes(redis_server, tmp_path_factory):
    """Nodes A and B, started once for the module; each test uses group and user ids of its own."""
    environ = {"FASTIM_IM_GROUP_LIST_UPDATE_RATE": str(RATE)}
    with node_pair(tmp_path_factory.mktemp("multinode"), redis_server.url, environ) as pair:
        yield pair


@pytest.fixture(autouse=True)
def nodes_log_no_errors(nodes):
    """Whatever a test does, neither node logs an error or a traceback meanwhile."""
    with no_errors_logged(nodes):
        yield


@pytest.fixture
def plain(fresh_redis):
    """A plain Redis client, as another program (a Java fast-im node) would use."""
    client = redis.Redis.from_url(fresh_redis.url, decode_responses=True, socket_timeout=2)
    yield client
    client.close()


_numbers = itertools.count(random.randrange(10**6, 9 * 10**6, 1000))


def new_id() -> str:
    """A numeric id never used before by this run, like fast-im's."""
    return str(next(_numbers))


async def chat(sockets, node, group, user) -> Client:
    """A chat socket past its snapshot."""
    client = await Client.connect(node.base_url, f"/group/chat/{group}/{user}/any")
    sockets.append(client)
    snapshot = await client.json()
    assert list(snapshot) == ["list", "total", "seq", "epoch"], snapshot
    return client


async def group_list(sockets, node, user) -> tuple[Client, list]:
    client = await Client.connect(node.base_url, f"/group/list/{user}/any")
    sockets.append(client)
    return client, await client.json()


def by_group(entries):
    return {entry["groupId"]: entry for entry in entries}


def listed(entry: dict) -> dict:
    """A group-list entry without "online", which counts chat sockets as their flushes land (test_presence.py)."""
    return {key: value for key, value in entry.items() if key != "online"}


async def all_silent(clients, seconds=QUIET) -> None:
    await asyncio.gather(*(client.silent_for(seconds) for client in clients))


def message(group, user, info, ts) -> dict:
    return {"groupId": group, "userId": user, "info": info, "ts": ts}


def numsub(plain, group) -> int:
    return dict(plain.pubsub_numsub(f"mq:{group}"))[f"mq:{group}"]


async def numsub_becomes(plain, group, expected, timeout=SUBSCRIPTION_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while (count := numsub(plain, group)) != expected:
        assert time.monotonic() < deadline, f"PUBSUB NUMSUB mq:{group} stayed {count}, expected {expected}"
        await asyncio.sleep(0.05)


# --- chat sockets across nodes ------------------------------------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_a_message_sent_on_a_reaches_b_and_the_sender_and_is_stored(nodes, plain, sockets):
    a, b = nodes
    group = new_id()
    sender = await chat(sockets, a, group, "1")
    reader = await chat(sockets, b, group, "2")
    before = time.time_ns() // 1_000_000
    await sender.send("hello across nodes")
    mine, theirs = await sender.text(), await reader.text()
    after = time.time_ns() // 1_000_000

    assert mine == theirs
    received = json.loads(mine)
    assert list(received) == ["groupId", "userId", "info", "ts", "id", "seq"]  # fast-im's keys first
    epoch = plain.hget(f"fastim:stream:{group}", "epoch")
    assert received == {**message(group, "1", "hello across nodes", received["ts"]), "id": f"{epoch}-1", "seq": 1}
    assert isinstance(received["ts"], int) and before <= received["ts"] <= after
    assert plain.lrange(f"gml:{group}", 0, -1) == [mine]
    assert plain.ttl(f"gml:{group}") > 0 and plain.ttl(f"fastim:stream:{group}") > 0
    late = await Client.connect(b.base_url, f"/group/chat/{group}/3/any")
    sockets.append(late)
    assert await late.json() == {"list": [received], "total": 1, "seq": 1, "epoch": epoch}


@pytest.mark.gen_test(timeout=15)
async def test_other_groups_on_either_node_get_nothing(nodes, sockets):
    a, b = nodes
    group, other = new_id(), new_id()
    sender = await chat(sockets, a, group, "1")
    reader = await chat(sockets, b, group, "2")
    outsiders = [await chat(sockets, a, other, "3"), await chat(sockets, b, other, "4")]
    await sender.send("for this group only")
    assert (await reader.json())["info"] == "for this group only"
    assert (await sender.json())["info"] == "for this group only"
    await all_silent(outsiders)


@pytest.mark.gen_test(timeout=15)
async def test_each_socket_of_one_user_gets_exactly_the_messages_of_its_group_once(nodes, sockets):
    a, b = nodes
    group, other = new_id(), new_id()
    user = "5"
    on_a, on_b, also_on_a = (
        await chat(sockets, a, group, user),
        await chat(sockets, b, group, user),
        await chat(sockets, a, group, user),
    )
    elsewhere = await chat(sockets, b, other, user)
    in_group = [on_a, on_b, also_on_a]

    await on_a.send("first")
    firsts = [await client.json() for client in in_group]
    await elsewhere.send("other group")
    assert (await elsewhere.json())["info"] == "other group"
    await on_b.send("second")
    seconds = [await client.json() for client in in_group]

    assert [m["info"] for m in firsts] == ["first"] * 3
    assert firsts[0] == firsts[1] == firsts[2] and firsts[0]["userId"] == user and firsts[0]["groupId"] == group
    assert [m["info"] for m in seconds] == ["second"] * 3
    await all_silent([*in_group, elsewhere])


# --- group-list sockets --------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_a_list_socket_on_b_is_pushed_for_a_message_on_a_coalesced_and_silent_otherwise(nodes, sockets):
    a, b = nodes
    group, quiet_group = new_id(), new_id()
    api = Api(AsyncHTTPClient(), a.base_url)
    await api.login("7")
    for g in (group, quiet_group):
        assert (await api.post("/user/joinGroup", {"groupId": g}, user="7"))[1]["code"] == 200
    listing, snapshot = await group_list(sockets, b, "7")
    assert by_group(snapshot) == {
        group: {"groupId": group, "newMessage": None, "total": 0, "online": 0},
        quiet_group: {"groupId": quiet_group, "newMessage": None, "total": 0, "online": 0},
    }
    assert await listing.silent_for(RATE * 3)  # nothing changes, nothing is pushed

    sender = await chat(sockets, a, group, "8")
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await sender.send("news")
    news = await sender.json()
    entries = by_group(await listing.json(timeout=RATE + MARGIN))
    assert loop.time() - sent_at < RATE + MARGIN
    assert listed(entries[group]) == {"groupId": group, "newMessage": news, "total": 1}
    assert entries[quiet_group] == {"groupId": quiet_group, "newMessage": None, "total": 0, "online": 0}

    await asyncio.sleep(RATE)  # a quiet interval, so the burst's first change is pushed at once
    for i in range(10):
        await sender.send(f"burst {i}")
    pushes, arrivals = [], []
    deadline = loop.time() + RATE * 4
    while (left := deadline - loop.time()) > 0:
        try:
            pushes.append(await listing.json(timeout=left))
        except asyncio.TimeoutError:
            break
        arrivals.append(loop.time())
    assert 1 <= len(pushes) <= 3, pushes  # ten changes in a few milliseconds, one push per interval at most
    assert all(later - earlier >= RATE - 0.05 for earlier, later in zip(arrivals, arrivals[1:])), arrivals
    final = by_group(pushes[-1])[group]
    assert final["total"] == 11 and final["newMessage"]["info"] == "burst 9"
    assert await listing.silent_for(RATE * 3)


@pytest.mark.gen_test(timeout=15)
async def test_a_recall_on_a_reaches_chat_sockets_on_b_and_is_a_change_for_list_sockets(nodes, sockets, plain):
    a, b = nodes
    group = new_id()
    api = Api(AsyncHTTPClient(), a.base_url)
    await api.login("9")
    author = await chat(sockets, a, group, "9")
    await author.send("kept")
    kept = await author.json()
    await author.send("oops")
    oops = await author.json()
    watcher = await chat(sockets, b, group, "10")  # opened after both, so it holds them in its snapshot
    listing, snapshot = await group_list(sockets, b, "9")
    assert listed(by_group(snapshot)[group]) == {"groupId": group, "newMessage": oops, "total": 2}
    await asyncio.sleep(RATE)

    status, body = await api.post("/group/delMessage", {"groupId": group, "ts": oops["ts"]}, user="9")
    assert (status, body["code"]) == (200, 200), body

    expected = {"event": "recall", "groupId": group, "userId": "9", "ts": oops["ts"], "id": oops["id"], "seq": 3,
                "epoch": oops["id"].split("-")[0]}
    for client in (watcher, author):
        text = await client.text()
        assert json.loads(text) == expected and list(json.loads(text)) == list(expected)
    entries = by_group(await listing.json(timeout=RATE + MARGIN))
    assert listed(entries[group]) == {"groupId": group, "newMessage": kept, "total": 1}
    assert plain.lrange(f"gml:{group}", 0, -1) == [json.dumps(kept, separators=(",", ":"))]
    await all_silent([watcher, author, listing])


@pytest.mark.gen_test(timeout=15)
async def test_a_group_joined_on_a_shows_on_a_list_socket_on_b_within_a_few_seconds(nodes, sockets):
    a, b = nodes
    group, user = new_id(), "11"
    listing, snapshot = await group_list(sockets, b, user)
    assert snapshot == []
    api = Api(AsyncHTTPClient(), a.base_url)
    await api.login(user)
    loop = asyncio.get_running_loop()
    joined_at = loop.time()
    assert (await api.post("/user/joinGroup", {"groupId": group}, user=user))[1]["code"] == 200
    # The membership refresher of node B looks every 2 s; then one push, at most RATE later.
    assert await listing.json(timeout=2.0 + RATE + 1.0) == [
        {"groupId": group, "newMessage": None, "total": 0, "online": 0}
    ]
    assert loop.time() - joined_at < 2.0 + RATE + 1.0

    sender = await chat(sockets, a, group, "12")  # the new group is watched from now on
    await sender.send("welcome")
    welcome = await sender.json()
    assert [listed(entry) for entry in await listing.json(timeout=RATE + MARGIN)] == [
        {"groupId": group, "newMessage": welcome, "total": 1}
    ]


# --- interoperability with other programs on mq:{groupId} ---------------------------------


@pytest.mark.gen_test(timeout=15)
async def test_a_message_published_by_another_program_reaches_both_nodes(nodes, sockets, plain):
    a, b = nodes
    group = new_id()
    clients = [await chat(sockets, a, group, "1"), await chat(sockets, b, group, "2")]

    raw = f'{{"groupId":"{group}","userId":"3","info":"from java","ts":1648380678385}}'
    assert plain.publish(f"mq:{group}", raw) == 2  # one subscription per node
    assert [await client.text() for client in clients] == [raw, raw]

    # fast-im's own push carries a numeric userId; ids reach clients as strings.
    plain.publish(f"mq:{group}", f'{{"groupId":"{group}","userId":1,"info":"x","ts":1648380678385}}')
    expected = message(group, "1", "x", 1648380678385)
    assert [await client.json() for client in clients] == [expected, expected]

    plain.publish(f"mq:{group}", f'{{"groupId":{group},"userId":2,"info":"numeric ids","ts":1648380678386}}')
    expected = message(group, "2", "numeric ids", 1648380678386)
    assert [await client.json() for client in clients] == [expected, expected]


@pytest.mark.gen_test(timeout=15)
async def test_garbage_on_the_channel_is_logged_and_dropped_and_the_nodes_keep_working(nodes, sockets, plain):
    a, b = nodes
    group, other = new_id(), new_id()
    clients = [await chat(sockets, a, group, "1"), await chat(sockets, b, group, "2")]
    outsider = await chat(sockets, b, other, "3")
    garbage = [
        "not json",
        '{"foo":1}',
        "[1,2,3]",
        f'{{"groupId":"{group}","userId":"1","info":5,"ts":1}}',
        f'{{"groupId":"{group}","userId":"1","info":"x","ts":"yesterday"}}',
        f'{{"event":"explode","groupId":"{group}","userId":"1","ts":1}}',
        f'{{"groupId":"{other}","userId":"1","info":"another group on this channel","ts":1}}',
    ]
    for payload in garbage:
        assert plain.publish(f"mq:{group}", payload) == 2
    await all_silent([*clients, outsider])
    for node in nodes:
        node.wait_for_log(f"WARNING fastim.infrastructure.redis.payloads: dropping an invalid payload on mq:{group}")
        assert node.stderr.count(f"dropping an invalid payload on mq:{group}:") == len(garbage)

    await clients[1].send("still here")
    assert [(await client.json())["info"] for client in clients] == ["still here", "still here"]


# --- subscription hygiene -------------------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_each_node_subscribes_once_per_group_and_unsubscribes_with_its_last_socket(nodes, sockets, plain):
    a, b = nodes
    group = new_id()
    api = Api(AsyncHTTPClient(), a.base_url)
    await api.login("20")
    await api.post("/user/joinGroup", {"groupId": group}, user="20")
    assert numsub(plain, group) == 0

    on_a = [await chat(sockets, a, group, user) for user in ("20", "21", "22")]
    await numsub_becomes(plain, group, 1)
    on_b = [await chat(sockets, b, group, user) for user in ("20", "23", "23")]
    listing, _ = await group_list(sockets, a, "20")  # a list socket is one more local member of the group
    assert numsub(plain, group) == 2

    for client in [*on_a, listing][:-1]:
        client.close()
    await asyncio.sleep(0.3)  # time enough for a wrong UNSUBSCRIBE to show
    assert numsub(plain, group) == 2
    listing.close()
    await numsub_becomes(plain, group, 1)

    await on_b[0].send("only b listens now")
    assert [(await client.json())["info"] for client in on_b] == ["only b listens now"] * 3

    for client in on_b:
        client.close()
    await numsub_becomes(plain, group, 0)
    assert plain.pubsub_channels(f"mq:{group}") == []
