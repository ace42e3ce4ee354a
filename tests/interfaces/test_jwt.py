"""JWT connection tokens on one node: both WebSocket URLs, bearer HTTP, the groups claim, expiry and refresh."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from tests.interfaces.ws_client import Client

SECRET = "the-tests-hs256-secret-0123456789abcdef"


def mint(user="u1", lives_s=60.0, **claims):
    return jwt.encode({"sub": user, "exp": time.time() + lives_s, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def backend_name(request):
    return request.param


@pytest.fixture
def node_settings():
    return {"auth__jwt_secret": SECRET}


@pytest.mark.gen_test
async def test_a_jwt_opens_both_socket_kinds(node):
    chat = await node.chat("g1", "u1", mint())
    assert (await chat.json())["list"] == []
    await chat.send("hello")
    assert (await chat.json())["info"] == "hello"
    listing = await Client.connect(node.base_url, f"/group/list/u1/{mint()}")
    assert isinstance(await listing.json(), list)


@pytest.mark.gen_test
@pytest.mark.parametrize("make_token", [
    lambda: mint(user="u2"), lambda: mint(lives_s=-5), lambda: "x.y.z", lambda: "not-a-token",
    lambda: jwt.encode({"sub": "u1", "exp": time.time() + 60}, "another-secret-of-thirty-two-bytes!!", "HS256"),
])
async def test_a_bad_token_gets_440_then_4440_even_with_login_auth_off(node, make_token):
    chat = await node.chat("g1", "u1", make_token())
    assert await chat.text() == "440"
    assert (await chat.closed())[0] == 4440


@pytest.mark.gen_test
async def test_the_groups_claim_limits_the_chat_groups(node):
    allowed = await node.chat("g1", "u1", mint(groups=["g1"]))
    assert "list" in await allowed.json()
    refused = await node.chat("g2", "u1", mint(groups=["g1"]))
    assert await refused.closed() == (4403, "the token does not grant this group")


@pytest.mark.gen_test
async def test_a_socket_closes_with_4440_when_its_jwt_expires(node):
    chat = await node.chat("g1", "u1", mint(lives_s=1.0))
    await chat.json()
    started = time.monotonic()
    assert await chat.text(timeout=5) == "440"
    assert (await chat.closed())[0] == 4440
    assert time.monotonic() - started < 2.5


@pytest.mark.gen_test
async def test_a_refreshed_socket_outlives_its_first_jwt(node):
    chat = await node.chat("g1", "u1", mint(lives_s=1.0))
    await chat.json()
    fresh = mint(lives_s=30)
    await chat.send(json.dumps({"refresh": fresh}))
    answer = await chat.json()
    assert answer == {"event": "refreshed", "exp": jwt.decode(fresh, SECRET, algorithms=["HS256"])["exp"]}
    assert await chat.silent_for(1.5)  # past the first token's exp
    await chat.send("still open")
    assert (await chat.json())["info"] == "still open"


@pytest.mark.gen_test
@pytest.mark.parametrize("make_frame", [
    lambda: json.dumps({"refresh": mint(user="u2")}),
    lambda: json.dumps({"refresh": "garbage"}),
    lambda: json.dumps({"refresh": mint(), "x": 1}),
    lambda: '{"refresh": 5}',
    lambda: '{"refresh"',
])
async def test_a_refused_refresh_is_answered_and_changes_nothing(node, make_frame):
    chat = await node.chat("g1", "u1", mint(lives_s=1.5))
    await chat.json()
    await chat.send(make_frame())
    answer = await chat.json()
    assert answer["code"] == 401, answer
    assert await chat.text(timeout=5) == "440"  # the first token's exp still ends it
    assert (await node.container.messages().latest("g1")).total == 0  # never taken for a message


@pytest.mark.gen_test
async def test_a_refresh_that_drops_the_group_closes_with_4403(node):
    chat = await node.chat("g1", "u1", mint(groups=["g1"]))
    await chat.json()
    await chat.send(json.dumps({"refresh": mint(groups=["g2"])}))
    assert (await chat.closed())[0] == 4403


@pytest.mark.gen_test
async def test_on_a_login_token_socket_a_refresh_shaped_text_is_a_message(node):
    token = await node.api.login("u1")
    chat = await node.chat("g1", "u1", token)
    await chat.json()
    text = json.dumps({"refresh": mint()})
    await chat.send(text)
    assert (await chat.json())["info"] == text


@pytest.mark.gen_test
async def test_login_tokens_keep_working_beside_jwts(node):
    token = await node.api.login("u1")
    chat = await node.chat("g1", "u1", token)
    assert "list" in await chat.json()
    status, body = await node.get("/user/listGroup", node.api.auth("u1"))
    assert body["code"] == 200 and body["data"] == ["g1"]


@pytest.mark.gen_test
async def test_a_bearer_jwt_stands_for_the_userid_and_token_headers(node):
    await node.container.groups().join("u1", "g1")
    status, body = await node.get("/user/listGroup", {"Authorization": f"Bearer {mint()}"})
    assert status == 200 and body["code"] == 200 and body["data"] == ["g1"]
    status, body = await node.get("/user/listGroup", {"Authorization": f"Bearer {mint()}", "userId": "u1"})
    assert body["code"] == 200
    for headers in ({"Authorization": f"Bearer {mint()}", "userId": "u2"},
                    {"Authorization": f"Bearer {mint(lives_s=-1)}"},
                    {"Authorization": "Bearer x.y.z"},
                    {"Authorization": f"Bearer {mint(user='u 1')}"},
                    {"Authorization": "Bearer " + "x" * 20000 + ".a.b"},  # refused by its length, not decoded
                    {"Authorization": "Bearer "}):
        status, body = await node.get("/user/listGroup", headers)
        assert body["code"] == 440, headers


@pytest.mark.gen_test
async def test_a_bearer_jwt_reads_only_the_groups_it_grants(node):
    headers = {"Authorization": f"Bearer {mint(groups=['g1'])}"}
    response = await node.api.call("/group/listMessage", {"groupId": "g2", "startPage": 0, "endPage": 5}, headers)
    assert response.code == 403 and json.loads(response.body)["code"] == 403
    response = await node.api.call("/group/listMessage", {"groupId": "g1", "startPage": 0, "endPage": 5}, headers)
    assert json.loads(response.body)["code"] == 200


def test_protected_mode_sees_jwt_only_logins_as_closed():
    from fastim.container import build_container, open_logins
    from tests.settings_factory import make_settings

    jwt_only = build_container(make_settings(auth__jwt_secret=SECRET, auth__password_logins=0))
    assert open_logins(jwt_only) == []
    beside_passwords = build_container(make_settings(auth__jwt_secret=SECRET))
    assert open_logins(beside_passwords) == ["the default authenticator accepts any password"]


class TestPasswordLoginsOff:
    @pytest.fixture
    def node_settings(self):
        return {"auth__jwt_secret": SECRET, "auth__password_logins": 0}

    @pytest.mark.gen_test
    async def test_login_is_refused_and_jwts_still_work(self, node):
        status, body = await node.api.post("/user/login", {"userId": "u1", "password": "pw"})
        assert status == 403 and body["code"] == 403 and "password logins are off" in body["msg"]
        chat = await node.chat("g1", "u1", mint())
        assert "list" in await chat.json()


@pytest.mark.gen_test
async def test_the_group_list_shows_only_the_groups_the_token_grants(node):
    for group in ("g1", "g2"):
        await node.container.groups().join("u1", group)
    listing = await Client.connect(node.base_url, f"/group/list/u1/{mint(groups=['g1'])}")
    assert [entry["groupId"] for entry in await listing.json()] == ["g1"]
    everything = await Client.connect(node.base_url, f"/group/list/u1/{mint()}")
    assert sorted(entry["groupId"] for entry in await everything.json()) == ["g1", "g2"]
    status, body = await node.get("/user/listGroup", {"Authorization": f"Bearer {mint(groups=['g2'])}"})
    assert body["data"] == ["g2"]


class TestWithoutJwts:
    @pytest.fixture
    def node_settings(self):
        return {}

    @pytest.mark.gen_test
    async def test_a_bearer_header_is_ignored_and_the_login_headers_decide(self, node):
        await node.api.login("u1")
        headers = {**node.api.auth("u1"), "Authorization": "Bearer something-of-a-proxy"}
        status, body = await node.get("/user/listGroup", headers)
        assert body["code"] == 200
        status, body = await node.get("/user/listGroup", {"Authorization": f"Bearer {mint()}"})
        assert body["code"] == 440
