"""Ten messages of one millisecond keep ten ids: the page shows ten, and recalls the one named."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests import raw_ws
from tests.e2e.conftest import browser_required
from tests.raw_ws import Peer

if browser_required():
    from playwright.sync_api import expect  # missing in CI is a failure, not a skip
else:
    expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect

from tests.e2e.person import Person  # noqa: E402 - needs playwright, checked just above

pytestmark = pytest.mark.e2e

FROZEN_CLOCK_NODE = Path(__file__).with_name("frozen_clock_node.py")
GROUP = "same-ms"


async def ten_at_once(port: int) -> list[dict]:
    """bob sends ten frames in one write and reads back his ten echoes."""
    peer = await Peer.connect(port, raw_ws.handshake(f"/group/chat/{GROUP}/bob/any"))
    try:
        await peer.text()  # the opening frame
        await peer.send(b"".join(raw_ws.text(f"burst {i}") for i in range(10)))
        return [json.loads(await peer.text()) for _ in range(10)]
    finally:
        peer.close()


def recall_as_bob(node, message_id: str) -> dict:
    login = urllib.request.urlopen(
        urllib.request.Request(node.base_url + "/user/login", data=urlencode({"userId": "bob", "password": "x"}).encode()),
        timeout=5,
    )
    token = json.loads(login.read())["msg"]
    request = urllib.request.Request(
        node.base_url + "/group/delMessage", data=urlencode({"groupId": GROUP, "id": message_id}).encode(),
        headers={"userId": "bob", "token": token},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


def test_ten_messages_of_one_millisecond_are_ten_on_the_page(nodes, browser, artifacts):
    node = nodes(backend="memory", script=FROZEN_CLOCK_NODE)
    alice = Person(browser, node.base_url, "alice")
    try:
        alice.open_page()
        alice.log_in()
        alice.join(GROUP)
        with ThreadPoolExecutor(1) as thread:  # Playwright's own loop runs in this one
            echoes = thread.submit(asyncio.run, ten_at_once(node.port)).result(timeout=30)
        assert len({echo["ts"] for echo in echoes}) == 1  # one millisecond
        assert len({echo["id"] for echo in echoes}) == 10 and [e["seq"] for e in echoes] == list(range(1, 11))
        expect(alice.messages()).to_have_count(10)
        for i in range(10):
            alice.expect_message(f"burst {i}", "bob")
        assert recall_as_bob(node, echoes[3]["id"])["code"] == 200
        expect(alice.page.locator("#messages li.recalled")).to_have_count(1)
        expect(alice.messages()).to_have_count(9)
        expect(alice.message("burst 3")).to_have_count(0)
        alice.screenshot(artifacts / "same-millisecond.png")
    finally:
        alice.close()
