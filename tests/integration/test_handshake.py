"""Issue 18: the acceptor answers plain WebSocket handshakes itself; everything else keeps Tornado's answer.

Played against a real node with raw sockets: the 101 and what follows it, a
head in pieces, refusals, a silent or vanishing client, an upgrade after a
kept-alive HTTP request, and a node that stops while a head is half sent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from fastim.interfaces.ws.handshake import accept_value
from tests.integration.test_hostile_connections import answer, connect
from tests.raw_ws import Peer, text

pytestmark = pytest.mark.redis

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def head(path: str = "/group/chat/1/u1/t", *, version: str = "13", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


async def status_of(port: int, request: bytes) -> bytes:
    """The status line the node answers ``request`` with, on a connection of its own."""
    sock = await connect(port)
    try:
        await asyncio.get_running_loop().sock_sendall(sock, request)
        peer = Peer(sock)
        return (await peer.read_until(b"\r\n\r\n")).partition(b"\r\n")[0]
    finally:
        sock.close()


async def closed_by_node(sock: socket.socket, timeout: float) -> bool:
    """Whether the node closes ``sock`` (EOF or reset) within ``timeout`` seconds."""
    try:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), timeout)
    except asyncio.TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return data == b""


@pytest.mark.gen_test(timeout=60)
async def test_a_plain_handshake_is_answered_101_and_a_frame_in_the_same_packet_is_taken(node_factory):
    node = node_factory(FASTIM_SERVER_LOG_LEVEL="info")
    sock = await connect(node.port)
    await asyncio.get_running_loop().sock_sendall(
        sock, head("/group/chat/1/u1/t?ack=1") + text("with the handshake"),
    )
    peer = Peer(sock)
    answer_head = await peer.read_until(b"\r\n\r\n")
    assert answer_head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: " + accept_value(KEY) + b"\r\n" in answer_head
    assert b"\r\nUpgrade: websocket\r\n" in answer_head and b"\r\nConnection: Upgrade\r\n" in answer_head
    assert b"TornadoServer" not in answer_head  # answered by the acceptor, not by Tornado's handler
    assert json.loads(await peer.text())["list"] == []  # the snapshot first
    frames = [json.loads(await peer.text()) for _ in range(2)]
    assert {frame.get("event") for frame in frames} >= {"ack"}
    assert any("with the handshake" in json.dumps(frame) for frame in frames)
    sock.close()
    node.wait_for_log("101 GET /group/chat/1/u1/*** (127.0.0.1)")
    assert "/u1/t?" not in node.stderr and "/u1/t " not in node.stderr  # the token stays out of the log


@pytest.mark.gen_test(timeout=60)
async def test_handshakes_tornado_refuses_keep_tornados_answers(node_factory):
    node = node_factory(FASTIM_SERVER_ALLOWED_ORIGINS="https://app.example")
    assert await status_of(node.port, head(version="8")) == b"HTTP/1.1 426 Upgrade Required"
    assert await status_of(node.port, head(extra="Origin: https://evil.example\r\n")) == b"HTTP/1.1 403 Forbidden"
    assert await status_of(node.port, head(extra="Origin: https://app.example\r\n")) == (
        b"HTTP/1.1 101 Switching Protocols"
    )
    assert await status_of(node.port, head("/group/chat/%FF/u1/t")) == b"HTTP/1.1 400 Bad Request"
    assert await status_of(node.port, head().replace(f"Sec-WebSocket-Key: {KEY}\r\n".encode(), b"")) == (
        b"HTTP/1.1 400 Bad Request"
    )
    assert (await status_of(node.port, head("/group/chat/1/u1"))).startswith(b"HTTP/1.1 404 ")
    assert "Traceback" not in node.stderr


@pytest.mark.gen_test(timeout=60)
async def test_a_head_in_pieces_or_byte_by_byte_opens_and_one_over_16_kib_opens_through_tornado(node_factory):
    node = node_factory()
    loop = asyncio.get_running_loop()
    request = head()
    cookie = head(extra=f"Cookie: session={'c' * 20_000}\r\n")
    for pieces, by_tornado in (
        ([request[:20], request[20:]], False),
        ([request[i:i + 1] for i in range(len(request))], False),  # a packet a byte: each byte scanned once
        ([cookie], True),  # longer than the acceptor reads: Tornado takes it with what was read
    ):
        sock = await connect(node.port)
        for piece in pieces:
            await loop.sock_sendall(sock, piece)
            if len(pieces) > 1:
                await asyncio.sleep(0.002)
        peer = Peer(sock)
        answered = await peer.read_until(b"\r\n\r\n")
        assert answered.startswith(b"HTTP/1.1 101") and (b"TornadoServer" in answered) == by_tornado
        assert json.loads(await peer.text())["list"] == []
        sock.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_silent_client_is_cut_after_the_header_timeout_and_a_vanishing_one_frees_its_slot(node_factory):
    node = node_factory(FASTIM_SERVER_HEADER_TIMEOUT="1", FASTIM_SERVER_MAX_CONNECTIONS_PER_IP="2")
    for _ in range(20):  # connect and leave at once, or half way through a head
        sock = await connect(node.port)
        sock.close()
        sock = await connect(node.port)
        await asyncio.get_running_loop().sock_sendall(sock, head()[:30])
        sock.close()
    await asyncio.sleep(0.2)
    silent = [await connect(node.port) for _ in range(2)]
    started = time.monotonic()
    third = await answer(await connect(node.port), b"", timeout=0.5)
    assert third.startswith(b"HTTP/1.1 503"), "two silent connections hold the address's two slots"
    assert all([await closed_by_node(sock, timeout=4) for sock in silent])
    assert time.monotonic() - started < 4
    for sock in silent:
        sock.close()
    await asyncio.sleep(0.1)
    assert await status_of(node.port, head()) == b"HTTP/1.1 101 Switching Protocols"  # the slots came back


@pytest.mark.gen_test(timeout=60)
async def test_an_upgrade_after_a_kept_alive_http_request_on_the_same_connection_opens(node_factory):
    node = node_factory()
    sock = await connect(node.port)
    peer = Peer(sock)
    await peer.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await peer.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    await peer.read_until(b"}")  # the body
    await peer.send(head())
    assert (await peer.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    assert json.loads(await peer.text())["list"] == []
    sock.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_node_that_stops_closes_the_connections_still_sending_a_head(node_factory):
    node = node_factory()
    sock = await connect(node.port)
    await asyncio.get_running_loop().sock_sendall(sock, head()[:40])
    await asyncio.sleep(0.2)
    assert node.stop() == 0
    assert await closed_by_node(sock, timeout=2)
    sock.close()
    assert "Traceback" not in node.stderr
