"""The SDK's chat stream against a scripted node (a real WebSocket server on 127.0.0.1, in this process).

The script plays what a real node rarely does on cue: drops a connection with
a send in flight, answers with garbage, sends a frame over the bound, never
sends its opening frame, or a consumer falls behind. Real nodes are in
tests/integration/test_client_sdk.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve

from fastim.client import (
    Client,
    FinalClose,
    GroupList,
    ConnectionLost,
    Disconnected,
    Message,
    NotAllowed,
    NotRecovered,
    NotSent,
    Notice,
    Opened,
    PolicyViolation,
    SendError,
    StreamOptions,
    Unreachable,
)
from fastim.client.backoff import BackoffPolicy
from fastim.client.stream import Stream

STEP_S = 5.0  # the most one step of a scenario may take on a loaded machine
FAST = StreamOptions(backoff=BackoffPolicy(base=0.01, cap=0.05), open_timeout=2.0, answer_timeout=2.0,
                     send_timeout=2.0)


def message(seq: int, epoch: str = "e1", user: str = "u2", group: str = "g") -> dict:
    return {"groupId": group, "userId": user, "info": f"m{seq}", "ts": 1000 + seq, "id": f"{epoch}-{seq}", "seq": seq}


def opening(events: list[dict], seq: int, epoch: str = "e1", recovered: bool | None = None) -> str:
    data = {"list": events, "total": len(events), "seq": seq, "epoch": epoch}
    if recovered is not None:
        data["recovered"] = recovered
    return json.dumps(data)


class ScriptedNode:
    """Runs ``script(connection, number, query)`` for each WebSocket connection; remembers every query."""

    def __init__(self, script: Callable[[ServerConnection, int, dict[str, str]], Awaitable[None]],
                 refuse: Callable[[], int | None] = lambda: None) -> None:
        self.script = script
        self.refuse = refuse  # the HTTP status to refuse the next handshake with, or None
        self.queries: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.server = None

    async def __aenter__(self) -> "ScriptedNode":
        async def handler(connection: ServerConnection) -> None:
            query = {k: v[0] for k, v in parse_qs(urlsplit(connection.request.path).query).items()}
            self.queries.append(query)
            await self.script(connection, len(self.queries), query)

        def process_request(connection, request):
            self.paths.append(request.path)
            status = self.refuse()
            return None if status is None else connection.respond(status, "refused\n")

        self.server = await serve(handler, "127.0.0.1", 0, max_size=2**22, process_request=process_request)
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


async def take(chat, count: int) -> list:
    return [await asyncio.wait_for(chat.__anext__(), STEP_S) for _ in range(count)]


async def until_end(chat) -> BaseException:
    try:
        while True:
            await asyncio.wait_for(chat.__anext__(), STEP_S)
    except (StopAsyncIteration, Exception) as exc:  # noqa: BLE001 - the end is what the test looks at
        return exc


async def answer_each(connection: ServerConnection, epoch: str = "e1", first_seq: int = 1) -> None:
    """Play a node with ?ack=1: ack each frame (an error frame for "bad"), then echo it."""
    seq = first_seq
    async for text in connection:
        if text == "bad":
            await connection.send(json.dumps({"code": 413, "msg": "too large"}))
            continue
        await connection.send(json.dumps({"event": "ack", "id": f"{epoch}-{seq}", "seq": seq, "ts": 5000 + seq}))
        await connection.send(json.dumps({**message(seq, epoch, user="u1"), "info": text}))
        seq += 1


@pytest.mark.gen_test(timeout=20)
async def test_pipelined_sends_are_answered_in_order():
    async def script(connection, number, query):
        assert query.get("ack") == "1"
        await connection.send(opening([], 0))
        await answer_each(connection)

    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=FAST) as client:
        chat = await client.chat("g")
        results = await asyncio.gather(chat.send("a"), chat.send("bad"), chat.send("b"), return_exceptions=True)
        assert [type(r) for r in results] == [Message, SendError, Message]
        assert (results[0].info, results[0].seq, results[0].id) == ("a", 1, "e1-1")
        assert (results[2].info, results[2].seq) == ("b", 2)
        assert results[1].code == 413 and results[1].msg == "too large" and not results[1].maybe_stored
        events = await take(chat, 3)
        assert isinstance(events[0], Opened) and events[0].recovered is None and not events[0].resumed
        assert [e.info for e in events[1:]] == ["a", "b"]  # the echoes, as any message


@pytest.mark.gen_test(timeout=20)
async def test_garbage_from_the_node_is_skipped_and_counted():
    async def script(connection, number, query):
        await connection.send(opening([], 0))
        for frame in ("not json", b"\x00binary", "[1]", json.dumps(message(1, group="other")),
                      json.dumps({"event": "ack", "id": "x-1", "seq": 1, "ts": 1}),  # an ack of no send
                      json.dumps({"groupId": "g", "userId": "u", "info": 5, "ts": 1}), "440",
                      json.dumps({"event": "from-the-future"}), json.dumps(message(1))):
            await connection.send(frame)
        await connection.wait_closed()

    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=FAST) as client:
        chat = await client.chat("g")
        opened, first = await take(chat, 2)
        assert isinstance(opened, Opened) and first == Message("g", "u2", "m1", 1001, "e1-1", 1)
        assert chat.skipped_frames == 6


@pytest.mark.gen_test(timeout=20)
async def test_a_frame_over_the_bound_ends_the_stream_instead_of_looping():
    async def script(connection, number, query):
        await connection.send(opening([], 0))
        await connection.send(json.dumps({**message(1), "info": "x" * 5000}))
        await connection.wait_closed()

    options = StreamOptions(max_frame_bytes=4096, backoff=FAST.backoff)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        chat = await client.chat("g")
        await take(chat, 1)
        end = await until_end(chat)
        assert isinstance(end, PolicyViolation) and end.code == 1009, end
        assert "max_frame_bytes" in str(end)
        assert len(node.queries) == 1  # it did not reconnect to get the same frame again
        with pytest.raises(NotSent):
            await chat.send("after the end")


@pytest.mark.gen_test(timeout=20)
async def test_a_node_that_never_sends_its_opening_frame():
    async def script(connection, number, query):
        await connection.wait_closed()

    options = StreamOptions(open_timeout=0.5)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(Unreachable, match="no opening frame"):
            await client.chat("g")
        assert asyncio.get_running_loop().time() - started < 3


@pytest.mark.gen_test(timeout=20)
async def test_nothing_listens():
    async with ScriptedNode(lambda *a: asyncio.sleep(0)) as node:
        url = node.url
    async with Client(url, user_id="u1") as client:
        with pytest.raises(Unreachable):
            await client.chat("g")


@pytest.mark.gen_test(timeout=20)
async def test_resume_after_a_drop_sees_every_event_once_and_in_order():
    async def script(connection, number, query):
        if number == 1:
            await connection.send(opening([message(1), message(2)], 2))
            await connection.send(json.dumps(message(3)))
            await connection.recv()  # a send, never answered: the node goes away
            await connection.close(1001, "going away")
        else:
            assert (query.get("since"), query.get("epoch")) == ("3", "e1")
            # what a node that did not recover would list: the newest page, overlapping what was seen
            await connection.send(opening([message(2), message(3), message(4)], 4, recovered=True))
            await connection.send(json.dumps(message(4)))  # a repeat
            await connection.send(json.dumps(message(5)))
            await connection.wait_closed()

    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=FAST) as client:
        chat = await client.chat("g")
        events = await take(chat, 4)
        with pytest.raises(ConnectionLost) as lost:
            await chat.send("in flight")
        assert lost.value.maybe_stored
        events += await take(chat, 4)
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["Opened", "Message", "Message", "Message", "Disconnected", "Opened", "Message", "Message"]
        assert [e.seq for e in events if isinstance(e, Message)] == [1, 2, 3, 4, 5]
        assert events[4].code == 1001 and events[4].attempt == 1 and 0 <= events[4].retry_in <= 0.01
        assert events[5].resumed and events[5].recovered is True
        assert chat.position == ("e1", 5)


@pytest.mark.gen_test(timeout=20)
async def test_a_restarted_stream_is_reported_and_numbered_anew():
    async def script(connection, number, query):
        if number == 1:
            await connection.send(opening([message(7)], 7))
            await connection.close(1011, "restart")
        else:
            await connection.send(opening([message(1, "e2")], 1, "e2", recovered=False))
            await connection.send(json.dumps(message(8)))  # a straggler of the ended stream
            await connection.send(json.dumps(message(2, "e2")))
            await connection.wait_closed()

    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=FAST) as client:
        chat = await client.chat("g")
        events = await take(chat, 7)
        assert [type(e).__name__ for e in events] == [
            "Opened", "Message", "Disconnected", "Opened", "NotRecovered", "Message", "Message"]
        assert events[4] == NotRecovered("g", 7, "e1", "e2")
        assert [e.id for e in events if isinstance(e, Message)] == ["e1-7", "e2-1", "e2-2"]


@pytest.mark.gen_test(timeout=20)
async def test_a_final_close_ends_the_stream_with_a_typed_error_and_no_reconnect():
    async def script(connection, number, query):
        await connection.send(opening([], 0))
        await connection.send(json.dumps({"code": 503, "msg": "unsolicited"}))
        await asyncio.sleep(0.1)
        await connection.close(4403, "disconnected by the application")

    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=FAST) as client:
        chat = await client.chat("g")
        opened, notice = await take(chat, 2)
        assert notice == Notice(503, "unsolicited")
        end = await until_end(chat)
        assert isinstance(end, NotAllowed) and end.code == 4403 and end.reason == "disconnected by the application"
        await asyncio.sleep(0.2)
        assert len(node.queries) == 1
        assert chat.error is end


@pytest.mark.gen_test(timeout=20)
async def test_a_slow_consumer_is_resumed_without_loss_and_memory_stays_bounded():
    total = 100

    async def script(connection, number, query):
        since = int(query.get("since", 0))
        await connection.send(opening([message(s) for s in range(since + 1, since + 3)], since + 2,
                                      recovered=True if number > 1 else None))
        for seq in range(since + 3, total + 1):
            await connection.send(json.dumps(message(seq)))
        await connection.wait_closed()

    options = StreamOptions(queue_size=16, backoff=FAST.backoff)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        chat = await client.chat("g")
        await asyncio.sleep(0.3)  # not reading: the buffer fills
        assert len(chat._items) <= 16
        seen = []
        while len(seen) < total:
            event = await asyncio.wait_for(chat.__anext__(), STEP_S)
            assert len(chat._items) <= 16
            if isinstance(event, Message):
                seen.append(event.seq)
            await asyncio.sleep(0.001)
        assert seen == list(range(1, total + 1))
        assert len(node.queries) > 2  # it did go away and come back
        assert all("since" in q for q in node.queries[1:])


@pytest.mark.gen_test(timeout=20)
async def test_sends_wait_for_the_reconnection_and_fail_cleanly_after_close():
    async def script(connection, number, query):
        await connection.send(opening([], 0))
        if number == 1:
            await connection.close(1013, "try again later")
            return
        await answer_each(connection)

    options = StreamOptions(backoff=BackoffPolicy(base=0.3, cap=0.3), send_timeout=3.0)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        chat = await client.chat("g")
        await take(chat, 2)  # Opened, Disconnected
        stored = await chat.send("after the outage")
        assert stored.seq == 1 and len(node.queries) == 2
        await chat.close()
        with pytest.raises(NotSent):
            await chat.send("closed")
        remaining = [e async for e in chat]  # what was buffered, then the end
        assert all(not isinstance(e, Disconnected) for e in remaining)


@pytest.mark.gen_test(timeout=20)
async def test_refused_handshakes_an_overloaded_node_is_retried_a_wrong_address_is_final():
    statuses = iter([503, 404])

    async def script(connection, number, query):
        await connection.send(opening([], 0))
        await connection.close(1013, "try again later")

    async with ScriptedNode(script, refuse=lambda: next(statuses, None)) as node:
        async with Client(node.url, user_id="u 1", token="t/k", options=FAST) as client:
            with pytest.raises(Unreachable, match="HTTP 503"):  # the first connection is not retried
                await client.chat("g/1")
            with pytest.raises(FinalClose) as refused:
                await client.chat("g")
            assert refused.value.code == 404
            chat = await client.chat("g")  # no longer refused: opens, then 1013, then 1013 again...
            assert isinstance((await take(chat, 1))[0], Opened)
            disconnected = [e for e in await take(chat, 3) if isinstance(e, Disconnected)]
            assert [e.code for e in disconnected][:1] == [1013]
        assert node.paths[0] == "/group/chat/g%2F1/u%201/t%2Fk?ack=1"  # ids and token quoted into the path


@pytest.mark.gen_test(timeout=20)
async def test_the_group_list_keeps_the_newest_pushes_when_its_reader_falls_behind():
    async def script(connection, number, query):
        await connection.send(json.dumps({"code": 503, "msg": "storage unavailable, reconnect later"}))
        for total in range(40):
            await connection.send(json.dumps([{"groupId": "1", "newMessage": None, "total": total}]))
        await connection.send("{broken")
        await connection.wait_closed()

    options = StreamOptions(queue_size=16)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        listing = await client.group_list()
        await asyncio.sleep(0.3)
        events = [await asyncio.wait_for(listing.__anext__(), STEP_S) for _ in range(16)]
        assert all(isinstance(e, GroupList) for e in events)
        assert [e.groups[0].total for e in events] == list(range(24, 40))  # the newest 16 of 40
        assert listing.skipped_frames == 1 and len(node.queries) == 1


@pytest.mark.gen_test(timeout=20)
async def test_a_node_that_stops_answering_sends_is_left_and_resumed():
    async def script(connection, number, query):
        await connection.send(opening([], 0))
        if number == 1:
            async for _ in connection:  # takes the frames, answers none (pings still answered)
                pass
            return
        await answer_each(connection)

    options = StreamOptions(answer_timeout=0.5, backoff=FAST.backoff)
    async with ScriptedNode(script) as node, Client(node.url, user_id="u1", options=options) as client:
        chat = await client.chat("g")
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionLost, match="no answer within 0.5 s"):
            await chat.send("into the void")
        assert asyncio.get_running_loop().time() - started < 3
        assert (await chat.send("answered")).seq == 1
        assert len(node.queries) == 2


@pytest.mark.gen_test
async def test_a_send_woken_for_a_connection_lost_before_it_ran_waits_for_the_next_one():
    """Under load a connection may open and be lost again before a waiting send runs: that send must take the
    next connection, not fail with "not connected" (seen once in the rolling-restart test)."""
    stream = Stream("ws://127.0.0.1:9", StreamOptions())
    waiting = asyncio.ensure_future(stream.connection(5.0))
    await asyncio.sleep(0.01)  # the send waits
    first, second = object(), object()
    stream._ws = first
    stream._ready.set()  # opened ...
    stream._ws = None
    stream._ready.clear()  # ... and lost, before the waiter ran
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stream._ws = second
    stream._ready.set()
    assert await asyncio.wait_for(waiting, 1) is second
    assert await stream.connection(0.01) is second
    stream._ws = None
    stream._ready.clear()
    assert await stream.connection(0.05) is None  # nothing within the timeout
