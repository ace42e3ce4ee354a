"""[server] trusted_proxies against real nodes: forged headers, the login throttle and the per-address sockets.

A node believes X-Forwarded-For / X-Real-IP only from a peer in
``trusted_proxies``. Directly, from 127.0.0.1, the tests forge them and see
them counted when 127.0.0.1 is trusted and ignored when it is not. Through the
real nginx of ``deploy/nginx.conf``, clients from 127.0.0.1 (itself a trusted
hop) are told apart by the X-Forwarded-For they send, while a client from
127.0.0.2 (not trusted) is its own address whatever it writes there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.integration.conftest import EXAMPLES, metric_value, until
from tests.nginx import NginxProcess, nginx_binary
from tests.processes import free_port

pytestmark = pytest.mark.redis

USER_STORE = EXAMPLES / "user_store_auth.py"  # refuses wrong passwords, so failures can be counted
FAILURES_PER_IP = 3
SOCKETS_PER_IP = 2
STEP_S = 5.0
ADDRESS_FULL = {"code": 503, "msg": "too many connections from your address; close some first", "data": None}


async def login(base_url: str, user: str, headers: dict | None = None, source: str = "127.0.0.1") -> int:
    """A failed login (wrong password) from ``source``: fast-im's code of the answer (100 refused, 429 throttled)."""
    request = HTTPRequest(
        base_url + "/user/login", method="POST", body=urlencode({"userId": user, "password": "wrong"}),
        headers=headers or {}, network_interface=source, request_timeout=STEP_S,
    )
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return json.loads(response.body)["code"]


class Handshake:
    """A WebSocket handshake on a connection of its own, kept open while the test holds it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, body: bytes,
                 head: bytes) -> None:
        self.reader, self.writer, self.status, self.body, self.head = reader, writer, status, body, head

    def close(self) -> None:
        self.writer.close()


async def handshake(port: int, headers: dict | None = None, *, source: str = "127.0.0.1", key: bool = True,
                    version: int = 13, path: str = "/group/chat/g1/u1/-") -> Handshake:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Version: {version}"]
    if key:
        lines.append(f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_S)
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await asyncio.wait_for(reader.readexactly(int(length.group(1))), STEP_S) if length else b""
    return Handshake(reader, writer, status, body, head)


def refused_for_address(node) -> float:
    return metric_value(node, 'fastim_refused_connections_total{limit="address"}')


# -- directly against a node: forged headers from 127.0.0.1 --------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_forged_headers_name_the_client_only_when_the_peer_is_a_trusted_proxy(node_factory):
    common = {"script": USER_STORE, "FASTIM_AUTH_LOGIN_FAILURES_PER_IP": str(FAILURES_PER_IP)}
    trusting = node_factory(FASTIM_SERVER_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8", **common)
    distrusting = node_factory(FASTIM_SERVER_TRUSTED_PROXIES="10.0.0.0/8, ::1", **common)

    # Not trusted: a new forged address every time, and still one client, 127.0.0.1.
    codes = [await login(distrusting.base_url, f"u{i}", {"X-Forwarded-For": f"203.0.113.{i}",
                                                         "X-Real-IP": f"198.51.100.{i}"}) for i in range(4)]
    assert codes == [100, 100, 100, 429]

    # Trusted: each forwarded client has its own count.
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.3"}  # right to left, past a trusted hop
    codes = [await login(trusting.base_url, f"u{i}", forwarded) for i in range(4)]
    assert codes == [100, 100, 100, 429]
    assert await login(trusting.base_url, "u9", {"X-Forwarded-For": "203.0.113.8"}) == 100
    assert await login(trusting.base_url, "u9", {"X-Real-IP": "203.0.113.9"}) == 100
    # a malformed header names nobody: the request is the proxy's own
    assert await login(trusting.base_url, "u9", {"X-Forwarded-For": "x" * 4000 + ",," + "1.2.3.4:80"}) == 100

    # The access log names the client.
    trusting.wait_for_log("POST /user/login (203.0.113.7)")
    trusting.wait_for_log("POST /user/login (203.0.113.9)")
    assert "(6.6.6.6)" not in trusting.stderr and "(10.0.0.3)" not in trusting.stderr
    assert "203.0.113" not in distrusting.stderr and "POST /user/login (127.0.0.1)" in distrusting.stderr
    for node in (trusting, distrusting):
        assert "Traceback" not in node.stderr, node.stderr_tail


@pytest.mark.gen_test(timeout=60)
async def test_a_trusted_proxys_sockets_count_against_each_forwarded_client(node_factory):
    node = node_factory(FASTIM_SERVER_TRUSTED_PROXIES="127.0.0.1",
                        FASTIM_SERVER_MAX_CONNECTIONS_PER_IP=str(SOCKETS_PER_IP))
    loop = asyncio.get_running_loop()
    held = []
    try:
        for _ in range(SOCKETS_PER_IP):
            held.append(await handshake(node.port, {"X-Forwarded-For": "203.0.113.20"}))
        assert [h.status for h in held] == [101] * SOCKETS_PER_IP
        over = await handshake(node.port, {"X-Forwarded-For": "203.0.113.20"})
        assert over.status == 503 and json.loads(over.body) == ADDRESS_FULL and b"\r\nRetry-After: 5" in over.head
        over.close()
        # another client behind the same proxy has its own share; the proxy's address is never charged
        other = await handshake(node.port, {"X-Real-IP": "203.0.113.21"})
        assert other.status == 101
        held.append(other)
        # handshakes that fail after being counted give their share back, though their connections stay open
        for broken in (await handshake(node.port, {"X-Real-IP": "203.0.113.21"}, key=False),
                       await handshake(node.port, {"X-Real-IP": "203.0.113.21"}, version=8)):
            assert broken.status in (400, 426) and b"Connection: close" not in broken.head
            held.append(broken)
        second = await handshake(node.port, {"X-Real-IP": "203.0.113.21"})
        assert second.status == 101
        held.append(second)
        assert (await handshake(node.port, {"X-Real-IP": "203.0.113.21"})).status == 503
        # a closed socket gives its client's share back
        held.pop(0).close()
        await until(lambda: metric_value(node, 'fastim_open_sockets{kind="chat"}') == SOCKETS_PER_IP + 1, STEP_S)
        again = await handshake(node.port, {"X-Forwarded-For": "203.0.113.20"})
        assert again.status == 101
        held.append(again)
        refused = await loop.run_in_executor(None, refused_for_address, node)
        assert refused == 2
        # a client over its share is logged as a warning, under its own address, token redacted
        node.wait_for_log("WARNING tornado.access: 503 GET /group/chat/g1/u1/*** (203.0.113.20)")
    finally:
        for h in held:
            h.close()
    assert "Traceback" not in node.stderr and " ERROR " not in node.stderr, node.stderr_tail


@pytest.mark.gen_test(timeout=60)
async def test_forged_headers_do_not_lift_an_untrusted_peers_limit(node_factory):
    node = node_factory(FASTIM_SERVER_MAX_CONNECTIONS_PER_IP=str(SOCKETS_PER_IP))
    held = [await handshake(node.port, {"X-Forwarded-For": f"203.0.113.{30 + i}"}) for i in range(SOCKETS_PER_IP)]
    try:
        assert [h.status for h in held] == [101] * SOCKETS_PER_IP
        over = await handshake(node.port, {"X-Forwarded-For": "203.0.113.99", "X-Real-IP": "203.0.113.98"})
        assert over.status == 503 and json.loads(over.body) == ADDRESS_FULL  # the acceptor's canned refusal
        other = await handshake(node.port, source="127.0.0.2")  # another address has its own share
        assert other.status == 101
        held.append(other)
    finally:
        for h in held:
            h.close()


# -- through the real nginx of deploy/nginx.conf -----------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_through_nginx_each_client_address_has_its_own_logins_and_sockets(node_factory, tmp_path):
    binary = nginx_binary()
    node = node_factory(script=USER_STORE, FASTIM_SERVER_TRUSTED_PROXIES="127.0.0.1",
                        FASTIM_AUTH_LOGIN_FAILURES_PER_IP=str(FAILURES_PER_IP),
                        FASTIM_SERVER_MAX_CONNECTIONS_PER_IP=str(SOCKETS_PER_IP))
    # Both upstream servers are this one node: the throttle counts per node.
    with NginxProcess(tmp_path / "nginx", free_port(), (node.port, node.port), binary) as proxy:
        url = proxy.base_url
        # 127.0.0.1 is a trusted hop: what it forwards names the client (nginx appends 127.0.0.1 after it).
        codes = [await login(url, f"u{i}", {"X-Forwarded-For": "203.0.113.40"}) for i in range(4)]
        assert codes == [100, 100, 100, 429]
        assert await login(url, "u9", {"X-Forwarded-For": "203.0.113.41"}) == 100
        # 127.0.0.2 is not: whatever it writes, nginx appends its address and the node stops there.
        codes = [await login(url, f"v{i}", {"X-Forwarded-For": f"203.0.113.{50 + i}", "X-Real-IP": "203.0.113.60"},
                             source="127.0.0.2") for i in range(4)]
        assert codes == [100, 100, 100, 429]
        node.wait_for_log("POST /user/login (203.0.113.40)")
        node.wait_for_log("POST /user/login (127.0.0.2)")
        assert "(203.0.113.5" not in node.stderr and "(203.0.113.60)" not in node.stderr

        held = []
        try:
            for source, forwarded in (("127.0.0.1", "203.0.113.70"), ("127.0.0.2", "203.0.113.71")):
                for _ in range(SOCKETS_PER_IP):
                    held.append(await handshake(proxy.port, {"X-Forwarded-For": forwarded}, source=source))
                over = await handshake(proxy.port, {"X-Forwarded-For": f"{forwarded}9"}, source=source)
                if source == "127.0.0.1":  # a new forwarded address is a new client
                    assert over.status == 101
                    held.append(over)
                    over = await handshake(proxy.port, {"X-Forwarded-For": forwarded}, source=source)
                assert over.status == 503 and json.loads(over.body) == ADDRESS_FULL, over.head
            assert [h.status for h in held] == [101] * (2 * SOCKETS_PER_IP + 1)
            # a client's refusals never take the node out of nginx's rotation for the others
            assert (await handshake(proxy.port, {"X-Forwarded-For": "203.0.113.72"})).status == 101
            assert await login(url, "w1", {"X-Forwarded-For": "203.0.113.73"}) == 100
        finally:
            for h in held:
                h.close()
        assert not re.search(r"\[(emerg|alert|crit)\]", proxy.errors()), proxy.errors()
    assert "Traceback" not in node.stderr, node.stderr_tail
