"""What the node checks and hides: protected mode, open logins, token-free log lines, rationed client-driven lines."""

from __future__ import annotations

import io
import logging

import pytest
from dependency_injector import providers

from fastim.container import build_container, open_logins
from fastim.interfaces.http.access_log import redact_path
from fastim.logs import ClientDrivenLines
from fastim.server import Node, StartupError, is_loopback
from tests.settings_factory import make_settings


class RealAuthenticator:
    async def authenticate(self, user_id, password):
        return password == "right"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "2001:db8::1", "no-such-host.invalid"])
def test_other_hosts(host):
    assert not is_loopback(host)


def test_open_logins_name_each_reason():
    container = build_container(make_settings())
    assert open_logins(container) == [
        "the default authenticator accepts any password",
        "[im] login_auth = 0 lets WebSockets in without a token",
    ]
    container = build_container(make_settings(im__login_auth=1))
    container.authenticator.override(providers.Object(RealAuthenticator()))
    assert open_logins(container) == []


def test_protected_mode_refuses_open_logins_beyond_loopback_only():
    Node(make_settings(server__host="127.0.0.1")).check_protected_mode()
    with pytest.raises(StartupError, match=r"^refusing to listen on 0\.0\.0\.0: logins are open"):
        Node(make_settings(server__host="0.0.0.0")).check_protected_mode()
    Node(make_settings(server__host="0.0.0.0", server__protected_mode=0)).check_protected_mode()
    settings = make_settings(server__host="0.0.0.0", im__login_auth=1)
    container = build_container(settings)
    container.authenticator.override(providers.Object(RealAuthenticator()))
    Node(settings, container).check_protected_mode()


@pytest.mark.parametrize(
    "path,shown",
    [
        ("/group/chat/1/u1/8f2c1eb2099049eab5cad6a78a1f8285", "/group/chat/1/u1/***"),
        ("/group/list/u1/8f2c1eb2099049eab5cad6a78a1f8285", "/group/list/u1/***"),
        ("/group/chat/1/u1/tok/extra", "/group/chat/1/u1/***/extra"),
        ("/group/listMessage", "/group/listMessage"),
        ("/user/login", "/user/login"),
    ],
)
def test_the_token_segment_of_socket_paths_is_redacted(path, shown):
    assert redact_path(path) == shown


def test_client_driven_lines_are_rationed_and_cut_short_and_errors_always_pass():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ClientDrivenLines(per_interval=3, interval_s=60, max_chars=20))
    lines_of = {name: logging.getLogger(name) for name in ("tornado.general", "fastim.server")}
    for logger in lines_of.values():
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        for i in range(10):
            lines_of["tornado.general"].info("Malformed HTTP message %d %s", i, "x" * 100)
        lines_of["tornado.general"].error("a real problem")
        lines_of["fastim.server"].info("not client driven %s", "y" * 100)
    finally:
        for logger in lines_of.values():
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[0] == "Malformed HTTP messa..."
    assert lines[3] == "a real problem" and "y" * 100 in lines[4]
