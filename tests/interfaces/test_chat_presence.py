"""Chat sockets count their users online on one node, each backend; presence events reach the group's sockets."""

from __future__ import annotations

import pytest

from fastim.container import build_container
from fastim.domain.model import OnlineUser
from tests.contract.conftest import wait_for
from tests.interfaces.ws_client import Client
from tests.settings_factory import make_settings

QUIET_S = 0.7  # longer than a presence flush (0.25 s) and its delivery


@pytest.fixture
def node_settings():
    return {"im__presence_events": "1", "im__group_list_update_rate": "0.1"}


async def chat(base_url, group, user) -> Client:
    client = await Client.connect(base_url, f"/group/chat/{group}/{user}/any")
    assert "list" in await client.json()
    return client


async def online(container, group) -> list[OnlineUser]:
    return await container.presence().users(group)


@pytest.mark.gen_test(timeout=15)
async def test_an_open_chat_socket_counts_its_user_online_until_it_closes(container, http_server, base_url):
    first = await chat(base_url, "g", "u1")
    assert await first.json() == {"event": "join", "groupId": "g", "userId": "u1"}
    second = await chat(base_url, "g", "u1")
    other = await chat(base_url, "g", "u2")
    assert await first.json() == {"event": "join", "groupId": "g", "userId": "u2"}
    assert await other.json() == {"event": "join", "groupId": "g", "userId": "u2"}
    await wait_for(async_equals(lambda: online(container, "g"), [OnlineUser("u1", 2), OnlineUser("u2", 1)]))
    second.close()
    assert await other.silent_for(QUIET_S)  # u1 still has a socket
    first.close()
    assert await other.json() == {"event": "leave", "groupId": "g", "userId": "u1"}
    assert await online(container, "g") == [OnlineUser("u2", 1)]
    other.close()
    await wait_for(async_equals(lambda: online(container, "g"), []))


@pytest.mark.gen_test(timeout=15)
async def test_a_refused_socket_is_never_counted(container, http_server, base_url):
    client = await Client.connect(base_url, "/group/chat/g/bad%20id/any")
    assert (await client.closed())[0] == 4400
    watcher = await chat(base_url, "g", "w")
    assert await watcher.json() == {"event": "join", "groupId": "g", "userId": "w"}
    assert await online(container, "g") == [OnlineUser("w", 1)]
    watcher.close()


@pytest.mark.gen_test(timeout=15)
async def test_the_group_list_counts_the_users_online_in_each_group(container, http_server, base_url):
    await container.groups().join("lister", "g")
    await container.groups().join("lister", "h")
    listing = await Client.connect(base_url, "/group/list/lister/any")
    assert {entry["groupId"]: entry["online"] for entry in await listing.json()} == {"g": 0, "h": 0}
    sockets = [await chat(base_url, "g", "a"), await chat(base_url, "g", "b")]
    for _ in range(10):  # pushed as each socket is counted, at most every 0.1 s
        if {entry["groupId"]: entry["online"] for entry in await listing.json(timeout=3)} == {"g": 2, "h": 0}:
            break
    else:
        raise AssertionError("the group list never showed both users online")
    for client in sockets:
        client.close()
    listing.close()


def test_each_container_is_a_node_of_its_own():
    one, two = build_container(make_settings()), build_container(make_settings())
    assert one.node_id() != two.node_id() and len(one.node_id()) == 32
    assert one.chat_services().presence is one.presence() is one.list_services().presence
    assert one.presence() is not two.presence()


def async_equals(read, expected):
    async def check() -> bool:
        return await read() == expected
    return check
