"""A chat socket whose sends go through a publish hook (a fake one in the node's container): the frames a sender gets."""

from __future__ import annotations

import asyncio

import pytest
from dependency_injector import providers

from fastim.app import make_app
from fastim.domain.errors import HookFailed, MessageRejected
from tests.interfaces.ws_client import Client
from tests.unit.test_review import FakeHook


@pytest.fixture
def backend_name():
    return "memory"


@pytest.fixture
def hook():
    return FakeHook()


@pytest.fixture
def app(container, hook):
    container.publish_hook.override(providers.Object(hook))
    return make_app(container)


async def joined(base_url, group, user) -> Client:
    client = await Client.connect(base_url, f"/group/chat/{group}/{user}/any")
    await client.json()
    return client


async def stored(container, group) -> list[str]:
    return [message.info for message in (await container.messages().latest(group)).messages]


def rejected_frames(container, reason) -> float:
    return container.metrics().rejected_frames.labels(reason)._value.get()


@pytest.mark.gen_test
async def test_a_rejected_send_gets_403_with_the_reason_and_is_not_stored(container, hook, http_server, base_url):
    hook.verdict = lambda info: MessageRejected("no links\x00 please") if "http" in info else info
    client = await joined(base_url, "1", "7")
    await client.send("see http://spam")
    assert await client.json() == {"code": 403, "msg": "no links please"}
    await client.send("fine")
    assert (await client.json())["info"] == "fine"  # the socket stays open
    assert await stored(container, "1") == ["fine"]
    assert rejected_frames(container, "rejected") == 1
    assert hook.calls == [("1", "7", "see http://spam"), ("1", "7", "fine")]


@pytest.mark.gen_test
async def test_a_replaced_send_is_stored_and_echoed_with_the_new_text(container, hook, http_server, base_url):
    hook.verdict = lambda info: info.replace("darn", "****")
    client = await joined(base_url, "1", "7")
    other = await joined(base_url, "1", "8")
    await client.send("oh darn")
    assert (await client.json())["info"] == "oh ****"
    assert (await other.json())["info"] == "oh ****"
    assert await stored(container, "1") == ["oh ****"]


@pytest.mark.gen_test
async def test_fail_closed_a_failed_review_gets_503_and_nothing_is_stored(container, hook, http_server, base_url):
    hook.verdict = lambda info: HookFailed("status 500, not 200", cause="status")
    client = await joined(base_url, "1", "7")
    await client.send("hello")
    frame = await client.json()
    assert frame["code"] == 503 and "not sent" in frame["msg"]
    assert "500" not in frame["msg"]  # the application's trouble stays in the node's log
    assert await stored(container, "1") == []
    assert rejected_frames(container, "hook_failed") == 1


class TestFailOpen:
    @pytest.fixture
    def node_settings(self):
        return {"hooks__fail": "open"}

    @pytest.mark.gen_test
    async def test_a_failed_review_stores_the_text_as_sent(self, container, hook, http_server, base_url):
        hook.verdict = lambda info: HookFailed("no answer in time", cause="timeout")
        client = await joined(base_url, "1", "7")
        await client.send("hello")
        assert (await client.json())["info"] == "hello"
        assert await stored(container, "1") == ["hello"]


@pytest.mark.gen_test
async def test_a_socket_s_next_frame_waits_for_the_review_of_the_previous(container, hook, http_server, base_url):
    hook.gate = asyncio.Event()
    client = await joined(base_url, "1", "7")
    for text in ("first", "second", "third"):
        await client.send(text)
    await asyncio.sleep(0.2)
    assert [call[2] for call in hook.calls] == ["first"]  # one review in flight per socket
    hook.gate.set()
    assert [(await client.json())["info"] for _ in range(3)] == ["first", "second", "third"]


@pytest.mark.gen_test
async def test_other_sockets_are_served_while_one_review_hangs(container, hook, http_server, base_url):
    hook.gate = asyncio.Event()
    waiting = await joined(base_url, "1", "7")
    await waiting.send("held")
    await asyncio.sleep(0.05)
    hook.gate = None  # later reviews answer at once
    other = await joined(base_url, "2", "8")
    await other.send("through")
    assert (await other.json())["info"] == "through"
