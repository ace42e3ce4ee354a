"""One user at the test page in their own browser context: what a person does and sees."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Browser, Locator, expect

# Installed before any page script runs: records what the page's CSP had to block.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""
CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")
VIEWPORT = {"width": 1400, "height": 860}


class Person:
    def __init__(self, browser: Browser, node_url: str, user_id: str) -> None:
        self.user_id = user_id
        self.node_url = node_url
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.add_init_script(WATCH_CSP)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def close(self) -> None:
        self.context.close()

    # --- doing ---------------------------------------------------------------------------

    def open_page(self):
        response = self.page.goto(f"{self.node_url}/test/websocket")
        expect(self.page.locator("html")).to_have_attribute("data-ready", "1")  # the scripts ran
        return response

    def log_in(self, password: str = "secret") -> None:
        self.page.fill("#login-user", self.user_id)
        self.page.fill("#login-password", password)
        self.page.click("#login-button")
        expect(self.page.locator("#session")).to_have_text(f"Logged in as {self.user_id}.")

    def join(self, group_id: str) -> None:
        self.page.fill("#group-id", group_id)
        self.page.click("#join-button")
        expect(self.page.locator("#room-title")).to_have_text(f"Group {group_id}")
        expect(self.page.locator("#chat-status")).to_have_text("connected")

    def say(self, text: str) -> None:
        self.page.fill("#message-input", text)
        self.page.press("#message-input", "Enter")

    def recall(self, text: str) -> None:
        self.own_message(text).locator("button.recall").click()

    def open_group_from_list(self, group_id: str) -> None:
        self.group_entry(group_id).locator("button").click()
        expect(self.page.locator("#chat-status")).to_have_text("connected")

    def load_older(self) -> None:
        self.page.click("#load-older")

    def console_connect(self, url: str) -> None:
        self.page.fill("#console-url", url)
        self.page.click("#console-connect")

    def screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path))

    # --- seeing --------------------------------------------------------------------------

    def messages(self) -> Locator:
        return self.page.locator("#messages li.message:not(.recalled)")

    def message(self, text: str, selector: str = "li.message") -> Locator:
        """The shown message whose text is exactly ``text``."""
        return self.page.locator(f"#messages {selector}").filter(
            has=self.page.locator(".info", has_text=re.compile(f"^{re.escape(text)}$"))
        )

    def own_message(self, text: str) -> Locator:
        return self.message(text, "li.message.mine")

    def expect_message(self, text: str, sender: str) -> None:
        item = self.message(text)
        expect(item).to_have_count(1)
        expect(item.locator(".info")).to_have_text(text)  # literally, as text
        expect(item.locator(".sender")).to_contain_text(sender)
        expect(item.locator("time")).to_have_text(CLOCK)

    def group_entry(self, group_id: str) -> Locator:
        return self.page.locator(f'#groups li[data-group="{group_id}"]')

    def notices(self) -> Locator:
        return self.page.locator("#notices")

    def console_log(self) -> Locator:
        return self.page.locator("#console-log")

    def csp_violations(self) -> list[str]:
        return self.page.evaluate("window.__cspViolations")

    def element_count(self, selector: str) -> int:
        return self.page.evaluate("(s) => document.querySelectorAll(s).length", selector)
