"""Two people chat through the test page in real headless Chromium: one node, then two nodes on Redis."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import browser_required

if browser_required():
    from playwright.sync_api import expect  # missing in CI is a failure, not a skip
else:
    expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect

from tests.e2e.person import Person  # noqa: E402 - needs playwright, checked just above

pytestmark = pytest.mark.e2e

GROUP = "e2e"
HOSTILE = "<img src=x onerror=alert(1)>"
# Tokens are checked on sockets too, and the limits are small so that the
# scenario shows a 413 answer and needs "Load older" within a few messages.
SETTINGS = {
    "FASTIM_IM_LOGIN_AUTH": "1",
    "FASTIM_IM_MAX_MESSAGE_BYTES": "64",
    "FASTIM_IM_LIST_NUM": "1",
}


@pytest.fixture
def people(browser):
    made: list[Person] = []

    def person(node_url: str, user_id: str) -> Person:
        made.append(Person(browser, node_url, user_id))
        return made[-1]

    try:
        yield person
    finally:
        for someone in made:
            someone.close()


def test_two_people_chat_on_one_memory_node(nodes, people, artifacts):
    node = nodes(backend="memory", environ=SETTINGS)
    alice, bob = people(node.base_url, "alice"), people(node.base_url, "bob")
    chat(alice, bob, artifacts, "e2e-memory")


@pytest.mark.redis
def test_two_people_chat_across_two_redis_nodes(nodes, people, artifacts, fresh_redis):
    first, second = (nodes(backend="redis", redis_url=fresh_redis.url, environ=SETTINGS) for _ in range(2))
    alice, bob = people(first.base_url, "alice"), people(second.base_url, "bob")
    chat(alice, bob, artifacts, "e2e-redis")


def chat(alice: Person, bob: Person, artifacts, name: str) -> None:
    for person in (alice, bob):
        response = person.open_page()
        assert "script-src 'self'" in response.headers["content-security-policy"]
        person.log_in()
        person.join(GROUP)

    # Both ways, each with sender and time.
    alice.say("hello from alice")
    bob.say("hi alice, from bob")
    for person in (alice, bob):
        person.expect_message("hello from alice", "alice")
        person.expect_message("hi alice, from bob", "bob")

    # Hostile text is shown literally and runs nothing.
    bob.say(HOSTILE)
    for person in (alice, bob):
        person.expect_message(HOSTILE, "bob")
        assert person.element_count("#messages img") == 0
        assert person.element_count("img, script:not([src])") == 0

    # Refused frames are explained in plain words.
    alice.say("x" * 100)
    expect(alice.notices()).to_contain_text("Message too long")
    expect(alice.notices()).to_contain_text("413")

    # A recall disappears from every screen.
    alice.recall("hello from alice")
    for person in (alice, bob):
        expect(person.message("hello from alice")).to_have_count(0)
        expect(person.page.locator("#messages li.recalled")).to_contain_text("recalled a message")
    expect(bob.page.locator("#messages li.recalled")).to_contain_text("alice recalled a message")
    expect(bob.page.locator("#messages")).not_to_contain_text("hello from alice")

    # The group list shows the newest message and the total.
    for person in (alice, bob):
        entry = person.group_entry(GROUP)
        expect(entry.locator(".group-total")).to_have_text("2 messages")
        expect(entry.locator(".newest-info")).to_have_text(HOSTILE)
        expect(entry.locator(".group-newest .sender")).to_have_text("bob")

    # Reopened, the room shows list_num = 1 message; "Load older" brings the rest.
    bob.open_group_from_list(GROUP)
    expect(bob.messages()).to_have_count(1)
    expect(bob.page.locator("#room-total")).to_have_text("2 messages")
    bob.load_older()
    expect(bob.messages()).to_have_count(2)
    bob.expect_message("hi alice, from bob", "bob")
    expect(bob.page.locator("#load-older")).to_be_hidden()

    # The raw console: a refused token is answered 440, shown raw and in plain words.
    bob.console_connect(f"{bob.node_url.replace('http', 'ws', 1)}/group/chat/{GROUP}/bob/not-my-token")
    expect(bob.console_log()).to_contain_text("440")
    expect(bob.console_log()).to_contain_text("login required")
    # ...and with the page's own address (the logged-in user's), frames go both ways.
    bob.page.click("#console-use-chat")
    bob.page.click("#console-connect")
    expect(bob.page.locator("#console-status")).to_have_text("open")
    bob.page.fill("#console-text", "typed in the console")
    bob.page.click("#console-send")
    expect(bob.console_log()).to_contain_text('"info":"typed in the console"')
    alice.expect_message("typed in the console", "bob")
    for person in (alice, bob):
        expect(person.group_entry(GROUP).locator(".group-total")).to_have_text("3 messages")
        expect(person.group_entry(GROUP).locator(".newest-info")).to_have_text("typed in the console")

    alice.screenshot(artifacts / f"{name}.png")
    bob.screenshot(artifacts / f"{name}-bob.png")
    for person in (alice, bob):
        assert person.dialogs == [], f"{person.user_id} saw a dialog"
        assert person.csp_violations() == [], f"{person.user_id}'s page broke its own CSP"
        assert person.errors == [], f"{person.user_id}'s page raised"
