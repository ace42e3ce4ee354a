"""``?ack=1`` on a chat socket: every text frame is answered, in the order sent (what the SDK's send() waits for)."""

from __future__ import annotations

import pytest

from tests.interfaces.ws_client import Client


@pytest.fixture
def node_settings():
    return {"im__rate_limit": 1, "im__rate_burst": 2, "im__max_message_bytes": 10}


@pytest.mark.gen_test
async def test_each_frame_gets_an_ack_or_an_error_in_order(container, http_server, base_url):
    chat = await Client.connect(base_url, "/group/chat/g1/u1/any?ack=1")
    await chat.json()
    for text in ("first", "x" * 11, "second", "third"):  # too large; then the bucket of 2 runs dry
        await chat.send(text)
    answers = [await chat.json() for _ in range(6)]
    acks = [a for a in answers if a.get("event") == "ack"]
    echoes = [a for a in answers if "info" in a]
    errors = [a for a in answers if "code" in a]
    assert [e["info"] for e in echoes] == ["first", "second"]
    assert [a["id"] for a in acks] == [e["id"] for e in echoes] and [a["seq"] for a in acks] == [1, 2]
    assert [e["code"] for e in errors] == [413, 429]
    in_order = [a for a in answers if "info" not in a]  # the answers alone, without the echoes
    assert [a.get("event") or a["code"] for a in in_order] == ["ack", 413, "ack", 429]


@pytest.mark.gen_test
async def test_without_ack_only_the_echo_answers(container, http_server, base_url):
    chat = await Client.connect(base_url, "/group/chat/g1/u1/any")
    await chat.json()
    await chat.send("first")
    assert (await chat.json())["info"] == "first"
    assert await chat.silent_for(0.3)
