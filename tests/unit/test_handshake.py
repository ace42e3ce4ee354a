"""What the acceptor's handshake takes as plain (and answers itself), and what it leaves to Tornado (None)."""

from __future__ import annotations

import re

import pytest

from fastim.interfaces.ws.handshake import SocketRoute, accept_value, read_handshake

SEGMENT = r"([^/]+)"
CHAT = SocketRoute(rf"/group/chat/{SEGMENT}/{SEGMENT}/{SEGMENT}", factory=lambda transport: None)
LIST = SocketRoute(rf"/im/group/list/{SEGMENT}/{SEGMENT}", factory=lambda transport: None)
ROUTES = [(re.compile(route.pattern), route) for route in (CHAT, LIST)]

HEAD = (
    "GET /group/chat/g1/u1/t0k?since=5&epoch=e HTTP/1.1\r\n"
    "Host: 127.0.0.1:8080\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "User-Agent: test  client\t"
)


def read(head: str | bytes):
    return read_handshake(head.encode("latin-1") if isinstance(head, str) else head, ROUTES)


def test_a_plain_handshake_is_read_whole():
    handshake = read(HEAD)
    assert handshake.route is CHAT
    assert handshake.path == "/group/chat/g1/u1/t0k"
    assert handshake.path_args == ("g1", "u1", "t0k")
    assert handshake.query == {"since": "5", "epoch": "e"}
    assert handshake.key == "dGhlIHNhbXBsZSBub25jZQ=="
    assert handshake.headers["user-agent"] == "test  client"  # inner spaces kept, the trailing tab not


def test_the_accept_value_is_the_rfcs():
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3


def test_path_arguments_are_percent_decoded_as_tornado_does_and_a_plus_stays():
    handshake = read(HEAD.replace("/g1/u1/t0k", "/g%20%C3%A9/u+1/t"))
    assert handshake.path_args == ("g é", "u+1", "t")


def test_the_last_value_of_a_query_argument_counts_and_one_that_is_not_utf8_is_left_out():
    handshake = read(HEAD.replace("?since=5&epoch=e", "?since=1&since=2&ack=%FF&epoch="))
    assert handshake.query == {"since": "2", "epoch": ""}


def test_a_route_under_a_prefix_is_matched():
    assert read(HEAD.replace("/group/chat/g1/u1/t0k", "/im/group/list/u1/t0k")).route is LIST


@pytest.mark.parametrize("change", [
    ("GET /group", "POST /group"),  # only GET upgrades
    ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost"),
    ("GET /group/chat/g1/u1/t0k", "GET  /group/chat/g1/u1/t0k"),  # a request line of four parts
    ("/group/chat/g1/u1/t0k", "/group/chat/g1/u1"),  # no such socket URL: an HTTP route or a 404
    ("/group/chat/g1/u1/t0k", "/group/chat/g1/u1/t0k/x"),
    ("/group/chat/g1/u1/t0k", "/im/group/chat/g1/u1/t0k"),
    ("/group/chat/g1/u1/t0k", "/group/chat/%FF/u1/t0k"),  # Tornado answers 400: not UTF-8
    ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),  # Tornado answers 426
    ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),  # 400
    ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Key:"),
    ("Upgrade: websocket", "Upgrade: h2c"),  # 400
    ("Connection: keep-alive, Upgrade", "Connection: keep-alive"),  # 400
    ("Host: 127.0.0.1:8080\r\n", ""),  # 400
    ("Host: 127.0.0.1:8080", "Host: a b"),
    ("Host: 127.0.0.1:8080", "Host: user@127.0.0.1"),
    ("Upgrade: websocket", "Upgrade: websocket\r\nUpgrade: websocket"),  # any repeated header
    ("Upgrade: websocket", "Origin: https://a.example\r\norigin: https://b.example"),
    ("Upgrade: websocket", "Content-Length: 5"),  # a body to read first
    ("Upgrade: websocket", "Transfer-Encoding: chunked"),
    ("Upgrade: websocket", "Sec-WebSocket-Origin: https://a.example"),  # the old origin header
    ("Upgrade: websocket", "Upgrade: websocket\r\n folded"),  # line folding: Tornado refuses it
    ("Upgrade: websocket", "Upgrade : websocket"),  # space before the colon
    ("Upgrade: websocket", "Upgrade: websocket\r\nno colon"),
    ("Upgrade: websocket", "Upgrade: websocket\nX-Bare: lf"),  # a bare LF
    ("Upgrade: websocket", "Upgrade: websocket\rX-Bare: cr"),
    ("Upgrade: websocket", "Upgrade: web\x00socket"),  # a control character
    ("Upgrade: websocket", "X-Name: caf\xe9\r\nUpgrade: websocket"),  # not ASCII
    ("Upgrade: websocket", "X(y): z\r\nUpgrade: websocket"),  # a name that is not a token
])
def test_anything_but_a_plain_handshake_is_left_to_tornado(change):
    old, new = change
    assert old in HEAD
    assert read(HEAD.replace(old, new, 1)) is None


def test_an_empty_or_garbage_head_is_left_to_tornado():
    for head in (b"", b"\r\n", b"GET", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET / HTTP/1.1"):
        assert read(head) is None
