"""The test page's chat view comes back by itself when its node restarts: every message once, in order, no reload.

The page's node is sent SIGTERM and started again on the same port while another user keeps talking
through a second node on the same Redis. The page must reconnect, resume after the last event it saw,
and end with every message exactly once in seq order, the recalls made meanwhile applied; a gap larger
than the node's recover_max must instead replace the view with the newest messages, and say so.
"""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from websockets.sync.client import connect

from tests.e2e.conftest import browser_required

if browser_required():
    from playwright.sync_api import expect  # missing in CI is a failure, not a skip
else:
    expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect

from tests.e2e.person import Person  # noqa: E402 - needs playwright, checked just above

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

# Tokens are checked on sockets (they live in Redis, so they outlive the node), and the opening frame
# holds only 2 messages, so a page that reloaded instead of resuming would visibly lose the older ones.
SETTINGS = {"FASTIM_IM_LOGIN_AUTH": "1", "FASTIM_IM_LIST_NUM": "2"}
# The restarted node starts in ~1 s and the page retries at most 5 s apart: 20 s is room on a loaded CI.
RESUME_TIMEOUT_MS = 20_000
ECHO_TIMEOUT_S = 5.0
# Every text the chat status badge shows, in order, recorded before the page's own scripts run.
WATCH_STATUS = """
window.__statusHistory = [];
document.addEventListener("DOMContentLoaded", () => {
  const badge = document.getElementById("chat-status");
  new MutationObserver(() => window.__statusHistory.push(badge.textContent))
    .observe(badge, { childList: true, characterData: true, subtree: true });
});
"""
SHOWN = "#messages li.message:not(.recalled) .info"


class Talker:
    """Another user on another node, talking through a plain WebSocket client."""

    def __init__(self, node, user_id: str, group_id: str) -> None:
        self.node = node
        self.user_id = user_id
        self.group_id = group_id
        self.token = post(node, "/user/login", {"userId": user_id, "password": "x"})["msg"]

    def say(self, *texts: str) -> list[dict]:
        """Send each text and wait for its echo (the node's word that it was stored); the echoes."""
        url = f"{self.node.ws_url}/group/chat/{self.group_id}/{self.user_id}/{self.token}"
        echoes = []
        with connect(url, open_timeout=ECHO_TIMEOUT_S, close_timeout=1) as socket:
            assert "list" in json.loads(socket.recv(timeout=ECHO_TIMEOUT_S))  # the opening frame
            for text in texts:
                socket.send(text)
                echoes.append(self._echo(socket, text))
        return echoes

    def _echo(self, socket, text: str) -> dict:
        for _ in range(100):  # other users' messages may come first
            frame = json.loads(socket.recv(timeout=ECHO_TIMEOUT_S))
            assert "code" not in frame, f"the node refused {text!r}: {frame}"
            if frame.get("userId") == self.user_id and frame.get("info") == text:
                return frame
        raise AssertionError(f"no echo of {text!r}")

    def recall(self, message: dict) -> None:
        answer = post(self.node, "/group/delMessage", {"groupId": self.group_id, "id": message["id"]},
                      headers={"userId": self.user_id, "token": self.token})
        assert answer["code"] == 200, answer


def post(node, path: str, fields: dict, headers: dict | None = None) -> dict:
    request = urllib.request.Request(node.base_url + path, data=urlencode(fields).encode(), headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


@pytest.fixture
def alice(browser):
    made: list[Person] = []

    def person(node) -> Person:
        someone = Person(browser, node.base_url, "alice")
        someone.page.add_init_script(WATCH_STATUS)
        someone.sockets = []  # the address of every WebSocket the page opened
        someone.page.on("websocket", lambda socket: someone.sockets.append(socket.url))
        made.append(someone)
        return someone

    try:
        yield person
    finally:
        for someone in made:
            someone.close()


def open_chat(person: Person, group_id: str) -> None:
    person.open_page()
    person.page.evaluate("window.__loadedOnce = 'the same page'")  # gone if the page were ever reloaded
    person.log_in()
    person.join(group_id)


def stop(node) -> None:
    """SIGTERM: the node closes its sockets with 1001 and exits."""
    assert node.stop() == 0, node.stderr_tail


def chat_urls(person: Person, group_id: str) -> list[str]:
    return [url for url in person.sockets if f"/group/chat/{group_id}/" in url]


def expect_same_page_that_never_broke(person: Person) -> None:
    assert person.page.evaluate("window.__loadedOnce") == "the same page", "the page was reloaded"
    assert person.dialogs == [] and person.errors == [] and person.csp_violations() == []


def expect_each_once_in_seq_order(person: Person) -> None:
    """Every shown item (recalled ones too) has its own id, and seqs only grow down the list."""
    items = person.page.evaluate(
        "[...document.querySelectorAll('#messages li.message')].map((li) => [li.dataset.id, Number(li.dataset.seq)])"
    )
    ids = [item_id for item_id, _ in items]
    seqs = [seq for _, seq in items]
    assert len(ids) == len(set(ids)), f"a message is shown twice: {ids}"
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"not in seq order: {seqs}"


def test_the_page_resumes_after_its_node_restarts(nodes, alice, fresh_redis, artifacts):
    group = "resume"
    first, second = (nodes(backend="redis", redis_url=fresh_redis.url, environ=SETTINGS) for _ in range(2))
    page, bob = alice(first), Talker(second, "bob", group)
    open_chat(page, group)  # an empty group: its stream has no epoch yet when the page opens it

    before = bob.say("before 1", "before 2", "before 3")
    page.say("alice before")
    expect(page.page.locator(SHOWN)).to_have_text(["before 1", "before 2", "before 3", "alice before"])

    stop(first)
    expect(page.page.locator("#chat-status")).to_have_text("reconnecting…")
    expect(page.page.locator("#message-input")).to_be_disabled()
    # While the page's node is down: more messages, a recall of one the page shows, and of one it never saw.
    during = bob.say("while down 1", "while down 2", "while down 3", "while down 4", "while down 5")
    bob.recall(before[1])
    bob.recall(during[2])
    nodes(backend="redis", redis_url=fresh_redis.url, environ=SETTINGS, port=first.port)  # the same address

    expected = ["before 1", "before 3", "alice before", "while down 1", "while down 2", "while down 4", "while down 5"]
    expect(page.page.locator(SHOWN)).to_have_text(expected, timeout=RESUME_TIMEOUT_MS)
    expect(page.page.locator("#chat-status")).to_have_text("resumed")
    expect(page.page.locator("#messages li.recalled")).to_contain_text(["bob recalled a message"])
    expect(page.page.locator("#messages")).not_to_contain_text("before 2")
    expect(page.page.locator("#messages")).not_to_contain_text("while down 3")
    expect(page.notices()).to_contain_text("Reconnected and resumed")
    history = page.page.evaluate("window.__statusHistory")
    assert history.index("reconnecting…") < history.index("resumed"), history
    # The reconnection asked for what followed the last event the page had seen (alice's own, seq 4).
    resume = parse_qs(urlsplit(chat_urls(page, group)[-1]).query)
    assert resume["since"] == ["4"] and re.fullmatch(r"[A-Za-z0-9_-]+", resume["epoch"][0]), resume

    # Live again, both ways, and nothing repeated.
    bob.say("after 1")
    page.say("alice after")
    expected += ["after 1", "alice after"]
    expect(page.page.locator(SHOWN)).to_have_text(expected)
    expect(page.message("alice after")).to_be_in_viewport()  # the view followed the conversation
    expect_each_once_in_seq_order(page)
    expect_same_page_that_never_broke(page)
    page.screenshot(artifacts / "page-resumed.png")


def test_a_gap_beyond_recover_max_reloads_the_newest_messages(nodes, alice, fresh_redis, artifacts):
    group = "too-far"
    environ = {**SETTINGS, "FASTIM_IM_RECOVER_MAX": "3"}
    first, second = (nodes(backend="redis", redis_url=fresh_redis.url, environ=env) for env in (environ, SETTINGS))
    page, bob = alice(first), Talker(second, "bob", group)
    open_chat(page, group)
    bob.say("old 1", "old 2")
    expect(page.page.locator(SHOWN)).to_have_text(["old 1", "old 2"])

    stop(first)
    expect(page.page.locator("#chat-status")).to_have_text("reconnecting…")
    bob.say(*(f"gap {i}" for i in range(1, 7)))  # 6 events after the page's last: more than recover_max
    nodes(backend="redis", redis_url=fresh_redis.url, environ=environ, port=first.port)

    # The view is replaced by the opening frame's newest list_num (2) messages, not appended to.
    expect(page.page.locator(SHOWN)).to_have_text(["gap 5", "gap 6"], timeout=RESUME_TIMEOUT_MS)
    expect(page.page.locator("#chat-status")).to_have_text("could not recover: reloaded")
    expect(page.notices()).to_contain_text("could not recover what was missed")
    expect(page.notices()).to_contain_text("reloaded the latest messages")
    expect(page.page.locator("#room-total")).to_have_text("8 messages")
    expect(page.page.locator("#load-older")).to_be_visible()  # the rest is a click away
    resume = parse_qs(urlsplit(chat_urls(page, group)[-1]).query)
    assert resume["since"] == ["2"], resume

    # And it goes on from there: live messages follow, once each.
    bob.say("after")
    expect(page.page.locator(SHOWN)).to_have_text(["gap 5", "gap 6", "after"])
    expect_each_once_in_seq_order(page)
    expect_same_page_that_never_broke(page)
    page.screenshot(artifacts / "page-reloaded.png")
