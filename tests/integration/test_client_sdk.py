"""The SDK (fastim.client) against real ``fastim serve`` nodes on a real redis-server.

Login, history, acked sends and the node's refusals, recalls, the group list,
JWTs, final closes (the application's /api/disconnect, a logout), and the
resume: a node restarted under a reader while another client sends through a
second node, the reader ending with every message once and in order.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import time

import jwt
import pytest
from tornado.httpclient import AsyncHTTPClient

from fastim.client import (
    ApiError,
    Client,
    Disconnected,
    GroupList,
    LoginEnded,
    LoginRefused,
    Message,
    NotAllowed,
    Opened,
    Recall,
    SendError,
    StreamOptions,
)
from fastim.client.backoff import BackoffPolicy
from tests.integration.conftest import EXAMPLES
from tests.processes import ServeProcess, child_environ, no_errors_logged, node_pair, start_nodes

pytestmark = pytest.mark.redis

KEY = "sdk-test-api-key-0123456789"
SECRET = "sdk-test-jwt-secret-0123456789abcdef"
NODE_ENV = {"FASTIM_IM_LOGIN_AUTH": "1", "FASTIM_API_KEY": KEY, "FASTIM_AUTH_JWT_SECRET": SECRET,
            "FASTIM_IM_GROUP_LIST_UPDATE_RATE": "0.2"}
STEP_S = 5.0  # one cross-node hop, or one event, on a loaded machine
QUICK = StreamOptions(backoff=BackoffPolicy(base=0.05, cap=0.5))

_numbers = itertools.count(random.randrange(10**6, 9 * 10**6, 1000))


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_numbers)}"


@pytest.fixture(scope="module")
def nodes(redis_server, tmp_path_factory):
    with node_pair(tmp_path_factory.mktemp("client-sdk"), redis_server.url, NODE_ENV) as pair:
        yield pair


@pytest.fixture(autouse=True)
def nodes_log_no_errors(request):
    if "nodes" not in request.fixturenames:
        yield
        return
    with no_errors_logged(request.getfixturevalue("nodes")):
        yield


async def next_of(stream, kind, timeout: float = STEP_S):
    """The next event of type ``kind`` (others are passed over)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        event = await asyncio.wait_for(stream.__anext__(), max(0.01, deadline - asyncio.get_running_loop().time()))
        if isinstance(event, kind):
            return event


async def api_call(node, path, body):
    response = await AsyncHTTPClient().fetch(
        node.base_url + path, method="POST", body=json.dumps(body),
        headers={"Authorization": f"apikey {KEY}", "Content-Type": "application/json"}, raise_error=False,
    )
    return json.loads(response.body)


@pytest.mark.gen_test(timeout=30)
async def test_login_send_ack_echo_history_and_recall(nodes):
    a, b = nodes
    group, user = new_id("g"), new_id("u")
    async with Client(a.base_url) as client, Client(b.base_url) as watcher_client:
        token = await client.login(user, "any")
        assert len(token) == 32 and client.token == token
        await client.join_group(group)
        assert group in await client.list_groups()
        await watcher_client.login(new_id("w"), "any")
        watcher = await watcher_client.chat(group)
        chat = await client.chat(group)
        assert (await next_of(chat, Opened)).recovered is None

        sent = await asyncio.gather(*(chat.send(f"line {i}") for i in range(5)))
        assert [m.seq for m in sent] == [1, 2, 3, 4, 5] and all(m.user_id == user for m in sent)
        echoes = [await next_of(chat, Message) for _ in range(5)]
        assert [(e.id, e.info, e.ts) for e in echoes] == [(m.id, m.info, m.ts) for m in sent]
        across = [await next_of(watcher, Message) for _ in range(5)]  # the other node's socket
        assert [e.id for e in across] == [m.id for m in sent]

        await asyncio.sleep(0.01)  # a ts of its own: (user, ts) names the anchor of listOldMessage
        anchor = await chat.send("anchor")
        history = await client.history(group)
        assert [m.id for m in history.messages] == [m.id for m in sent + [anchor]] and not history.clipped
        before = await client.history_before(group, user, anchor.ts, 2)
        assert [m.info for m in before.messages] == ["line 3", "line 4"]
        assert await client.history_before(group, user, 12345, 2) is None

        await client.recall(group, id=sent[4].id)
        recall = await next_of(watcher, Recall)
        assert (recall.id, recall.user_id, recall.seq) == (sent[4].id, user, 7)
        with pytest.raises(ApiError) as refused:
            await client.recall(group, id=sent[4].id)  # already recalled
        assert refused.value.code == 100


@pytest.mark.gen_test(timeout=30)
async def test_refused_sends_raise_the_nodes_error_and_the_chat_goes_on(nodes):
    group = new_id("g")
    async with Client(nodes[0].base_url) as client:
        await client.login(new_id("u"), "any")
        chat = await client.chat(group)
        with pytest.raises(SendError) as too_large:
            await chat.send("x" * 5000)
        assert too_large.value.code == 413 and "over the limit" in too_large.value.msg
        assert not too_large.value.maybe_stored
        with pytest.raises(SendError) as empty:
            await chat.send("")
        assert empty.value.code == 400
        assert (await chat.send("still open")).info == "still open"


@pytest.mark.gen_test(timeout=30)
async def test_a_refused_login_and_a_bad_token(nodes):
    async with Client(nodes[0].base_url) as client:
        with pytest.raises(LoginRefused) as refused:
            await client.login("has space", "any")
        assert refused.value.code == 400 and refused.value.status == 400
    async with Client(nodes[0].base_url, user_id=new_id("u"), token="0" * 32) as client:
        with pytest.raises(LoginEnded) as ended:
            await client.chat(new_id("g"))
        assert ended.value.code == 4440
        with pytest.raises(ApiError) as gate:
            await client.list_groups()
        assert gate.value.code == 440


@pytest.mark.gen_test(timeout=30)
async def test_the_applications_disconnect_ends_the_stream_with_not_allowed(nodes):
    a, b = nodes
    user = new_id("victim")
    async with Client(a.base_url) as client:
        await client.login(user, "any")
        chat = await client.chat(new_id("g"))
        await next_of(chat, Opened)
        answer = await api_call(b, "/api/disconnect", {"userId": user})
        assert answer["code"] == 200, answer
        with pytest.raises(NotAllowed) as ended:
            await next_of(chat, Message)
        assert ended.value.code == 4403
        assert chat.closed and chat.error is ended.value


@pytest.mark.gen_test(timeout=30)
async def test_a_logout_ends_the_stream_with_login_ended(nodes):
    async with Client(nodes[1].base_url) as client:
        await client.login(new_id("u"), "any")
        chat = await client.chat(new_id("g"))
        await client.logout()
        with pytest.raises(LoginEnded):
            await next_of(chat, Message)


@pytest.mark.gen_test(timeout=30)
async def test_a_jwt_given_up_front_works_for_sockets_and_http(nodes):
    user, group = new_id("u"), new_id("g")
    token = jwt.encode({"sub": user, "exp": time.time() + 60}, SECRET, algorithm="HS256")
    async with Client(nodes[1].base_url, user_id=user, token=token) as client:
        chat = await client.chat(group)
        assert (await chat.send("signed")).info == "signed"
        # On a JWT socket the node takes '{"refresh":...}' as a token refresh: answered, but not with an ack
        fresh = jwt.encode({"sub": user, "exp": time.time() + 120}, SECRET, algorithm="HS256")
        answers = await asyncio.gather(chat.send('{"refresh":"not a jwt"}'), chat.send(json.dumps({"refresh": fresh})),
                                       chat.send("after"), return_exceptions=True)
        assert answers[0].code == 401 and answers[1].code is None and "refresh" in answers[1].msg, answers
        assert answers[2].info == "after" and answers[2].seq == 2  # still matched to the right send
        assert group in await client.list_groups()  # Authorization: Bearer
        assert [m.info for m in (await client.history(group)).messages] == ["signed", "after"]


@pytest.mark.gen_test(timeout=30)
async def test_the_group_list_is_pushed_on_open_and_on_change(nodes):
    a, b = nodes
    user, group = new_id("u"), new_id("g")
    async with Client(a.base_url) as client, Client(b.base_url) as other:
        await client.login(user, "any")
        await client.join_group(group)
        listing = await client.group_list()
        first = await next_of(listing, GroupList)
        assert [(g.group_id, g.newest, g.total) for g in first.groups] == [(group, None, 0)]
        await other.login(new_id("o"), "any")
        sent = await (await other.chat(group)).send("news")
        pushed = await next_of(listing, GroupList)
        assert [(g.group_id, g.newest.id if g.newest else None, g.total) for g in pushed.groups] == [(group, sent.id, 1)]


@pytest.mark.gen_test(timeout=60)
async def test_a_reader_on_a_restarted_node_sees_every_message_once_and_in_order(fresh_redis, tmp_path):
    """Node A restarts (SIGTERM, then again on its port) while a writer sends through node B."""
    # list_num 5: a reconnect that did not resume would get only the newest 5, and the test would see the gap
    environ = {**NODE_ENV, "FASTIM_IM_RATE_LIMIT": "500", "FASTIM_IM_RATE_BURST": "500", "FASTIM_IM_LIST_NUM": "5"}
    a, b = start_nodes([
        ServeProcess(tmp_path, name=name, backend="redis", redis_url=fresh_redis.url, environ=environ)
        for name in ("a", "b")
    ])
    restarted: ServeProcess | None = None
    loop = asyncio.get_running_loop()
    try:
        group, count = "restart", 150
        async with Client(a.base_url, options=QUICK) as reader_client, Client(b.base_url) as writer_client:
            await reader_client.login("reader", "any")
            await writer_client.login("writer", "any")
            reader = await reader_client.chat(group)
            writer = await writer_client.chat(group)
            await next_of(reader, Opened)

            async def write() -> list[Message]:
                stored = []
                for i in range(count):
                    stored.append(await writer.send(f"m{i}"))
                    await asyncio.sleep(0.02)  # about 3 s of traffic, the restart in the middle
                return stored

            writing = loop.create_task(write())
            await asyncio.sleep(0.6)
            assert await loop.run_in_executor(None, a.stop) == 0
            restarted = ServeProcess(tmp_path, name="a-again", backend="redis", redis_url=fresh_redis.url,
                                     environ=environ, port=a.port)
            await loop.run_in_executor(None, lambda: restarted.start().wait_until_serving())
            stored = await asyncio.wait_for(writing, 30)

            seen, news = [], []
            deadline = loop.time() + 15
            while len(seen) < count:
                event = await asyncio.wait_for(reader.__anext__(), max(0.01, deadline - loop.time()))
                if isinstance(event, Message):
                    seen.append(event.id)
                elif isinstance(event, (Disconnected, Opened)):
                    news.append(event)
            assert seen == [m.id for m in stored]  # every message, once, in order
            assert any(isinstance(e, Disconnected) and e.code == 1001 for e in news), news
            resumed = [e for e in news if isinstance(e, Opened)]
            assert resumed and all(e.resumed and e.recovered for e in resumed), resumed
            with pytest.raises(asyncio.TimeoutError):  # and nothing more
                await next_of(reader, Message, timeout=0.5)
    finally:
        for node in (a, b, restarted):
            if node is not None:
                node.stop()
    for node in (b, restarted):
        assert "Traceback" not in node.stderr, node.stderr_tail


def test_the_readme_example_runs_as_written(nodes):
    """examples/sdk_chat.py, the README's SDK example: logs in, sends, reads until its own echo."""
    group = new_id("g")
    done = subprocess.run([sys.executable, str(EXAMPLES / "sdk_chat.py"), nodes[0].base_url, group, "7"],
                          env=child_environ(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "<7> hello  (seq 1)\n"
