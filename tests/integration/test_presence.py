"""Presence across two real ``fastim serve`` nodes on one redis-server: events, counts, a storm, SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import json
import random

import pytest
from tornado.httpclient import AsyncHTTPClient

from fastim.domain.model import PRESENCE_LISTED_MAX, OnlineUser
from fastim.domain.presence import FLUSH_S, LEASE_S
from fastim.infrastructure.redis.client import make_client
from fastim.infrastructure.redis.presence import RedisPresenceRepository
from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess, no_errors_logged, node_pair, start_nodes

pytestmark = pytest.mark.redis

RATE = 0.3  # group_list_update_rate of the nodes, in seconds
ENVIRON = {"FASTIM_IM_PRESENCE_EVENTS": "1", "FASTIM_IM_GROUP_LIST_UPDATE_RATE": str(RATE)}
HOP_S = 3.0  # a flush (FLUSH_S), a script, a pub/sub hop and a write, on a loaded machine
QUIET_S = FLUSH_S * 2 + 0.4  # watched for "no frame": longer than a flush and its hop
STORM = 320  # sockets that reconnect at once
KILLED_GONE_S = 30.0  # the issue: a node killed with SIGKILL disappears from presence within this


@pytest.fixture(scope="module")
def nodes(redis_server, tmp_path_factory):
    """Nodes A and B with presence events on, started once for the module; each test has ids of its own."""
    with node_pair(tmp_path_factory.mktemp("presence"), redis_server.url, ENVIRON) as pair:
        yield pair


@pytest.fixture
def extra_nodes(redis_server, tmp_path):
    """``extra_nodes(count)``: more nodes on the same redis-server, stopped (by PID) at the end of the test."""
    started: list[ServeProcess] = []

    def start(count: int) -> list[ServeProcess]:
        made = [ServeProcess(tmp_path, name=f"extra{len(started) + i}", backend="redis", redis_url=redis_server.url,
                             environ=ENVIRON) for i in range(count)]
        started.extend(made)
        return start_nodes(made)

    yield start
    for node in started:
        node.stop()


@pytest.fixture(autouse=True)
def nodes_log_no_errors(nodes):
    with no_errors_logged(nodes):
        yield


@pytest.fixture
def presence(redis_server, io_loop):
    """What storage says is online, read as a node reads it."""
    client = make_client(redis_server.url)
    yield RedisPresenceRepository(client)
    io_loop.run_sync(client.aclose)


_numbers = itertools.count(random.randrange(10**6, 9 * 10**6, 1000))


def new_id() -> str:
    return f"p{next(_numbers)}"


def join(group: str, user: str) -> dict:
    return {"event": "join", "groupId": group, "userId": user}


def leave(group: str, user: str) -> dict:
    return {"event": "leave", "groupId": group, "userId": user}


async def chat(sockets, node, group, user) -> Client:
    """A chat socket past its opening frame (presence frames never come before it)."""
    client = await Client.connect(node.base_url, f"/group/chat/{group}/{user}/any")
    sockets.append(client)
    opening = await client.json()
    assert list(opening) == ["list", "total", "seq", "epoch"], opening
    return client


async def eventually(read, expected, timeout: float = HOP_S):
    """Poll the async ``read()`` until it returns ``expected``; fail with the last answer after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (found := await read()) != expected:
        assert loop.time() < deadline, f"still {found!r}, expected {expected!r}"
        await asyncio.sleep(0.1)


# -- join and leave ------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_users_first_socket_on_either_node_joins_its_last_leaves_and_sockets_add_up(nodes, sockets, presence):
    a, b = nodes
    group = new_id()
    observer = await chat(sockets, a, group, "obs")
    assert await observer.json(timeout=HOP_S) == join(group, "obs")

    on_b = await chat(sockets, b, group, "u")
    assert await observer.json(timeout=HOP_S) == join(group, "u")
    on_a = await chat(sockets, a, group, "u")  # the same user on the other node: no event
    await eventually(lambda: presence.users(group), [OnlineUser("obs", 1), OnlineUser("u", 2)])
    assert await presence.counts([group]) == {group: 2}
    assert await observer.silent_for(QUIET_S)

    on_b.close()  # still online on A: no event
    await eventually(lambda: presence.users(group), [OnlineUser("obs", 1), OnlineUser("u", 1)])
    assert await observer.silent_for(QUIET_S)
    on_a.close()
    assert await observer.json(timeout=HOP_S) == leave(group, "u")
    await eventually(lambda: presence.users(group), [OnlineUser("obs", 1)])


@pytest.mark.gen_test(timeout=30)
async def test_a_page_reload_within_a_flush_makes_no_event(nodes, sockets):
    a, b = nodes
    group = new_id()
    observer = await chat(sockets, b, group, "obs")
    assert await observer.json(timeout=HOP_S) == join(group, "obs")
    tab = await chat(sockets, a, group, "r")
    assert await observer.json(timeout=HOP_S) == join(group, "r")
    for _ in range(3):  # reloads: the old socket closes and a new one opens on the same node
        tab.close()
        tab = await chat(sockets, a, group, "r")
    assert await observer.silent_for(QUIET_S)


@pytest.mark.gen_test(timeout=30)
async def test_the_group_list_carries_the_users_online_and_is_pushed_when_it_changes(nodes, sockets):
    a, b = nodes
    group, other, user = new_id(), new_id(), "lister"
    api = Api(AsyncHTTPClient(), a.base_url)
    await api.login(user)
    for g in (group, other):
        assert (await api.post("/user/joinGroup", {"groupId": g}, user=user))[1]["code"] == 200
    listing = await Client.connect(b.base_url, f"/group/list/{user}/any")
    sockets.append(listing)
    entries = {entry["groupId"]: entry for entry in await listing.json()}
    assert entries[group] == {"groupId": group, "newMessage": None, "total": 0, "online": 0}

    async def online_becomes(count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HOP_S + RATE
        while True:
            pushed = {entry["groupId"]: entry["online"] for entry in await listing.json(timeout=deadline - loop.time())}
            if pushed[group] == count:
                assert pushed[other] == 0
                return

    await chat(sockets, a, group, "x")
    await online_becomes(1)
    y = await chat(sockets, b, group, "y")
    await chat(sockets, a, group, "y")  # a user with two sockets counts once
    await online_becomes(2)
    y.close()
    assert await listing.silent_for(QUIET_S + RATE)  # y is still online on A: nothing changed


# -- a reconnect storm ---------------------------------------------------------------------------


async def drain(client: Client, quiet_s: float) -> list[tuple[float, dict]]:
    """Every frame until ``quiet_s`` passes without one, with its arrival time."""
    frames = []
    loop = asyncio.get_running_loop()
    while True:
        try:
            frames.append((loop.time(), await client.json(timeout=quiet_s)))
        except asyncio.TimeoutError:
            return frames


@pytest.mark.gen_test(timeout=120)
async def test_a_reconnect_storm_costs_an_observer_a_bounded_number_of_frames(nodes, sockets, presence):
    a, b = nodes
    group = new_id()
    observer = await chat(sockets, a, group, "watcher")
    assert await observer.json(timeout=HOP_S) == join(group, "watcher")
    users = [f"s{i}" for i in range(STORM)]
    loop = asyncio.get_running_loop()
    storm: list[Client] = []

    async def connect_all(first: ServeProcess, second: ServeProcess) -> None:
        clients = await asyncio.gather(*(
            # Their frames are dropped as they come: a client that reads nothing would hold up its close handshake.
            Client.connect((first, second)[i % 2].base_url, f"/group/chat/{group}/{user}/any",
                           on_message_callback=lambda message: None)
            for i, user in enumerate(users)
        ))
        sockets.extend(clients)
        storm[:] = clients

    def close_all() -> None:
        for client in storm:
            client.close()

    async def move() -> None:  # every client drops and comes back at once, on the other node
        close_all()
        await connect_all(b, a)

    async def leave_all() -> None:
        close_all()

    waves = [
        ("come", lambda: connect_all(a, b), STORM + 1),
        ("go", leave_all, 1),
        ("come back", lambda: connect_all(b, a), STORM + 1),
        ("move", move, STORM + 1),  # nobody need be offline meanwhile: it may cost no frame at all
    ]
    for name, storm_of, online in waves:
        started = loop.time()
        await storm_of()
        await eventually(lambda: presence.counts([group]), {group: online}, timeout=30)
        frames = await drain(observer, QUIET_S)
        took = (frames[-1][0] if frames else loop.time()) - started
        # Each node flushes at most every FLUSH_S, and a flush is at most PRESENCE_LISTED_MAX frames (one
        # summary frame past that): what an observer gets grows with the storm's duration, not its size.
        assert len(frames) <= 2 * PRESENCE_LISTED_MAX * (took / FLUSH_S + 2), (name, len(frames), took)
        assert all(frame["event"] in ("join", "leave", "presence") for _, frame in frames), (name, frames)
        if name != "move":
            assert frames, f"the observer heard nothing of the storm ({name})"
        summaries = [frame["online"] for _, frame in frames if frame["event"] == "presence"]
        assert all(0 < count <= STORM + 1 for count in summaries), (name, summaries)
    assert [user.user_id for user in await presence.users(group)] == sorted(["watcher", *users])


# -- nodes that stop -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_node_that_stops_gracefully_takes_its_users_out_at_once(nodes, extra_nodes, sockets, presence):
    a, _ = nodes
    (c,) = extra_nodes(1)
    group = new_id()
    observer = await chat(sockets, a, group, "obs")
    assert await observer.json(timeout=HOP_S) == join(group, "obs")
    await chat(sockets, c, group, "leaving")
    assert await observer.json(timeout=HOP_S) == join(group, "leaving")
    stopped_at = asyncio.get_running_loop().time()
    assert c.stop() == 0
    assert await observer.json(timeout=HOP_S) == leave(group, "leaving")
    assert asyncio.get_running_loop().time() - stopped_at < LEASE_S / 2  # not by the lease: at once
    assert await presence.users(group) == [OnlineUser("obs", 1)]


@pytest.mark.gen_test(timeout=KILLED_GONE_S + 30)
async def test_a_node_killed_with_sigkill_vanishes_from_presence_within_30_s(nodes, extra_nodes, sockets, presence):
    a, _ = nodes
    (victim_node,) = extra_nodes(1)
    group = new_id()
    observer = await chat(sockets, a, group, "obs")
    assert await observer.json(timeout=HOP_S) == join(group, "obs")
    await chat(sockets, victim_node, group, "victim")
    assert await observer.json(timeout=HOP_S) == join(group, "victim")
    await eventually(lambda: presence.users(group), [OnlineUser("obs", 1), OnlineUser("victim", 1)])

    loop = asyncio.get_running_loop()
    victim_node.process.kill()  # SIGKILL: no goodbye, its lease (the real default) has to lapse
    killed_at = loop.time()
    await eventually(lambda: presence.users(group), [OnlineUser("obs", 1)], timeout=KILLED_GONE_S)
    assert await presence.counts([group]) == {group: 1}
    # Node A's next renewal of the group removes the lapsed node and announces its users' leave.
    assert await observer.json(timeout=max(0.1, killed_at + KILLED_GONE_S - loop.time())) == leave(group, "victim")
    assert loop.time() - killed_at <= KILLED_GONE_S
    stored = await presence.users(group)
    assert json.loads(json.dumps([user.user_id for user in stored])) == ["obs"]
