"""The server API (/api/*) on one node, on every backend: the key, JSON bodies, publish, broadcast, recall, disconnect."""

from __future__ import annotations

import json

import pytest

from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client

KEY = "k3y-for-the-tests-0123456789"


@pytest.fixture
def node_settings():
    return {"api__key": KEY, "im__recall_time_limit": 1}


@pytest.fixture
def api(container, http_server, base_url, http_client):
    return ServerApiClient(Api(http_client, base_url), base_url)


class ServerApiClient:
    def __init__(self, api, base_url):
        self.api, self.base_url = api, base_url

    async def call(self, path, body=None, *, key=KEY, method="POST", raw=None):
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"apikey {key}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = await self.api.call(path, headers=headers, method=method, raw_body=data if method == "POST" else None)
        return response.code, json.loads(response.body), response.headers

    async def ok(self, path, body=None, method="POST"):
        status, envelope, _ = await self.call(path, body, method=method)
        assert status == 200 and envelope["code"] == 200, envelope
        return envelope["data"]


@pytest.mark.gen_test
@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789012", KEY + "x", KEY[:-1]])
async def test_without_the_key_every_call_is_401_and_does_nothing(api, container, key):
    for path, method in [("/api/publish", "POST"), ("/api/presence/g1", "GET"), ("/api/groups/g1", "GET")]:
        status, envelope, headers = await api.call(
            path, {"groupId": "g1", "userId": "u1", "info": "x"}, key=key, method=method
        )
        assert status == 401 and envelope["code"] == 401 and "apikey" in envelope["msg"]
        assert headers["WWW-Authenticate"] == "apikey"
    assert (await container.messages().latest("g1")).total == 0


@pytest.mark.gen_test
async def test_the_scheme_is_case_insensitive_and_a_bearer_is_not_a_key(api):
    for header, status in [(f"APIKEY {KEY}", 200), (f"Bearer {KEY}", 401), (KEY, 401)]:
        response = await api.api.call("/api/groups/g1", headers={"Authorization": header}, method="GET")
        assert response.code == status


@pytest.mark.gen_test
async def test_publish_stores_broadcasts_and_answers_seq_id_ts(api, container, base_url):
    watcher = await Client.connect(base_url, "/group/chat/g1/w/any")
    await watcher.json()
    data = await api.ok("/api/publish", {"groupId": "g1", "userId": "system", "info": "maintenance at 5"})
    assert data["seq"] == 1 and data["id"].endswith("-1") and isinstance(data["ts"], int)
    assert data["groupId"] == "g1" and data["userId"] == "system"
    frame = await watcher.json()
    assert frame == {"groupId": "g1", "userId": "system", "info": "maintenance at 5", "ts": data["ts"],
                     "id": data["id"], "seq": 1}
    assert (await container.messages().latest("g1")).messages[-1].info == "maintenance at 5"


@pytest.mark.gen_test
@pytest.mark.parametrize("body, reason", [
    ({"groupId": "g1", "userId": "u1"}, "info is required"),
    ({"groupId": "g1", "userId": "u1", "info": ""}, "info must not be empty"),
    ({"groupId": "g1", "userId": "u1", "info": 5}, "info must be a string"),
    ({"groupId": "g 1", "userId": "u1", "info": "x"}, "groupId must not contain"),
    ({"groupId": "g1", "userId": 7, "info": "x"}, "userId must be text"),
    ({"groupId": "g1", "userId": "u1", "info": "x", "extra": 1}, "extra"),
    ({"groupId": "g1", "userId": "u1", "info": "x" * 4097}, "over the limit of 4096"),
    ([1, 2], "must be a JSON object"),
])
async def test_bad_bodies_are_400_naming_the_field_and_store_nothing(api, container, body, reason):
    status, envelope, _ = await api.call("/api/publish", body)
    assert status == 400 and envelope["code"] == 400 and reason in envelope["msg"], envelope
    assert (await container.messages().latest("g1")).total == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("raw", [b"", b"{", b"\xff\xfe", b'{"groupId":"g1","userId":"u1","info":"\\ud800"}', b"null"])
async def test_malformed_json_is_400(api, container, raw):
    status, envelope, _ = await api.call("/api/publish", raw=raw)
    assert status == 400 and envelope["code"] == 400, envelope
    assert (await container.messages().latest("g1")).total == 0


@pytest.mark.gen_test
async def test_broadcast_publishes_to_each_group_in_one_call(api, container):
    data = await api.ok("/api/broadcast", {"groupIds": ["b1", "b2", "b3"], "userId": "system", "info": "hi all"})
    assert [item["groupId"] for item in data] == ["b1", "b2", "b3"]
    assert all(item["seq"] == 1 for item in data)
    for group in ("b1", "b2", "b3"):
        assert [m.info for m in (await container.messages().latest(group)).messages] == ["hi all"]


@pytest.mark.gen_test
async def test_broadcast_refuses_repeats_and_too_many_groups(api, container):
    status, envelope, _ = await api.call("/api/broadcast", {"groupIds": ["b1", "b1"], "userId": "s", "info": "x"})
    assert status == 400 and "repeat" in envelope["msg"]
    many = [f"g{i}" for i in range(1001)]
    status, envelope, _ = await api.call("/api/broadcast", {"groupIds": many, "userId": "s", "info": "x"})
    assert status == 400 and "at most 1000" in envelope["msg"]
    status, envelope, _ = await api.call("/api/broadcast", {"groupIds": [], "userId": "s", "info": "x"})
    assert status == 400
    assert (await container.messages().latest("b1")).total == 0


@pytest.mark.gen_test
async def test_recall_removes_anyones_message_at_any_age_with_the_recall_event(api, container, clock, base_url):
    message = await container.messages().post("g1", "author", "spam")
    clock.advance(10)  # past the 1 s recall window users have
    watcher = await Client.connect(base_url, "/group/chat/g1/w/any")
    await watcher.json()
    data = await api.ok("/api/recall", {"groupId": "g1", "id": message.id})
    assert data["event"] == "recall" and data["userId"] == "author" and data["id"] == message.id
    assert data["ts"] == message.ts and data["seq"] == 2
    assert await watcher.json() == data
    assert (await container.messages().latest("g1")).total == 0
    status, envelope, _ = await api.call("/api/recall", {"groupId": "g1", "id": message.id})
    assert status == 200 and envelope["code"] == 100  # fast-im's "message does not exist"


@pytest.mark.gen_test
async def test_recall_names_the_message_by_a_well_formed_id(api):
    for bad in ("", "x", "abc-", "-1", "a" * 40 + "-1", 5):
        status, envelope, _ = await api.call("/api/recall", {"groupId": "g1", "id": bad})
        assert status == 400 and envelope["code"] == 400


@pytest.mark.gen_test
async def test_disconnect_closes_the_users_sockets_with_4403_and_revokes_its_token(api, container, base_url):
    token = await container.sessions().login("u1", "pw")
    chat = await Client.connect(base_url, "/group/chat/g1/u1/any")
    await chat.json()
    other = await Client.connect(base_url, "/group/chat/g1/u2/any")
    await other.json()
    data = await api.ok("/api/disconnect", {"userId": "u1"})
    assert data == {"userId": "u1", "revoked": True}
    assert await chat.closed() == (4403, "disconnected by the server")
    assert not await container.sessions().check("u1", token)
    await other.send("still here")
    assert (await other.json())["info"] == "still here"
    assert (await api.ok("/api/disconnect", {"userId": "u1"}))["revoked"] is False


@pytest.mark.gen_test
async def test_group_answers_total_seq_and_epoch(api, container):
    assert await api.ok("/api/groups/g9", method="GET") == {
        "groupId": "g9", "total": 0, "seq": 0, "epoch": "", "online": 0}
    message = await container.messages().post("g9", "u", "x")
    data = await api.ok("/api/groups/g9", method="GET")
    assert data["total"] == 1 and data["seq"] == 1 and message.id == f"{data['epoch']}-1"


@pytest.mark.gen_test
async def test_bad_path_ids_are_400(api):
    status, envelope, _ = await api.call("/api/groups/%00x", method="GET")
    assert status == 400 and envelope["code"] == 400


class TestWithoutKey:
    @pytest.fixture
    def node_settings(self):
        return {}

    @pytest.mark.gen_test
    async def test_the_server_api_is_not_served(self, api):
        status, envelope, _ = await api.call("/api/publish", {"groupId": "g1", "userId": "u", "info": "x"})
        assert status == 404 and envelope["code"] == 404
