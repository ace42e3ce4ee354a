"""Issue 12, findings 5, 6 and 11, against real nodes: logins, tokens and the sockets opened with them.

The node in most of these tests runs ``examples/user_store_auth.py``, the
README's authenticator that checks passwords (user 1: 123456, user 2: 654321).
Each test failed on the build before (23fe8b9).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.integration.conftest import EXAMPLES
from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess, start_nodes

pytestmark = pytest.mark.redis

USER_STORE = EXAMPLES / "user_store_auth.py"
PASSWORDS = {"1": "123456", "2": "654321"}


async def login(node: ServeProcess, user: str, password: str) -> tuple[int, dict, dict]:
    api = Api(AsyncHTTPClient(), node.base_url)
    response = await api.call("/user/login", {"userId": user, "password": password})
    return response.code, json.loads(response.body), dict(response.headers)


async def timed_login(node: ServeProcess, user: str, password: str) -> float:
    started = time.perf_counter()
    await login(node, user, password)
    return time.perf_counter() - started


@pytest.mark.gen_test(timeout=60)
async def test_failed_logins_are_throttled_per_user_and_successes_are_not(node_factory):
    node = node_factory(script=USER_STORE, FASTIM_AUTH_LOGIN_FAILURES_PER_USER="3")
    for _ in range(3):
        status, body, _ = await login(node, "1", "guess")
        assert (status, body["code"]) == (200, 100)
    status, body, headers = await login(node, "1", PASSWORDS["1"])  # even the right password waits now
    assert (status, body["code"]) == (429, 429) and body["msg"].startswith("too many failed logins")
    assert 1 <= int(headers["Retry-After"]) <= 300
    for _ in range(40):  # many users behind one address: successes never count
        status, body, _ = await login(node, "2", PASSWORDS["2"])
        assert body["code"] == 200


@pytest.mark.gen_test(timeout=60)
async def test_failed_logins_are_throttled_per_address(node_factory):
    node = node_factory(script=USER_STORE, FASTIM_AUTH_LOGIN_FAILURES_PER_IP="5")
    for user in ("a", "b", "c", "d", "e"):  # a different user each time: only the address adds up
        assert (await login(node, user, "guess"))[1]["code"] == 100
    status, body, _ = await login(node, "f", "guess")
    assert (status, body["code"]) == (429, 429)


@pytest.mark.gen_test(timeout=60)
async def test_an_unknown_user_and_a_wrong_password_take_the_same_time(node_factory):
    node = node_factory(script=USER_STORE)
    unknown = [await timed_login(node, f"nobody{i}", "guess") for i in range(5)]
    wrong = [await timed_login(node, "1", "guess") for _ in range(5)]
    assert min(unknown) >= 0.24 and min(wrong) >= 0.24  # every refusal waits out the same floor
    assert abs(statistics.median(unknown) - statistics.median(wrong)) < 0.05


@pytest.mark.gen_test(timeout=60)
async def test_password_hashing_does_not_stall_the_node(node_factory):
    node = node_factory(script=USER_STORE, FASTIM_AUTH_LOGIN_FAILURES_PER_IP="0", FASTIM_AUTH_LOGIN_FAILURES_PER_USER="0")
    logins = [asyncio.ensure_future(login(node, "1", f"guess{i}")) for i in range(20)]
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    probe = AsyncHTTPClient(force_instance=True)  # not queued behind the logins in the shared client
    response = await probe.fetch(node.base_url + "/healthz")
    stalled = time.perf_counter() - started
    probe.close()
    assert all(result[1]["code"] == 100 for result in await asyncio.gather(*logins))
    assert response.code == 200
    assert stalled < 0.15  # 20 hashes of about 0.1 s each would hold a node that hashed on its loop for 2 s


@pytest.mark.gen_test(timeout=60)
async def test_tokens_never_reach_the_log(node_factory):
    node = node_factory(FASTIM_IM_LOGIN_AUTH="1")
    api = Api(AsyncHTTPClient(), node.base_url)
    token = await api.login("u1")
    chat = await Client.connect(node.ws_url, f"/group/chat/1/u1/{token}")
    await chat.json()
    group_list = await Client.connect(node.ws_url, f"/group/list/u1/{token}")
    await group_list.json()
    await api.post("/user/listGroup", user="u1")
    await api.post("/user/listGroup?token=" + token, user="u1")  # a client that also puts it in the query
    refused = await Client.connect(node.ws_url, f"/group/chat/1/u1/{'f' * 32}")
    assert await refused.text() == "440"
    chat.close()
    group_list.close()
    node.wait_for_log("GET /group/list/u1/*** (127.0.0.1)")
    assert token not in node.stderr and "f" * 32 not in node.stderr
    assert "GET /group/chat/1/u1/*** (127.0.0.1)" in node.stderr


class TestSocketsEndWithTheirLogin:
    """A socket opened with a token is closed (440, then 4440) within a second of the token ending."""

    @pytest.fixture
    def two_nodes(self, fresh_redis, tmp_path):
        environ = {"FASTIM_IM_LOGIN_AUTH": "1", "FASTIM_IM_TOKEN_TTL": "3"}
        pair = [ServeProcess(tmp_path, name=name, backend="redis", redis_url=fresh_redis.url, environ=environ)
                for name in ("a", "b")]
        start_nodes(pair)
        yield pair
        for node in pair:
            node.stop()

    async def ends_within(self, client: Client, seconds: float) -> None:
        started = time.monotonic()
        assert await client.text(timeout=seconds + 1) == "440"
        assert (await client.closed())[0] == 4440
        assert time.monotonic() - started < seconds

    @pytest.mark.gen_test(timeout=60)
    async def test_logout_on_one_node_closes_the_sockets_on_another(self, two_nodes):
        node_a, node_b = two_nodes
        api = Api(AsyncHTTPClient(), node_a.base_url)
        token = await api.login("u1")
        chat = await Client.connect(node_b.ws_url, f"/group/chat/1/u1/{token}")
        await chat.json()
        group_list = await Client.connect(node_b.ws_url, f"/group/list/u1/{token}")
        await group_list.json()
        other = await Client.connect(node_b.ws_url, f"/group/chat/1/u2/{await api.login('u2')}")
        await other.json()
        status, body = await api.post("/user/logout", user="u1")
        assert body == {"code": 200, "msg": "操作成功", "data": None}
        await asyncio.gather(self.ends_within(chat, 1.0), self.ends_within(group_list, 1.0))
        assert (await api.post("/user/listGroup", user="u1"))[1]["code"] == 440  # the token is gone
        await other.send("unaffected")
        assert (await other.json())["info"] == "unaffected"

    @pytest.mark.gen_test(timeout=60)
    async def test_a_new_login_closes_the_sockets_of_the_old_token(self, two_nodes):
        node_a, node_b = two_nodes
        api = Api(AsyncHTTPClient(), node_a.base_url)
        old = await api.login("u1")
        chat = await Client.connect(node_b.ws_url, f"/group/chat/1/u1/{old}")
        await chat.json()
        await api.login("u1")
        await self.ends_within(chat, 1.0)

    @pytest.mark.gen_test(timeout=60)
    async def test_an_expired_token_closes_its_sockets_and_a_renewed_one_keeps_them(self, two_nodes):
        node_a, node_b = two_nodes
        api = Api(AsyncHTTPClient(), node_a.base_url)
        expiring = await api.login("u1")
        renewed = await api.login("u2")
        chat = await Client.connect(node_b.ws_url, f"/group/chat/1/u1/{expiring}")
        await chat.json()
        kept = await Client.connect(node_b.ws_url, f"/group/chat/1/u2/{renewed}")
        await kept.json()
        opened = time.monotonic()
        for _ in range(3):  # HTTP calls renew u2's token on node a; u1's runs out after 3 s
            await asyncio.sleep(1)
            assert (await api.post("/user/listGroup", user="u2"))[1]["code"] == 200
        assert await chat.text(timeout=3) == "440"
        assert (await chat.closed())[0] == 4440
        assert time.monotonic() - opened < 3 + 1.0 + 0.5  # the TTL, the second allowed, the socket's open
        await kept.send("still logged in")
        assert (await kept.json())["info"] == "still logged in"
