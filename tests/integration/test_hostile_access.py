"""Issue 12, findings 7, 8, 9 and 13, against real nodes on a real redis-server: who may read and join
what, how much one request may cost, and what an id may be. Each test failed on the build before (23fe8b9).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from tornado.httpclient import AsyncHTTPClient

from fastim.domain.codec import encode_message
from fastim.domain.model import Message
from tests.integration.conftest import EXAMPLES
from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client

pytestmark = pytest.mark.redis

T0 = 1_700_000_000_000
NOT_A_MEMBER = {"code": 403, "msg": "not a member of this group; join it first", "data": None}


def api_of(node) -> Api:
    return Api(AsyncHTTPClient(), node.base_url)


def fill(redis_url: str, group: str, count: int, start_ts: int = T0) -> list[Message]:
    """``count`` messages of ``group``, a millisecond apart, written straight into gml:{group}."""
    messages = [Message(group, str(i % 5), f"m{i}", start_ts + i) for i in range(count)]
    client = redis.Redis.from_url(redis_url)
    try:
        for at in range(0, count, 10_000):
            client.rpush(f"gml:{group}", *(encode_message(m) for m in messages[at:at + 10_000]))
    finally:
        client.close()
    return messages


def command_calls(redis_url: str, command: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    finally:
        client.close()


@pytest.mark.gen_test(timeout=60)
async def test_without_auto_join_history_and_sockets_need_membership(node_factory):
    node = node_factory(FASTIM_IM_AUTO_JOIN="0")
    api = api_of(node)
    await api.login("u1")
    assert await api.post("/group/listMessage", {"groupId": "g", "startPage": 0, "endPage": -1}, user="u1") == (
        403, NOT_A_MEMBER)
    fields = {"groupId": "g", "userId": "u1", "ts": T0, "count": 5}
    assert await api.post("/group/listOldMessage", fields, user="u1") == (403, NOT_A_MEMBER)
    assert await api.post("/group/listMessage", fields, user="u1") == (403, NOT_A_MEMBER)
    outsider = await Client.connect(node.ws_url, "/group/chat/g/u1/any")
    assert await outsider.closed() == (4403, "not a member of this group")
    assert (await api.post("/user/joinGroup", {"groupId": "g"}, user="u1"))[1]["code"] == 200
    assert await api.post("/group/listMessage", {"groupId": "g", "startPage": 0, "endPage": -1}, user="u1") == (
        200, {"code": 200, "msg": "操作成功", "data": []})


@pytest.mark.gen_test(timeout=60)
async def test_a_join_policy_decides_who_may_join_read_and_open_a_group(node_factory):
    node = node_factory(script=EXAMPLES / "join_policy.py")
    api = api_of(node)
    await api.login("1")
    await api.login("3")
    assert (await api.post("/user/joinGroup", {"groupId": "public-lobby"}, user="3"))[1]["code"] == 200
    refused = {"code": 403, "msg": "not allowed to join this group", "data": None}
    assert await api.post("/user/joinGroup", {"groupId": "vip"}, user="3") == (403, refused)
    assert await api.post("/group/listMessage", {"groupId": "vip", "startPage": 0, "endPage": -1}, user="3") == (
        403, NOT_A_MEMBER)
    stranger = await Client.connect(node.ws_url, "/group/chat/vip/3/any")
    assert await stranger.closed() == (4403, "not allowed to join this group")
    guest = await Client.connect(node.ws_url, "/group/chat/vip/1/any")  # invited
    assert (await guest.json())["list"] == []
    assert (await api.post("/group/listMessage", {"groupId": "vip", "startPage": 0, "endPage": -1}, user="1"))[1][
        "code"] == 200
    guest.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_user_may_join_at_most_max_groups_per_user(node_factory):
    node = node_factory(FASTIM_IM_MAX_GROUPS_PER_USER="3")
    api = api_of(node)
    await api.login("u1")
    for group in ("a", "b", "c"):
        assert (await api.post("/user/joinGroup", {"groupId": group}, user="u1"))[1]["code"] == 200
    full = {"code": 100, "msg": "a user may join at most 3 groups; leave one first", "data": None}
    assert await api.post("/user/joinGroup", {"groupId": "d"}, user="u1") == (200, full)
    assert (await api.post("/user/joinGroup", {"groupId": "b"}, user="u1"))[1]["code"] == 200  # already in
    socket = await Client.connect(node.ws_url, "/group/chat/d/u1/any")
    assert await socket.closed() == (4403, "a user may join at most 3 groups; leave one first")
    assert (await api.post("/user/leaveGroup", {"groupId": "a"}, user="u1"))[1] == {
        "code": 200, "msg": "操作成功", "data": None}
    assert (await api.post("/user/joinGroup", {"groupId": "d"}, user="u1"))[1]["code"] == 200
    assert (await api.post("/user/listGroup", user="u1"))[1]["data"] == ["b", "c", "d"]


@pytest.mark.gen_test(timeout=60)
async def test_history_answers_hold_at_most_history_page_max_and_say_so(node_factory, fresh_redis):
    node = node_factory()
    messages = fill(fresh_redis.url, "big", 5000)
    api = api_of(node)
    await api.login("u1")
    status, body = await api.post("/group/listMessage", {"groupId": "big", "startPage": 0, "endPage": -1}, user="u1")
    assert status == 200 and body["clipped"] is True and body["limit"] == 200
    assert [json.loads(m)["info"] for m in body["data"]] == [f"m{i}" for i in range(200)]
    anchor = messages[4000]
    fields = {"groupId": "big", "userId": anchor.user_id, "ts": anchor.ts, "count": 1000}
    status, body = await api.post("/group/listOldMessage", fields, user="u1")
    assert body["clipped"] is True and len(body["data"]) == 200
    assert json.loads(body["data"][-1])["info"] == "m3999"  # the nearest to the anchor
    status, body = await api.post("/group/listMessage", {"groupId": "big", "startPage": -5, "endPage": -1}, user="u1")
    assert set(body) == {"code", "msg", "data"} and len(body["data"]) == 5  # a page that fits: fast-im's answer


@pytest.mark.gen_test(timeout=60)
async def test_an_anchor_search_is_bounded_however_long_the_list(node_factory, fresh_redis):
    node = node_factory()
    fill(fresh_redis.url, "big", 100_000)
    stray = Message("big", "x", "stamped long ago, stored last", T0 - 1_000_000)
    client = redis.Redis.from_url(fresh_redis.url)
    client.rpush("gml:big", encode_message(stray))
    client.rpush("gml:big", *(encode_message(Message("big", "y", "later", T0 + 200_000 + i)) for i in range(300)))
    client.close()
    api = api_of(node)
    await api.login("u1")
    # The stray message lies 300 messages from the newest end (beyond the 200 searched there) and
    # 100,000 positions away from where its time belongs: a bounded search does not find it; the
    # build before scanned the whole list (and found it).
    fields = {"groupId": "big", "userId": "x", "ts": stray.ts, "count": 1}
    assert (await api.post("/group/listOldMessage", fields, user="u1"))[1]["data"] is None
    deep = {"groupId": "big", "userId": "0", "ts": T0 + 10, "count": 3}  # found by its time: O(log n) probes
    assert [json.loads(m)["info"] for m in (await api.post("/group/listOldMessage", deep, user="u1"))[1]["data"]] == [
        "m7", "m8", "m9"]


@pytest.mark.gen_test(timeout=120)
async def test_a_group_list_of_many_groups_subscribes_them_in_one_call(node_factory, fresh_redis):
    node = node_factory()
    groups = [f"g{i}" for i in range(20_000)]
    client = redis.Redis.from_url(fresh_redis.url)
    client.sadd("ugs:u1", *groups)
    client.close()
    subscribes = command_calls(fresh_redis.url, "subscribe")
    started = time.monotonic()
    listing = await Client.connect(node.ws_url, "/group/list/u1/any", max_message_size=64 * 1024 * 1024)
    entries = await listing.json(timeout=60)
    assert len(entries) == 20_000 and {e["groupId"] for e in entries} == set(groups)
    opened_in = time.monotonic() - started
    assert command_calls(fresh_redis.url, "subscribe") - subscribes <= 2  # the build before: 20,000
    unsubscribes = command_calls(fresh_redis.url, "unsubscribe")
    listing.close()
    await asyncio.sleep(1)
    assert command_calls(fresh_redis.url, "unsubscribe") - unsubscribes <= 2
    assert opened_in < 30  # seconds here; minutes before


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("bad", ["g1\n", "g\x00", "g\x7f", "g\x85x"])
async def test_ids_are_whole_matches_without_newline_nul_or_control_characters(node_factory, bad):
    node = node_factory()
    api = api_of(node)
    await api.login("u1")
    status, body = await api.post("/user/joinGroup", {"groupId": bad}, user="u1")
    assert (status, body["code"]) == (400, 400) and "control characters" in body["msg"]
    status, body = await api.post("/user/login", {"userId": "u" + bad, "password": "x"})
    assert status == 400
    from urllib.parse import quote

    socket = await Client.connect(node.ws_url, f"/group/chat/{quote(bad)}/u1/any")
    assert await socket.closed() == (4400, "invalid groupId")
    assert (await api.post("/user/listGroup", user="u1"))[1]["data"] == []
