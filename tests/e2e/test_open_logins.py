"""The test page warns while logins are open, and its Log out ends the session on the server."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.conftest import browser_required
from tests.processes import REPO_ROOT

if browser_required():
    from playwright.sync_api import expect  # missing in CI is a failure, not a skip
else:
    expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect

from tests.e2e.person import Person  # noqa: E402 - needs playwright, checked just above

pytestmark = pytest.mark.e2e

USER_STORE = REPO_ROOT / "examples" / "user_store_auth.py"


def test_a_node_with_open_logins_shows_the_warning(nodes, browser, artifacts):
    node = nodes(backend="memory")
    person = Person(browser, node.base_url, "1")
    try:
        person.open_page()
        banner = person.page.locator("#open-logins-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("anyone can act as any user")
        person.page.screenshot(path=str(artifacts / "open-logins-banner.png"))
    finally:
        person.close()


def test_a_node_that_checks_logins_shows_none_and_log_out_ends_the_session(nodes, browser):
    node = nodes(backend="memory", script=USER_STORE, environ={"FASTIM_IM_LOGIN_AUTH": "1"})
    person = Person(browser, node.base_url, "1")
    try:
        person.open_page()
        expect(person.page.locator("#open-logins-banner")).to_be_hidden()
        person.log_in(password="123456")
        token = person.page.evaluate("window.fastim.api.session.token")
        assert call(node, "/user/listGroup", token)["code"] == 200
        person.page.click("#logout-button")
        expect(person.page.locator("#session")).to_have_text("Not logged in.")
        assert call(node, "/user/listGroup", token)["code"] == 440  # ended on the server, not only in the page
    finally:
        person.close()


def call(node, path: str, token: str) -> dict:
    request = urllib.request.Request(node.base_url + path, data=b"", headers={"userId": "1", "token": token})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())
