"""The server API and JWTs across two real nodes on one redis-server: what one node is told, every node does."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.processes import no_errors_logged, node_pair

pytestmark = pytest.mark.redis

KEY = "integration-api-key-0123456789"
SECRET = "integration-jwt-secret-0123456789abcdef"


def mint(user, lives_s=60.0, **claims):
    return jwt.encode({"sub": user, "exp": time.time() + lives_s, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def nodes(redis_server, tmp_path_factory):
    environ = {"FASTIM_API_KEY": KEY, "FASTIM_AUTH_JWT_SECRET": SECRET}
    with node_pair(tmp_path_factory.mktemp("server-api"), redis_server.url, environ) as pair:
        yield pair


@pytest.fixture(autouse=True)
def nodes_log_no_errors_and_no_secrets(nodes):
    with no_errors_logged(nodes, secrets=(KEY, SECRET)):
        yield


async def api_call(node, path, body=None, method="POST"):
    response = await AsyncHTTPClient().fetch(
        node.base_url + path, method=method, body=None if method == "GET" else json.dumps(body),
        headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"}, raise_error=False,
    )
    envelope = json.loads(response.body)
    assert response.code == 200 and envelope["code"] == 200, envelope
    return envelope["data"]


async def chat(node, group, user, token=None):
    client = await Client.connect(node.base_url, f"/group/chat/{group}/{user}/{token or mint(user)}")
    await client.json()
    return client


@pytest.mark.gen_test(timeout=20)
async def test_a_publish_on_one_node_reaches_sockets_on_the_other(nodes):
    a, b = nodes
    watcher = await chat(b, "pub1", "w1")
    data = await api_call(a, "/api/publish", {"groupId": "pub1", "userId": "bot", "info": "hello from the app"})
    frame = await watcher.json()
    assert frame["info"] == "hello from the app" and frame["id"] == data["id"] and frame["seq"] == data["seq"]
    results = await api_call(a, "/api/broadcast", {"groupIds": ["pub1", "pub2"], "userId": "bot", "info": "both"})
    assert [r["groupId"] for r in results] == ["pub1", "pub2"]
    assert (await watcher.json())["info"] == "both"


@pytest.mark.gen_test(timeout=20)
async def test_a_moderators_recall_on_one_node_reaches_the_other(nodes):
    a, b = nodes
    author = await chat(a, "mod1", "author")
    watcher = await chat(b, "mod1", "w1")
    await author.send("something rude")
    message = await author.json()
    assert (await watcher.json())["id"] == message["id"]
    recall = await api_call(b, "/api/recall", {"groupId": "mod1", "id": message["id"]})
    assert recall["event"] == "recall" and recall["userId"] == "author"
    assert await watcher.json() == recall
    assert await author.json() == recall


@pytest.mark.gen_test(timeout=20)
async def test_disconnect_on_one_node_closes_the_users_sockets_on_both(nodes):
    a, b = nodes
    api_b = Api(AsyncHTTPClient(), b.base_url)
    token = await api_b.login("victim")
    on_a = await chat(a, "dc1", "victim", token)
    on_b = await chat(b, "dc1", "victim", mint("victim"))
    listing = await Client.connect(b.base_url, f"/group/list/victim/{token}")
    await listing.json()
    bystander = await chat(b, "dc1", "bystander")
    data = await api_call(a, "/api/disconnect", {"userId": "victim"})
    assert data == {"userId": "victim", "revoked": True}
    for socket in (on_a, on_b, listing):
        assert (await socket.closed())[0] == 4403
    assert (await api_b.post("/user/listGroup", user="victim"))[1]["code"] == 440  # the token is revoked
    await bystander.send("unaffected")
    assert (await bystander.json())["info"] == "unaffected"


@pytest.mark.gen_test(timeout=20)
async def test_a_jwt_from_the_application_works_on_either_node(nodes):
    a, b = nodes
    on_a = await chat(a, "jwt1", "u7", mint("u7", groups=["jwt1"]))
    on_b = await chat(b, "jwt1", "u8", mint("u8"))
    await on_a.send("hi")
    assert (await on_b.json())["info"] == "hi"
    refused = await Client.connect(b.base_url, f"/group/chat/jwt2/u7/{mint('u7', groups=['jwt1'])}")
    assert (await refused.closed())[0] == 4403
    response = await AsyncHTTPClient().fetch(
        b.base_url + "/user/listGroup", method="POST", body="",
        headers={"Authorization": f"Bearer {mint('u7')}"}, raise_error=False,
    )
    assert json.loads(response.body) == {"code": 200, "msg": "操作成功", "data": ["jwt1"]}


@pytest.mark.gen_test(timeout=20)
async def test_the_openapi_document_lists_the_server_api_and_its_scheme(nodes):
    response = await AsyncHTTPClient().fetch(nodes[0].base_url + "/openapi.json")
    document = json.loads(response.body)
    assert document["components"]["securitySchemes"]["apikey"]["name"] == "Authorization"
    for path in ("/api/publish", "/api/broadcast", "/api/recall", "/api/disconnect",
                 "/api/presence/{groupId}", "/api/groups/{groupId}"):
        operation = next(iter(document["paths"][path].values()))
        assert operation["security"] == [{"apikey": []}], path
