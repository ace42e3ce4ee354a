"""The handshake stays Tornado's and the socket moves to the transport without losing a byte."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import tornado.iostream
import tornado.websocket
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from fastim.interfaces.ws.upgrade import HandoverProtocol
from tests import raw_ws
from tests.contract.conftest import wait_for
from tests.raw_ws import Peer
from tests.interfaces.ws_client import Client


@pytest.fixture
def port(container, http_server, http_port):
    return http_port


@pytest.mark.gen_test
async def test_a_frame_sent_in_the_same_packet_as_the_handshake_is_posted_after_the_snapshot(port, container):
    peer = await Peer.connect(port, raw_ws.handshake("/group/chat/1/u7/any", extra=raw_ws.text("hello early")))
    try:
        assert json.loads(await peer.text()) == {"list": [], "total": 0, "seq": 0, "epoch": ""}
        echo = json.loads(await peer.text())
        assert (echo["info"], echo["userId"], echo["groupId"]) == ("hello early", "u7", "1")
        assert [m.info for m in (await container.messages().latest("1")).messages] == ["hello early"]
    finally:
        peer.close()


@pytest.mark.gen_test
async def test_a_ping_is_answered_and_a_clean_close_is_echoed(port, container):
    peer = await Peer.connect(port, raw_ws.handshake("/group/chat/1/u7/any"))
    try:
        await peer.text()  # the snapshot
        await peer.send(raw_ws.client_frame(raw_ws.PING, b"hb"))
        assert await peer.frame() == (raw_ws.PONG, b"hb")
        await peer.send(raw_ws.close(1000, "done"))
        assert await peer.frame() == (raw_ws.CLOSE, b"\x03\xe8")
        assert await peer.frame() is None
    finally:
        peer.close()
    await wait_for(lambda: container.connections().count() == 0)
    await wait_for(lambda: not container.hub().members("1"))


@pytest.mark.gen_test
async def test_a_protocol_violation_closes_with_1002_and_the_node_forgets_the_socket(port, container):
    peer = await Peer.connect(port, raw_ws.handshake("/group/chat/1/u7/any"))
    await peer.text()
    await peer.send(raw_ws.text("unmasked", masked=False))
    assert (await peer.closed())[0] == 1002
    peer.close()
    await wait_for(lambda: container.connections().count() == 0)


@pytest.mark.gen_test
async def test_a_frame_on_the_group_list_socket_gets_an_error_frame_and_the_socket_stays(base_url, container, http_server):
    client = await Client.connect(base_url, "/group/list/u1/any")
    assert await client.json() == []
    await client.send("hello?")
    assert (await client.json())["code"] == 405
    await client.send(b"\x00")
    assert (await client.json())["code"] == 405
    assert client.close_code is None
    client.close()


@pytest.mark.gen_test
async def test_a_websocket_version_other_than_13_is_answered_426(port):
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, raw_ws.handshake("/group/chat/1/u/any").replace(b"Version: 13", b"Version: 8"))
        answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
    assert answer.startswith(b"HTTP/1.1 426")
    assert b"sec-websocket-version: 13" in answer.lower()


class TestAllowedOrigins:
    @pytest.fixture
    def node_settings(self):
        return {"server__allowed_origins": "https://app.example"}

    @pytest.mark.gen_test
    async def test_a_page_from_another_origin_is_refused_and_an_allowed_one_admitted(self, container, base_url,
                                                                                     http_server):
        url = base_url.replace("http://", "ws://") + "/group/chat/1/u/any"
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://evil.example"}))
        assert refused.value.code == 403
        connection = await websocket_connect(tornado.httpclient.HTTPRequest(url, headers={"Origin": "https://app.example"}))
        assert json.loads(await connection.read_message())["list"] == []
        connection.close()


def test_the_tornado_internals_the_handover_relies_on_exist():
    """take_over and HandoverProtocol use private Tornado names; an upgrade that renames one fails here."""
    left, right = socket.socketpair()
    try:
        stream = tornado.iostream.IOStream(left)
        assert isinstance(stream._read_buffer, bytearray) and stream._read_buffer_size == 0
        assert stream._state is None and stream._closed is False
        stream._closed = True
        assert stream.closed()
    finally:
        right.close()
        left.close()
    assert hasattr(tornado.websocket, "_WebSocketParams")
    assert "_receive_frame_loop" in vars(tornado.websocket.WebSocketProtocol13)
    assert "_receive_frame_loop" in vars(HandoverProtocol)
