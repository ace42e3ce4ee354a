"""Connection admission: per node and per client address, refusals answered 503 before Tornado sees them."""

from __future__ import annotations

import asyncio
import socket

import pytest
import tornado.httpserver
import tornado.web

from fastim.interfaces.acceptor import (
    REFUSED_ADDRESS_FULL,
    REFUSED_NODE_FULL,
    Acceptor,
    Admission,
    client_key,
)


@pytest.mark.parametrize(
    "address,key",
    [
        (("203.0.113.5", 4000), "203.0.113.5"),
        (("2001:db8:1:2:3:4:5:6", 4000, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 4000, 0, 0), "2001:db8:1:2::/64"),
        (("::ffff:198.51.100.7", 4000, 0, 0), "198.51.100.7"),
        (("fe80::1%eth0", 4000, 0, 2), "fe80::/64"),
        ("/run/fastim.sock", "/run/fastim.sock"),
    ],
)
def test_a_client_is_its_ipv4_address_or_its_ipv6_64(address, key):
    assert client_key(address) == key


def test_admission_counts_per_node_and_per_address_and_slots_come_back():
    admission = Admission(max_connections=3, max_per_address=2)
    assert admission.admit("a") is None and admission.admit("a") is None
    assert admission.admit("a") is REFUSED_ADDRESS_FULL
    assert admission.admit("b") is None
    assert admission.admit("c") is REFUSED_NODE_FULL
    admission.slot("a")()
    assert admission.open == 2
    assert admission.admit("c") is None


def test_zero_means_no_limit():
    admission = Admission(0, 0)
    for _ in range(1000):
        assert admission.admit("a") is None


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.finish("hello")


async def request(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


@pytest.mark.gen_test
async def test_the_acceptor_serves_within_the_limit_and_refuses_past_it_and_frees_slots_on_close():
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Hello)]))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    refused = []
    acceptor = Acceptor(server, Admission(1, 0), refused.append)
    acceptor.add_sockets([listener])
    try:
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", port)  # takes the one slot
        await asyncio.sleep(0.05)
        answer = await request(port)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable") and answer.endswith(
            b'"msg": "too many connections to this node; try again later", "data": null}')
        assert refused == ["node"]
        held_writer.close()
        await asyncio.sleep(0.05)
        assert acceptor.admission.open == 0
        assert (await request(port)).endswith(b"hello")
        assert acceptor.admission.open == 0  # the served connection gave its slot back
    finally:
        acceptor.stop()
        await server.close_all_connections()
