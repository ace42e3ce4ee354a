"""The group-list socket of SPEC §5: a snapshot on open, coalesced pushes on change, silence otherwise."""

from __future__ import annotations

import asyncio

import pytest

from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client

RATE = 0.3  # group_list_update_rate for these tests, in seconds


@pytest.fixture
def node_settings():
    return {"im__group_list_update_rate": RATE}


@pytest.fixture
def api(container, http_server, http_client, base_url):
    return Api(http_client, base_url)


async def group_list(base_url, user, token="any"):
    return await Client.connect(base_url, f"/group/list/{user}/{token}")


def by_group(entries):
    return {entry["groupId"]: entry for entry in entries}


@pytest.mark.gen_test
async def test_on_open_each_joined_group_comes_with_its_newest_message_and_total(container, api, base_url, clock):
    groups, messages = container.groups(), container.messages()
    await groups.join("u", "1")
    await groups.join("u", "2")
    await messages.post("1", "x", "first")
    clock.advance(0.001)
    newest = await messages.post("1", "y", "second")
    client = await group_list(base_url, "u")
    entries = by_group(await client.json())
    assert entries["1"] == {
        "groupId": "1",
        "newMessage": {"groupId": "1", "userId": "y", "info": "second", "ts": newest.ts, "id": newest.id, "seq": 2},
        "total": 2,
        "online": 0,
    }
    assert entries["2"] == {"groupId": "2", "newMessage": None, "total": 0, "online": 0}


@pytest.mark.gen_test
async def test_a_user_without_groups_gets_an_empty_list(api, base_url):
    client = await group_list(base_url, "nobody")
    assert await client.json() == []


@pytest.mark.gen_test
async def test_a_new_message_is_pushed_within_the_update_rate(container, api, base_url):
    await container.groups().join("u", "1")
    client = await group_list(base_url, "u")
    await client.json()
    await asyncio.sleep(RATE)  # past the interval of the snapshot push
    chat = await Client.connect(base_url, "/group/chat/1/x/any")
    await chat.json()
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await chat.send("news")
    entries = by_group(await client.json(timeout=RATE + 1))
    assert loop.time() - sent_at < RATE + 0.2
    assert entries["1"]["newMessage"]["info"] == "news" and entries["1"]["total"] == 1


@pytest.mark.gen_test(timeout=20)
async def test_bursts_are_coalesced_and_silence_sends_nothing(container, api, base_url):
    await container.groups().join("u", "1")
    client = await group_list(base_url, "u")
    await client.json()
    assert await client.silent_for(RATE * 3)  # nothing changes, nothing is pushed
    messages = container.messages()
    for i in range(10):
        await messages.post("1", "x", f"m{i}")
    pushes = []
    deadline = asyncio.get_running_loop().time() + RATE * 3
    while asyncio.get_running_loop().time() < deadline:
        try:
            pushes.append(await client.json(timeout=max(0.01, deadline - asyncio.get_running_loop().time())))
        except asyncio.TimeoutError:
            break
    assert 1 <= len(pushes) <= 2  # ten changes, at most one push per interval
    assert by_group(pushes[-1])["1"]["total"] == 10
    assert await client.silent_for(RATE * 3)


@pytest.mark.gen_test
async def test_a_recall_is_a_change(container, api, base_url, clock):
    await container.groups().join("u", "1")
    sent = await container.messages().post("1", "u", "oops")
    client = await group_list(base_url, "u")
    assert by_group(await client.json())["1"]["total"] == 1
    await container.messages().recall("1", "u", ts=sent.ts)
    entries = by_group(await client.json(timeout=RATE + 1))
    assert entries["1"] == {"groupId": "1", "newMessage": None, "total": 0, "online": 0}


@pytest.mark.gen_test(timeout=20)
async def test_a_group_joined_later_is_included_within_a_few_seconds(container, api, base_url):
    client = await group_list(base_url, "u")
    assert await client.json() == []
    await api.login("u")
    await api.post("/user/joinGroup", {"groupId": "7"}, user="u")
    entries = by_group(await client.json(timeout=5))
    assert entries == {"7": {"groupId": "7", "newMessage": None, "total": 0, "online": 0}}
    await container.messages().post("7", "x", "hello 7")  # and it is now watched
    assert by_group(await client.json(timeout=RATE + 1))["7"]["total"] == 1


class TestLoginAuth:
    @pytest.fixture
    def node_settings(self):
        return {"im__login_auth": 1, "im__group_list_update_rate": RATE}

    @pytest.mark.gen_test
    async def test_a_bad_token_gets_440_then_the_socket_closes(self, api, base_url):
        client = await group_list(base_url, "u", "bad")
        assert await client.text() == "440"
        assert (await client.closed())[0] == 4440

    @pytest.mark.gen_test
    async def test_a_valid_token_gets_the_list(self, api, base_url):
        token = await api.login("u")
        client = await group_list(base_url, "u", token)
        assert await client.json() == []
