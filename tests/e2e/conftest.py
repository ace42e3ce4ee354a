"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, and fastim nodes to point it at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.processes import REPO_ROOT, ServeProcess

ARTIFACTS = REPO_ROOT / "test-artifacts"
# Playwright's own browser download cannot work offline: use the system's Chromium, quiet and sandbox-free
# (the sandbox needs user namespaces that containers and root sessions often lack).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000
EXPECT_TIMEOUT_MS = 10_000  # a group-list push may wait out group_list_update_rate (1 s) plus a refresh (2 s)


def browser_required() -> bool:
    return os.environ.get("FASTIM_REQUIRE_BROWSER", "") not in ("", "0")


def _unavailable(reason: str) -> None:
    if browser_required():
        pytest.fail(f"{reason} and FASTIM_REQUIRE_BROWSER is set")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """One Chromium per test module, closed at its end (so no Playwright loop outlives the module).

    Skips when Chromium or Playwright is missing, unless FASTIM_REQUIRE_BROWSER is
    set: then it fails, so CI can never go green without the browser tests.
    """
    executable = shutil.which("chromium")
    if executable is None:
        _unavailable("no chromium binary on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def nodes(tmp_path):
    """``nodes(backend="redis", redis_url=..., environ={...})``: a serving node, stopped by PID at the end."""
    started: list[ServeProcess] = []

    def start(**options) -> ServeProcess:
        node = ServeProcess(tmp_path, name=f"node{len(started)}", **options)
        started.append(node)
        return node.start().wait_until_serving()

    try:
        yield start
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
