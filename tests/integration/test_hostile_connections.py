"""Issue 12, findings 4 and 10, played by an attacker against real nodes: descriptors, connections, bodies.

A node with few file descriptors and many idle clients must neither spin nor
flood its log, and must serve again as soon as the clients leave; a node
counts connections per node and per client address and refuses the surplus
with a canned 503; slow request heads are cut; a body over the limit is
refused from its headers. Each test failed on the build before (23fe8b9).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from benchmarks.procstats import cpu_seconds
from tests.integration.conftest import metric_value
from tests.processes import http_status

pytestmark = pytest.mark.redis

CLIENTS = 400
# Issue 12's bounds for a node under `prlimit --nofile=256` with 400 clients held open.
MAX_CPU_SHARE = 0.10
MAX_LOG_BYTES = 100 * 1024
SERVES_AGAIN_WITHIN_S = 1.0
WATCH_S = 3.0


async def connect(port: int, source: str = "127.0.0.1", timeout: float = 2.0) -> socket.socket | None:
    """A TCP connection to the node that sends nothing; None when the connect does not complete in time."""
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), timeout)
    except (OSError, asyncio.TimeoutError):
        sock.close()
        return None
    return sock


async def answer(sock: socket.socket, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` and read until the node closes the connection (or ``timeout``)."""
    loop = asyncio.get_running_loop()
    if request:
        await loop.sock_sendall(sock, request)
    data = b""
    deadline = loop.time() + timeout
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), max(0.01, deadline - loop.time()))
        except asyncio.TimeoutError:
            return data
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


async def hold_clients(port: int, count: int) -> list[socket.socket]:
    connected = await asyncio.gather(*(connect(port) for _ in range(count)))
    return [sock for sock in connected if sock is not None]


async def serves_again_after(clients: list[socket.socket], node) -> float:
    """Close every client; the seconds until /healthz answers 200."""
    for sock in clients:
        sock.close()
    left = time.monotonic()
    while True:
        try:
            if http_status(node.base_url + "/healthz", timeout=0.5) == 200:
                return time.monotonic() - left
        except OSError:
            pass
        assert time.monotonic() - left < 10, "the node did not serve again"
        await asyncio.sleep(0.02)


def log_bytes(node) -> int:
    return node.stderr_path.stat().st_size


@pytest.mark.gen_test(timeout=60)
async def test_400_idle_clients_against_256_descriptors_are_refused_cheaply_and_the_node_recovers(node_factory):
    node = node_factory(open_files=256)
    assert "up to 128 connections (open-files limit 256)" in node.stderr
    clients = await hold_clients(node.port, CLIENTS)
    refused = [sock for sock in clients[-50:] if (await answer(sock, b"", timeout=0.5)).startswith(b"HTTP/1.1 503")]
    assert refused, "connections past the limit get a 503 answer"
    before = cpu_seconds(node.pid)
    await asyncio.sleep(WATCH_S)
    assert cpu_seconds(node.pid) - before < MAX_CPU_SHARE * WATCH_S
    assert log_bytes(node) < MAX_LOG_BYTES
    assert await serves_again_after(clients, node) < SERVES_AGAIN_WITHIN_S
    # Of the clients that got through the kernel's backlog, those past the node's 128 slots were
    # refused, but for some still waiting in the backlog while accepting paused on EMFILE (more of
    # them on a loaded machine: the suite saw 258 of 262).
    assert metric_value(node, 'fastim_refused_connections_total{limit="node"}') >= len(clients) - 128 - 40


@pytest.mark.gen_test(timeout=60)
async def test_running_out_of_descriptors_pauses_accepting_without_spinning_or_flooding_the_log(node_factory):
    # max_connections above what the descriptors allow: accept() itself fails with EMFILE.
    node = node_factory(open_files=256, FASTIM_SERVER_MAX_CONNECTIONS="10000")
    clients = await hold_clients(node.port, CLIENTS)
    await asyncio.sleep(0.5)
    before = cpu_seconds(node.pid)
    await asyncio.sleep(WATCH_S)
    assert cpu_seconds(node.pid) - before < MAX_CPU_SHARE * WATCH_S
    assert log_bytes(node) < MAX_LOG_BYTES
    assert node.stderr.count("accepting connections is out of resources: Too many open files") == 1
    assert "Traceback" not in node.stderr
    assert await serves_again_after(clients, node) < SERVES_AGAIN_WITHIN_S


@pytest.mark.gen_test(timeout=60)
async def test_the_soft_open_files_limit_is_raised_to_the_hard_one(node_factory):
    node = node_factory(open_files=(256, 4096))
    assert "(open-files limit 4096)" in node.stderr


@pytest.mark.gen_test(timeout=60)
async def test_connections_are_counted_per_client_address(node_factory):
    node = node_factory(FASTIM_SERVER_MAX_CONNECTIONS_PER_IP="3")
    held = [await connect(node.port) for _ in range(3)]
    fourth = await connect(node.port)
    reply = await answer(fourth, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 503 ")
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["msg"] == "too many connections from your address; close some first"
    other = await connect(node.port, source="127.0.0.2")  # another address has its own count
    assert (await answer(other, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).startswith(b"HTTP/1.1 200")
    for sock in held + [fourth, other]:
        sock.close()
    await asyncio.sleep(0.2)
    assert http_status(node.base_url + "/healthz") == 200  # the slots came back


@pytest.mark.gen_test(timeout=60)
async def test_a_request_head_that_never_ends_is_cut_after_the_header_timeout(node_factory):
    node = node_factory(FASTIM_SERVER_HEADER_TIMEOUT="1")
    slow = await connect(node.port)
    started = time.monotonic()
    reply = await answer(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", timeout=8)
    assert reply == b"" and time.monotonic() - started < 4  # closed, not after an hour
    idle = await connect(node.port)
    reply = await answer(idle, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=8)  # kept alive, then idle
    assert reply.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 8
    slow.close()
    idle.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_body_over_the_limit_is_refused_413_from_its_headers(node_factory):
    node = node_factory()
    declared = await connect(node.port)
    head = (b"POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 104857600\r\n\r\n")
    reply = await answer(declared, head, timeout=3)  # not one byte of the 100 MB is sent
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {
        "code": 413, "msg": "request body over the limit of 65536 bytes", "data": None}
    chunked = await connect(node.port)
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    head = b"POST /user/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    reply = await answer(chunked, head + chunk * 3, timeout=3)
    assert reply.startswith(b"HTTP/1.1 413 ")
    within = await connect(node.port)
    body = b"userId=u1&password=x&pad=" + b"a" * 60_000
    head = (b"POST /user/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body))
    reply = await answer(within, head + body)
    assert reply.startswith(b"HTTP/1.1 200") and json.loads(reply.partition(b"\r\n\r\n")[2])["code"] == 200
    for sock in (declared, chunked, within):
        sock.close()
    assert "Malformed HTTP message" not in node.stderr
