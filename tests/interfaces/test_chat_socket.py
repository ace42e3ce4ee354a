"""The chat socket of SPEC §5 on one node, memory backend and real Redis."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.conftest import wait_for
from tests.interfaces.ws_client import Client


@pytest.mark.gen_test
async def test_on_open_the_newest_messages_come_as_objects_oldest_first_with_the_total(node, clock):
    for i in range(3):
        await node.container.messages().post("1", "3", f"{i}-hello")
        clock.advance(0.001)
    client = await node.chat("1", "7")
    snapshot = await client.json()
    assert [m["info"] for m in snapshot["list"]] == ["0-hello", "1-hello", "2-hello"]
    assert snapshot["total"] == 3
    assert list(snapshot) == ["list", "total", "seq", "epoch"]  # fast-im's two keys first
    assert list(snapshot["list"][0]) == ["groupId", "userId", "info", "ts", "id", "seq"]
    assert snapshot["list"][0]["groupId"] == "1" and isinstance(snapshot["list"][0]["ts"], int)
    assert [m["seq"] for m in snapshot["list"]] == [1, 2, 3] and snapshot["seq"] == 3
    assert [m["id"] for m in snapshot["list"]] == [f"{snapshot['epoch']}-{seq}" for seq in (1, 2, 3)]


@pytest.mark.gen_test
async def test_an_empty_group_opens_with_an_empty_list(node):
    client = await node.chat("1", "7")
    assert await client.json() == {"list": [], "total": 0, "seq": 0, "epoch": ""}


class TestListNum:
    @pytest.fixture
    def node_settings(self):
        return {"im__list_num": 2}

    @pytest.mark.gen_test
    async def test_only_list_num_messages_are_sent(self, node, clock):
        for i in range(5):
            await node.container.messages().post("1", "3", f"m{i}")
            clock.advance(0.001)
        snapshot = await (await node.chat("1", "7")).json()
        assert [m["info"] for m in snapshot["list"]] == ["m3", "m4"] and snapshot["total"] == 5


@pytest.mark.gen_test
async def test_a_sent_frame_is_stored_and_comes_back_to_every_socket_sender_included(node, clock):
    sender = await node.joined("1", "1")
    other = await node.joined("1", "2")
    await sender.send("im hello")
    mine, theirs = await sender.json(), await other.json()
    page = await node.container.messages().latest("1")
    assert mine == theirs == {"groupId": "1", "userId": "1", "info": "im hello", "ts": clock.now_ms(),
                              "id": f"{page.epoch}-1", "seq": 1}
    assert [m.info for m in page.messages] == ["im hello"]


@pytest.mark.gen_test
async def test_groups_are_isolated(node):
    here = await node.joined("1", "1")
    elsewhere = await node.joined("2", "2")
    await here.send("only for group 1")
    assert (await here.json())["info"] == "only for group 1"
    assert await elsewhere.silent_for(0.3)


@pytest.mark.gen_test
async def test_one_user_with_several_sockets_gets_every_message_on_each(node):
    tab1 = await node.joined("1", "u")
    tab2 = await node.joined("1", "u")
    other_group_tab = await node.joined("2", "u")
    await tab1.send("hello tabs")
    assert (await tab1.json())["info"] == "hello tabs"
    assert (await tab2.json())["info"] == "hello tabs"
    await other_group_tab.send("hello group 2")
    assert (await other_group_tab.json())["info"] == "hello group 2"
    assert await tab1.silent_for(0.2) and await tab2.silent_for(0.01)
    tab1.close()
    await wait_for(lambda: len(node.container.hub().members("1")) == 1)
    await tab2.send("still here")
    assert (await tab2.json())["info"] == "still here"


@pytest.mark.gen_test
async def test_auto_join_adds_the_group_to_the_users_list(node):
    await node.joined("42", "u")
    assert await node.container.groups().groups_of("u") == ["42"]


@pytest.mark.gen_test
async def test_the_node_subscribes_while_it_has_sockets_in_a_group(node):
    broker = node.container.broker()
    first = await node.joined("1", "a")
    second = await node.joined("1", "b")
    assert "1" in broker.subscribed_groups
    first.close()
    second.close()
    await wait_for(lambda: "1" not in broker.subscribed_groups)


@pytest.mark.gen_test
async def test_a_recall_is_pushed_to_the_groups_sockets(node):
    client = await node.joined("1", "1")
    await client.send("oops")
    sent = await client.json()
    await node.api.login("1")
    _, body = await node.api.post("/group/delMessage", {"groupId": "1", "ts": sent["ts"]}, user="1")
    assert body["code"] == 200
    epoch = sent["id"].split("-")[0]
    assert await client.json() == {"event": "recall", "groupId": "1", "userId": "1", "ts": sent["ts"],
                                   "id": sent["id"], "seq": 2, "epoch": epoch}


@pytest.mark.gen_test
async def test_events_the_opening_covered_are_not_sent_again_even_when_the_channel_lags(node, clock, monkeypatch):
    """A room re-created while the channel still brings old events (a stale backlog): no duplicates."""
    for i in range(5):
        await node.container.messages().post("1", "3", f"m{i}")
        clock.advance(0.001)
    sent = list((await node.container.messages().latest("1")).messages)
    hub, recovery = node.container.hub(), node.container.recovery()
    read = recovery.opening

    async def lagging_opening(group_id, since, epoch):
        hub._on_event(group_id, sent[1])  # seq 2 heard before the read: held until the opening
        opening = await read(group_id, since, epoch)
        for event in sent[2:4]:  # seq 3 and 4 heard after it, still older than what it covered
            hub._on_event(group_id, event)
        return opening

    monkeypatch.setattr(recovery, "opening", lagging_opening)
    client = await node.chat("1", "7")
    opening = await client.json()
    assert opening["seq"] == 5 and [m["seq"] for m in opening["list"]] == [1, 2, 3, 4, 5]
    assert await client.silent_for(0.2)
    await node.container.messages().post("1", "3", "new")
    assert (await client.json())["seq"] == 6  # repaired past the lag, seq 5 not sent again
    await node.container.messages().post("1", "3", "newer")
    assert (await client.json())["seq"] == 7  # live, once
    assert await client.silent_for(0.2)


@pytest.mark.gen_test
async def test_unicode_and_markup_travel_as_text(node):
    client = await node.joined("1", "1")
    text = '<img src=x onerror=alert(1)> "引号" \\ 😀'
    await client.send(text)
    assert (await client.json())["info"] == text


class TestLoginAuth:
    @pytest.fixture
    def node_settings(self):
        return {"im__login_auth": 1}

    @pytest.mark.gen_test
    async def test_a_bad_token_gets_440_then_the_socket_closes(self, node):
        client = await node.chat("1", "1", "not-a-token")
        assert await client.text() == "440"
        code, reason = await client.closed()
        assert code == 4440 and reason == "login required"

    @pytest.mark.gen_test
    async def test_a_valid_token_opens_the_room(self, node):
        token = await node.api.login("1")
        client = await node.chat("1", "1", token)
        assert (await client.json())["list"] == []


class TestWithoutAutoJoin:
    @pytest.fixture
    def node_settings(self):
        return {"im__auto_join": 0}

    @pytest.mark.gen_test
    async def test_a_non_member_is_refused_with_a_reason(self, node):
        client = await node.chat("1", "1")
        code, reason = await client.closed()
        assert code == 4403 and "member" in reason
        assert await node.container.groups().groups_of("1") == []

    @pytest.mark.gen_test
    async def test_a_member_gets_in(self, node):
        await node.api.login("1")
        await node.api.post("/user/joinGroup", {"groupId": "1"}, user="1")
        client = await node.chat("1", "1")
        assert (await client.json())["list"] == []


@pytest.mark.gen_test
async def test_an_id_that_is_too_long_closes_with_a_reason(node):
    client = await node.chat("g" * 200, "1")
    code, reason = await client.closed()
    assert code == 4400 and "groupId" in reason


@pytest.mark.gen_test
async def test_a_binary_frame_gets_an_error_frame_and_the_socket_stays_open(node):
    client = await node.joined("1", "1")
    await client.send(b"\x00\x01")
    assert (await client.json())["code"] == 415
    await client.send("text is fine")
    assert (await client.json())["info"] == "text is fine"


@pytest.mark.gen_test
async def test_an_empty_frame_gets_an_error_frame(node):
    client = await node.joined("1", "1")
    await client.send("")
    assert (await client.json())["code"] == 400


class TestLimits:
    @pytest.fixture
    def node_settings(self):
        return {"im__max_message_bytes": 16, "im__rate_limit": 1, "im__rate_burst": 3}

    @pytest.mark.gen_test
    async def test_a_frame_over_the_size_limit_gets_413_and_is_not_stored(self, node):
        client = await node.joined("1", "1")
        await client.send("é" * 9)  # 18 UTF-8 bytes
        frame = await client.json()
        assert frame["code"] == 413 and "16" in frame["msg"]
        assert (await node.container.messages().latest("1")).total == 0
        await client.send("é" * 8)  # exactly 16 bytes
        assert (await client.json())["info"] == "é" * 8

    @pytest.mark.gen_test
    async def test_frames_over_the_rate_get_429_and_the_socket_stays_open(self, node):
        client = await node.joined("1", "1")
        for i in range(4):
            await client.send(f"m{i}")
        frames = [await client.json() for _ in range(4)]
        # The refusal of m3 is immediate; m2's echo comes back through the broker, so the two may
        # arrive in either order. The echoes keep the order of their frames.
        assert [f["info"] for f in frames if "info" in f] == ["m0", "m1", "m2"]
        assert [f["code"] for f in frames if "code" in f] == [429]
        assert (await node.container.messages().latest("1")).total == 3
        await asyncio.sleep(1.1)
        await client.send("after a pause")
        assert (await client.json())["info"] == "after a pause"


class TestStorageAwayAtOpen:
    @pytest.fixture
    def backend_name(self):
        return "redis"

    @pytest.fixture
    def node_settings(self):
        return {"storage__redis_url": "redis://127.0.0.1:1/0"}

    @pytest.mark.gen_test
    @pytest.mark.parametrize("path", ["/group/chat/1/u/any", "/group/list/u/any"])
    async def test_the_socket_says_503_and_closes_with_1013(self, node, path):
        client = await Client.connect(node.base_url, path)
        assert (await client.json())["code"] == 503
        code, _ = await client.closed()
        assert code == 1013
