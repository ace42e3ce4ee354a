"""Issue 12, findings 1-3 and 12, played by an attacker against real nodes on a real redis-server.

What a client sends may cost the node no more than its bytes: fragment floods
(before and after a login), a frame far larger than a chat message, a ping
flood from a client that never reads, and a half-open client that never
answers. Each test failed on the build before these fixes (23fe8b9).
CPU budgets here are sanity bounds an order of magnitude above what the node
spends, to tell linear from quadratic; the figures are in benchmarks/hostile.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient

from benchmarks.procstats import cpu_seconds
from tests import raw_ws
from tests.integration.conftest import metric_value, send_tolerating_close, until
from tests.interfaces.http_client import Api
from tests.interfaces.ws_client import Client
from tests.raw_ws import CLOSE, CONTINUATION, PING, PONG, TEXT, Peer, client_frame

pytestmark = pytest.mark.redis

# What the node may spend on a flood that costs the attacker a megabyte or so to send. On the
# build before, 200,000 empty continuation frames took 227 s of CPU.
FLOOD_CPU_BUDGET_S = 2.0
ZERO_MASK = b"\0\0\0\0"  # a valid masking key that leaves the payload as it is: cheap to build


async def echo_round_trip(client: Client, text: str) -> None:
    await client.send(text)
    assert (await client.json(timeout=5))["info"] == text


@pytest.mark.gen_test(timeout=60)
async def test_nothing_a_client_sends_after_its_refusal_is_parsed(node_factory):
    node = node_factory(FASTIM_IM_LOGIN_AUTH="1")
    api = Api(AsyncHTTPClient(), node.base_url)
    bystander = await Client.connect(node.ws_url, f"/group/chat/1/bystander/{await api.login('bystander')}")
    await bystander.json()
    peer = await Peer.connect(node.port, raw_ws.handshake("/group/chat/1/attacker/not-a-token"))
    assert await peer.text() == "440"
    opcode, payload = await peer.frame()
    assert (opcode, payload[:2]) == (CLOSE, (4440).to_bytes(2, "big"))
    before = cpu_seconds(node.pid)
    flood = client_frame(TEXT, b"", fin=False) + client_frame(CONTINUATION, b"", fin=False) * 200_000
    await send_tolerating_close(peer, flood)  # 1.2 MB into a connection the node has decided to close
    await echo_round_trip(bystander, "still served")
    assert await peer.frame() is None  # the node's FIN; it never answered a frame of the flood
    peer.close()
    assert cpu_seconds(node.pid) - before < FLOOD_CPU_BUDGET_S


@pytest.mark.gen_test(timeout=60)
async def test_a_fragment_flood_is_closed_1008_at_the_fragment_cap(node_factory):
    node = node_factory()
    bystander = await Client.connect(node.ws_url, "/group/chat/1/bystander/any")
    await bystander.json()
    peer = await Peer.connect(node.port, raw_ws.handshake("/group/chat/1/attacker/any"))
    assert json.loads(await peer.text())["list"] == []
    before = cpu_seconds(node.pid)
    flood = client_frame(TEXT, b"a", fin=False) + client_frame(CONTINUATION, b"a", fin=False) * 100_000
    await send_tolerating_close(peer, flood)
    assert await peer.closed(answer=False) == (1008, "message in more than 256 fragments")
    peer.close()
    await echo_round_trip(bystander, "never stalled")
    assert cpu_seconds(node.pid) - before < FLOOD_CPU_BUDGET_S


@pytest.mark.gen_test(timeout=180)
async def test_a_huge_frame_is_read_in_linear_time(node_factory):
    # max_message_bytes = 32 MiB lets frames of up to 128 MiB be read before the 413 answer.
    # The build before appended each read to a copy of everything read so far: 128 MiB in
    # 64 KiB reads copied about 137 GB, minutes of CPU.
    node = node_factory(FASTIM_IM_MAX_MESSAGE_BYTES=str(32 * 1024 * 1024))
    peer = await Peer.connect(node.port, raw_ws.handshake("/group/chat/1/big/any"))
    await peer.text()
    frame = client_frame(TEXT, b"a" * (120 * 1024 * 1024), mask=ZERO_MASK)
    before = cpu_seconds(node.pid)
    await send_tolerating_close(peer, frame, piece=1 << 20)
    assert json.loads(await peer.text(timeout=120))["code"] == 413
    assert cpu_seconds(node.pid) - before < 10.0
    peer.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_ping_flood_from_a_client_that_never_reads_is_closed_1008(node_factory):
    node = node_factory()
    peer = await Peer.connect(node.port, raw_ws.handshake("/group/chat/1/pinger/any"))
    await peer.text()
    await send_tolerating_close(peer, client_frame(PING, b"x" * 125) * 20_000)  # 2.6 MB of pings
    pongs = 0
    while (frame := await peer.frame()) is not None and frame[0] == PONG:
        pongs += 1
    assert frame is not None and frame[0] == CLOSE, "EOF without a close frame"
    assert int.from_bytes(frame[1][:2], "big") == 1008
    assert pongs <= 60  # the burst the rate allows, not a pong for each of 20,000 pings
    peer.close()
    await until(lambda: metric_value(node, 'fastim_open_sockets{kind="chat"}') == 0, timeout=10)


@pytest.mark.gen_test(timeout=60)
async def test_a_half_open_client_is_pinged_then_cut_and_a_live_one_stays(node_factory):
    node = node_factory(FASTIM_IM_PING_INTERVAL="1", FASTIM_IM_PING_TIMEOUT="1")
    live = await Client.connect(node.ws_url, "/group/chat/1/live/any")  # its library answers pings
    await live.json()
    silent = await Peer.connect(node.port, raw_ws.handshake("/group/chat/1/silent/any"))
    await silent.text()  # from now on it sends nothing, like a peer whose network vanished
    await until(lambda: metric_value(node, "fastim_keepalive_timeouts_total") == 1, timeout=8)
    assert metric_value(node, 'fastim_open_sockets{kind="chat"}') == 1
    await asyncio.sleep(2.5)  # more rounds of pings: the live socket keeps answering
    await echo_round_trip(live, "still here")
    assert metric_value(node, "fastim_keepalive_timeouts_total") == 1
    silent.close()
