"""[server] trusted_proxies: the client a trusted proxy names, forged and malformed headers, the per-client slot."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from tornado import httputil

from fastim.interfaces import acceptor
from fastim.interfaces.acceptor import REFUSED_ADDRESS_FULL, Admission, unassigned_slot
from fastim.interfaces.http import client_address
from fastim.interfaces.http.client_address import (
    MAX_FORWARDED_HOPS,
    ForwardedClients,
    TrustedProxies,
    parse_address,
)
from fastim.settings import SettingsError, load_settings

PROXIES = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize("text", [
    "", " ", "1.2.3.4:80", "[2001:db8::1]", "fe80::1%eth0", "example.com", "1.2.3", "01.2.3.4x",
    "١٢٧.٠.٠.١",  # Arabic-Indic digits: int() would read them, an address has none
    "1" * 5000, "1.2.3.4\x00", "unknown", "::ffff:1.2.3.4:5",
])
def test_only_bare_addresses_are_addresses(text):
    assert parse_address(text) is None


@pytest.mark.parametrize("text,address", [
    ("203.0.113.7", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"), ("2001:DB8::1", "2001:db8::1"),
    ("::ffff:198.51.100.1", "::ffff:c633:6401"),
])
def test_addresses_are_read_and_normalized(text, address):
    assert str(parse_address(text)) == address


def test_forged_headers_from_an_untrusted_peer_are_ignored():
    assert PROXIES.client_of("198.51.100.9", "203.0.113.7", "203.0.113.8") == "198.51.100.9"
    assert TrustedProxies().client_of("127.0.0.1", "203.0.113.7", "203.0.113.8") == "127.0.0.1"


@pytest.mark.parametrize("forwarded_for,real_ip,client", [
    ("203.0.113.7", None, "203.0.113.7"),
    # read from the right: what the client itself wrote further left is not believed
    ("6.6.6.6, 203.0.113.7", None, "203.0.113.7"),
    # hops that are trusted proxies themselves are passed over
    ("6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1", None, "203.0.113.7"),
    ("6.6.6.6,203.0.113.7,fd12::1", None, "203.0.113.7"),
    ("2001:db8::5, 10.0.0.1", None, "2001:db8::5"),
    ("::ffff:10.0.0.1, 203.0.113.7", None, "203.0.113.7"),
    ("203.0.113.7, ::ffff:10.0.0.1", None, "203.0.113.7"),  # a mapped proxy is the proxy
    (None, "203.0.113.8", "203.0.113.8"),
    ("203.0.113.7", "203.0.113.8", "203.0.113.7"),  # X-Forwarded-For first
    # only proxies, or a malformed hop before any client: X-Real-IP, else the peer
    ("10.0.0.1, 127.0.0.1", "203.0.113.8", "203.0.113.8"),
    ("10.0.0.1, 127.0.0.1", None, "127.0.0.1"),
    ("6.6.6.6, junk, 10.0.0.1", "203.0.113.8", "203.0.113.8"),  # nobody vouches for what is left of junk
    ("6.6.6.6, junk, 10.0.0.1", None, "127.0.0.1"),
    ("203.0.113.7, ", None, "127.0.0.1"),
    (",,,,", "junk", "127.0.0.1"),
    ("", "", "127.0.0.1"),
    ("1.2.3.4:5678", "[::1]", "127.0.0.1"),
    ("203.0.113.7", "203.0.113.8,203.0.113.9", "203.0.113.7"),  # two X-Real-IP headers, joined: not believed
    (None, "203.0.113.8,203.0.113.9", "127.0.0.1"),
])
def test_a_trusted_proxy_names_the_client(forwarded_for, real_ip, client):
    assert PROXIES.client_of("127.0.0.1", forwarded_for, real_ip) == client


def test_a_dual_stack_peer_is_trusted_by_its_ipv4_address():
    assert PROXIES.client_of("::ffff:127.0.0.1", "203.0.113.7", None) == "203.0.113.7"
    assert PROXIES.trusts_peer(("::ffff:127.0.0.1", 5000, 0, 0))
    assert not PROXIES.trusts_peer(("127.0.0.2", 5000))
    assert not PROXIES.trusts_peer("/run/fastim.sock") and not PROXIES.trusts_peer(b"") and not PROXIES.trusts_peer(())


def test_a_chain_longer_than_the_hops_read_back_names_no_client_beyond_them():
    proxies = [f"10.0.0.{i}" for i in range(MAX_FORWARDED_HOPS)]
    assert PROXIES.client_of("127.0.0.1", ", ".join(["203.0.113.7", *proxies]), None) == "127.0.0.1"
    assert PROXIES.client_of("127.0.0.1", ", ".join(["203.0.113.7", *proxies[1:]]), None) == "203.0.113.7"


def test_a_huge_header_is_read_no_further_than_the_hops(monkeypatch):
    """Tornado admits header blocks of 64 KiB: a header of thousands of hops costs at most 16 parses."""
    calls = []
    real = client_address.parse_address
    monkeypatch.setattr(client_address, "parse_address", lambda text: calls.append(text) or real(text))
    header = ",".join(["10.0.0.1"] * 8000)
    assert PROXIES.client_of("127.0.0.1", header, None) == "127.0.0.1"
    assert len(calls) <= MAX_FORWARDED_HOPS + 2  # the peer, the hops, nothing more
    calls.clear()
    assert PROXIES.client_of("127.0.0.1", "x" * 60000, "y" * 60000) == "127.0.0.1"
    assert len(calls) == 3 and all(len(text) == 60000 for text in calls[1:])


def test_the_setting_takes_addresses_and_networks_and_refuses_anything_else():
    settings = load_settings(environ={"FASTIM_SERVER_TRUSTED_PROXIES": " 127.0.0.1, 10.1.0.0/16,fd00::/8 ,10.2.3.4/8"})
    assert settings.server.trusted_proxies == ("127.0.0.1/32", "10.1.0.0/16", "fd00::/8", "10.0.0.0/8")
    assert load_settings(environ={}).server.trusted_proxies == ()
    for bad in ("nginx", "10.0.0.0/33", "1.2.3.4:80", "*"):
        with pytest.raises(SettingsError, match=r"\[server\] trusted_proxies = .*not an IP address or a CIDR"):
            load_settings(environ={"FASTIM_SERVER_TRUSTED_PROXIES": f"127.0.0.1,{bad}"})


# -- the node's view: remote_ip, and the per-address count -------------------------------------


class Recorder(httputil.HTTPServerConnectionDelegate, httputil.HTTPMessageDelegate):
    def __init__(self, connection):
        self.connection = connection
        self.remote_ips = []

    def start_request(self, server_conn, request_conn):
        return self

    def headers_received(self, start_line, headers):
        self.remote_ips.append(httputil.HTTPServerRequest(connection=self.connection, start_line=start_line,
                                                          headers=headers).remote_ip)


def request_from(delegate: ForwardedClients, recorder: Recorder, headers: dict) -> str:
    message = delegate.start_request(None, recorder.connection)
    start_line = httputil.RequestStartLine("GET", "/", "HTTP/1.1")
    message.headers_received(start_line, httputil.HTTPHeaders({"Host": "x", **headers}))
    return recorder.remote_ips[-1]


def connection_from(host: str):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return SimpleNamespace(context=SimpleNamespace(address=(host, 5000), address_family=family, remote_ip=host))


def test_requests_of_a_trusted_proxy_carry_their_clients_address_each_and_others_their_peers():
    recorder = Recorder(connection_from("127.0.0.1"))
    delegate = ForwardedClients(recorder, PROXIES)
    assert request_from(delegate, recorder, {"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"
    # the next request on the same kept-alive connection is another client's, or the proxy's own
    assert request_from(delegate, recorder, {"X-Real-IP": "203.0.113.8"}) == "203.0.113.8"
    assert request_from(delegate, recorder, {}) == "127.0.0.1"
    untrusted = Recorder(connection_from("198.51.100.9"))
    forged = {"X-Forwarded-For": "1.1.1.1"}
    assert request_from(ForwardedClients(untrusted, PROXIES), untrusted, forged) == "198.51.100.9"


def test_a_proxys_connection_counts_for_the_node_only_until_assigned_to_a_client():
    admission = Admission(max_connections=10, max_per_address=1)
    proxied = [admission.slot(None) for _ in range(3)]
    for _ in proxied:
        assert admission.admit(None) is None
    assert admission.admit("127.0.0.1") is None  # the proxy's address has its whole share left
    assert proxied[0].assign("203.0.113.7") is None
    assert proxied[1].assign("203.0.113.7") is REFUSED_ADDRESS_FULL and proxied[1].key is None
    assert proxied[1].assign("203.0.113.8") is None
    proxied[0]()  # the socket closed: its client may open another
    assert proxied[2].assign("203.0.113.7") is None
    proxied[2].unassign()  # its upgrade failed: the client's share comes back, the slot stays the node's
    proxied[2].unassign()
    assert proxied[2].key is None and proxied[2].assign("203.0.113.7") is None
    proxied[2]()
    proxied[2].unassign()  # released: nothing more to give back
    proxied[1]()
    assert admission.open == 1 and admission._by_address == {"127.0.0.1": 1}


def test_only_a_stream_of_a_proxys_unassigned_connection_has_an_unassigned_slot():
    admission = Admission(0, 0)

    class Stream(acceptor.CountedStream):
        def __init__(self, release):  # no socket: only the slot matters here
            self._release_slot = release

    assert unassigned_slot(None) is None and unassigned_slot(object()) is None
    slot = admission.slot(None)
    assert unassigned_slot(Stream(slot)) is slot
    assert unassigned_slot(Stream(admission.slot("198.51.100.9"))) is None
    slot.assign("203.0.113.7")
    assert unassigned_slot(Stream(slot)) is None
    assert unassigned_slot(Stream(None)) is None
