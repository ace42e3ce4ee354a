"""The transport speaks RFC 6455 on a real socket pair: frames, fragments, control frames, closing, backlog."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from fastim.interfaces.ws import transport as transport_module
from fastim.interfaces.ws.frames import text_frame
from fastim.interfaces.ws.transport import CLOSED, Transport, TransportLimits
from tests import raw_ws
from tests.raw_ws import BINARY, CONTINUATION, PING, PONG, TEXT, Peer, client_frame

MAX_MESSAGE = 70_000


class Recorder:
    """A listener that writes down what the transport tells it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.binaries: list[bytes] = []
        self.closed = 0
        self.backlog_full = 0
        self.hold: asyncio.Future | None = None  # when set, each text is "handled" once it resolves
        self.fail_on: str | None = None

    def on_text(self, text):
        if text == self.fail_on:
            raise RuntimeError("handler bug")
        self.texts.append(text)
        if self.hold is not None:
            return self._held()
        return None

    async def _held(self):
        await self.hold

    def on_binary(self, data):
        self.binaries.append(data)

    def on_backlog_full(self):
        self.backlog_full += 1

    def on_closed(self):
        self.closed += 1


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    server.setblocking(False)
    yield server, client
    client.close()
    server.close()


def start(server, unread=b"", max_unsent=1 << 20, **limits):
    transport = Transport(server, TransportLimits(max_unsent, MAX_MESSAGE, **limits), unread=unread)
    recorder = Recorder()
    transport.start(recorder)
    return transport, recorder


async def until(condition, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@pytest.mark.gen_test
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
async def test_a_masked_text_frame_of_any_length_encoding_is_one_message(pair, size):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(raw_ws.text("é" * (size // 2) + "a" * (size % 2)))
    await until(lambda: recorder.texts)
    assert recorder.texts == ["é" * (size // 2) + "a" * (size % 2)]


@pytest.mark.gen_test
async def test_frames_split_byte_by_byte_and_frames_sharing_a_read_all_arrive_in_order(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    data = raw_ws.text("one") + raw_ws.text("two" * 100) + client_frame(BINARY, b"\x00\x01")
    for byte in data[:40]:
        await peer.send(bytes([byte]))
        await asyncio.sleep(0)
    await peer.send(data[40:] + raw_ws.text("three"))
    await until(lambda: len(recorder.texts) == 3)
    assert recorder.texts == ["one", "two" * 100, "three"]
    assert recorder.binaries == [b"\x00\x01"]


@pytest.mark.gen_test
async def test_bytes_read_with_the_handshake_are_parsed_first(pair):
    server, client = pair
    _, recorder = start(server, unread=raw_ws.text("early"))
    await Peer(client).send(raw_ws.text("later"))
    await until(lambda: len(recorder.texts) == 2)
    assert recorder.texts == ["early", "later"]


@pytest.mark.gen_test
async def test_a_fragmented_message_is_assembled_and_a_ping_inside_it_is_answered(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(
        client_frame(TEXT, b"hel", fin=False)
        + client_frame(PING, b"are you there")
        + client_frame(CONTINUATION, b"lo ", fin=False)
        + client_frame(CONTINUATION, "wörld".encode(), fin=True)
    )
    assert await peer.frame() == (PONG, b"are you there")
    await until(lambda: recorder.texts)
    assert recorder.texts == ["hello wörld"]


@pytest.mark.gen_test
async def test_a_pong_is_ignored(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(client_frame(PONG, b"unsolicited") + raw_ws.text("after"))
    await until(lambda: recorder.texts)
    assert recorder.texts == ["after"]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "data,code",
    [
        (raw_ws.text("plain", masked=False), 1002),
        (raw_ws.text("x", rsv=0x40), 1002),
        (client_frame(0x3, b"?"), 1002),
        (client_frame(CONTINUATION, b"orphan"), 1002),
        (client_frame(TEXT, b"a", fin=False) + raw_ws.text("b"), 1002),
        (client_frame(PING, b"x" * 126), 1002),
        (client_frame(PING, b"x", fin=False), 1002),
        (client_frame(TEXT, b"", length=MAX_MESSAGE + 1), 1009),
        (client_frame(TEXT, b"a" * 40_000, fin=False) + client_frame(CONTINUATION, b"a" * 40_000), 1009),
        (client_frame(TEXT, b"\xff\xfe"), 1007),
        (client_frame(raw_ws.CLOSE, b"\x03"), 1002),
        (raw_ws.close(1005), 1002),
        (raw_ws.close(2999), 1002),
        (client_frame(raw_ws.CLOSE, b"\x03\xe8\xff"), 1007),
    ],
    ids=["unmasked", "rsv", "opcode", "continuation", "interleaved", "long-ping", "fragmented-ping",
         "too-big", "too-big-fragments", "bad-utf8", "close-1-byte", "close-1005", "close-2999", "close-reason"],
)
async def test_protocol_violations_close_with_the_rfc_code_and_nothing_after_them_is_taken(pair, data, code):
    server, client = pair
    transport, recorder = start(server)
    peer = Peer(client)
    await peer.send(data + raw_ws.text("never"))
    assert (await peer.closed(answer=False))[0] == code
    assert transport.state != CLOSED  # input is drained until the peer hangs up, so no reset can hit our close frame
    peer.close()
    await until(lambda: recorder.closed == 1)
    assert "never" not in recorder.texts
    assert transport.state == CLOSED


@pytest.mark.gen_test
async def test_the_peers_close_is_echoed_then_the_connection_ends_once(pair):
    server, client = pair
    transport, recorder = start(server)
    peer = Peer(client)
    await peer.send(raw_ws.close(1000, "bye"))
    assert await peer.frame() == (raw_ws.CLOSE, b"\x03\xe8")
    assert await peer.frame() is None  # the server's FIN
    client.close()
    await until(lambda: recorder.closed == 1)
    assert transport.close_code == 1000


@pytest.mark.gen_test
async def test_after_our_close_nothing_is_parsed_and_the_socket_goes_at_the_peers_eof(pair):
    server, client = pair
    transport, recorder = start(server)
    peer = Peer(client)
    transport.close(4440, "login required")
    transport.write(text_frame(b"too late"))
    await peer.send(raw_ws.text("also too late"))
    assert await peer.closed() == (4440, "login required")  # our close frame, then our FIN
    assert transport.state != CLOSED  # nothing after our close is parsed: the socket goes at the peer's EOF
    peer.close()
    await until(lambda: recorder.closed == 1)
    assert recorder.texts == []


@pytest.mark.gen_test
async def test_a_peer_that_never_answers_our_close_is_cut_after_the_timeout(pair, monkeypatch):
    monkeypatch.setattr(transport_module, "CLOSE_TIMEOUT_S", 0.1)
    server, client = pair
    transport, recorder = start(server)
    transport.close(1001, "going away")
    await until(lambda: recorder.closed == 1)
    assert (await Peer(client).frame())[0] == raw_ws.CLOSE


@pytest.mark.gen_test
async def test_a_peer_gone_without_a_close_frame_ends_the_connection_once(pair):
    server, client = pair
    transport, recorder = start(server)
    client.close()
    await until(lambda: recorder.closed == 1)
    transport.write(text_frame(b"nobody"))
    transport.close(1000)
    await asyncio.sleep(0.05)
    assert recorder.closed == 1


@pytest.mark.gen_test
async def test_a_message_handled_slowly_holds_the_next_ones_in_order(pair):
    server, client = pair
    _, recorder = start(server)
    recorder.hold = asyncio.get_running_loop().create_future()
    await Peer(client).send(raw_ws.text("1") + raw_ws.text("2") + raw_ws.text("3"))
    await until(lambda: recorder.texts)
    await asyncio.sleep(0.05)
    assert recorder.texts == ["1"]
    recorder.hold.set_result(None)
    await until(lambda: len(recorder.texts) == 3)
    assert recorder.texts == ["1", "2", "3"]


@pytest.mark.gen_test
async def test_a_failing_handler_closes_with_1011_and_is_logged(pair, caplog):
    server, client = pair
    _, recorder = start(server)
    recorder.fail_on = "boom"
    peer = Peer(client)
    with caplog.at_level(logging.ERROR):
        await peer.send(raw_ws.text("boom"))
        assert (await peer.closed())[0] == 1011
    peer.close()
    await until(lambda: recorder.closed == 1)
    assert "message handler failed" in caplog.text


@pytest.mark.gen_test
async def test_a_reader_that_stops_fills_the_bound_then_gets_everything_queued_in_order(pair):
    server, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport, recorder = start(server, max_unsent=200_000)
    frames = [text_frame(f"{i:06d}".encode() + b"x" * 994) for i in range(2000)]
    written = 0
    for frame in frames:
        transport.write(frame)
        if recorder.backlog_full:
            break
        written += 1
    assert recorder.backlog_full == 1
    assert 0 < transport.unsent_bytes <= 200_000
    peer = Peer(client)
    for i in range(written):
        opcode, payload = await peer.frame()
        assert payload[:6] == f"{i:06d}".encode()
    assert transport.unsent_bytes == 0


@pytest.mark.gen_test
async def test_text_split_at_every_offset_across_reads_and_fragments_is_reassembled_exactly(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    text = "héllo wörld, 世界 😀 " * 40  # characters of 1 to 4 bytes, cut anywhere by the reads
    data = text.encode()
    frames = client_frame(TEXT, data[:301], fin=False) + client_frame(CONTINUATION, data[301:], fin=True)
    frames += raw_ws.text(text)
    for at in range(0, len(frames), 7):  # 7 bytes a read: every mask phase, every cut through a character
        await peer.send(frames[at:at + 7])
        await asyncio.sleep(0)
    await until(lambda: len(recorder.texts) == 2)
    assert recorder.texts == [text, text]


@pytest.mark.gen_test
async def test_invalid_utf8_closes_1007_at_the_first_bad_byte_before_the_frame_is_complete(pair):
    server, client = pair
    transport, recorder = start(server)
    peer = Peer(client)
    frame = client_frame(TEXT, b"valid so far \xff" + b"x" * 5000)
    await peer.send(frame[:40])  # the bad byte has arrived, the rest of the frame has not
    assert (await peer.closed(answer=False))[0] == 1007
    peer.close()
    await until(lambda: recorder.closed == 1)


@pytest.mark.gen_test
async def test_invalid_utf8_in_a_later_fragment_closes_1007_before_the_message_ends(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(client_frame(TEXT, "κόσμε".encode(), fin=False) + client_frame(CONTINUATION, b"\xed\xa0\x80", fin=False))
    assert (await peer.closed(answer=False))[0] == 1007
    peer.close()
    assert recorder.texts == []


@pytest.mark.gen_test
async def test_a_message_in_more_fragments_than_the_cap_closes_1008(pair):
    server, client = pair
    _, recorder = start(server, max_fragments=4)
    peer = Peer(client)
    ok = client_frame(TEXT, b"a", fin=False) + client_frame(CONTINUATION, b"b", fin=False) * 2
    ok += client_frame(CONTINUATION, b"c", fin=True)
    await peer.send(ok)
    await until(lambda: recorder.texts == ["abbc"])
    await peer.send(client_frame(TEXT, b"a", fin=False) + client_frame(CONTINUATION, b"b", fin=False) * 3)
    assert await peer.closed(answer=False) == (1008, "message in more than 4 fragments")
    peer.close()


@pytest.mark.gen_test
async def test_the_running_size_of_fragments_is_checked_at_each_header(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(client_frame(TEXT, b"a" * 40_000, fin=False))
    # announces 40,000 more bytes: refused from the header, before any of them is sent
    await peer.send(client_frame(CONTINUATION, b"", length=40_000)[:8])
    assert (await peer.closed(answer=False))[0] == 1009
    peer.close()


@pytest.mark.gen_test
async def test_control_frames_past_the_rate_close_1008(pair):
    server, client = pair
    _, recorder = start(server, control_frames_per_s=10.0, control_frame_burst=5)
    peer = Peer(client)
    await peer.send(client_frame(PING, b"1") * 5)
    for _ in range(5):
        assert (await peer.frame())[0] == PONG
    await peer.send(client_frame(PONG, b"") * 3)
    assert (await peer.closed(answer=False))[0] == 1008
    peer.close()


@pytest.mark.gen_test
async def test_a_reserved_control_opcode_closes_1002(pair):
    server, client = pair
    _, recorder = start(server)
    peer = Peer(client)
    await peer.send(raw_ws.text("first") + client_frame(0xB, b""))
    assert (await peer.closed(answer=False))[0] == 1002
    assert recorder.texts == ["first"]
    peer.close()


@pytest.mark.gen_test
async def test_pongs_to_a_peer_that_does_not_read_count_toward_the_unsent_bound(pair):
    server, client = pair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    _, recorder = start(server, max_unsent=10_000, control_frames_per_s=1e9, control_frame_burst=10**9)
    peer = Peer(client)
    for _ in range(100):
        await peer.send(client_frame(PING, b"p" * 125) * 10)
        await asyncio.sleep(0)
        if recorder.backlog_full:
            break
    assert recorder.backlog_full >= 1


@pytest.mark.gen_test
async def test_keepalive_ping_goes_out_once_until_the_peer_sends_anything(pair):
    server, client = pair
    transport, recorder = start(server)
    peer = Peer(client)
    transport.ping()
    transport.ping()  # still unanswered: not sent again
    assert await peer.frame() == (PING, b"")
    assert transport.ping_at > 0
    await peer.send(client_frame(PONG, b""))
    await until(lambda: transport.ping_at == 0)
    with pytest.raises(asyncio.TimeoutError):
        await peer.frame(timeout=0.1)
