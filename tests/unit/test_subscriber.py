"""The pub/sub connection's byte stream: replies as Redis may cut them, and what a broken server may send."""

from __future__ import annotations

import asyncio

import hiredis
import pytest
import redis.exceptions

from fastim.infrastructure.redis.subscriber import Subscriber


class Heard:
    """The SubscriberEvents of a test: everything the subscriber reported, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def message(self, channel: str, data: str) -> None:
        self.calls.append(("message", channel, data))

    def confirmed(self, command: str, channel: str) -> None:
        self.calls.append(("confirmed", command, channel))

    def refused(self, command: str, channel: str, error: str) -> None:
        self.calls.append(("refused", command, channel, error))

    def dropped(self, channel: str) -> None:
        self.calls.append(("dropped", channel))

    def lost(self, reason: str) -> None:
        self.calls.append(("lost", reason))


class Transport:
    """What the subscriber writes, and whether it was aborted."""

    def __init__(self) -> None:
        self.written = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True


def resp(*items: str | int | list) -> bytes:
    """RESP2 of one array reply."""
    def one(item) -> bytes:
        if isinstance(item, int):
            return b":%d\r\n" % item
        if isinstance(item, list):
            return b"*%d\r\n" % len(item) + b"".join(one(part) for part in item)
        data = item.encode("utf-8")
        return b"$%d\r\n%s\r\n" % (len(data), data)

    return b"*%d\r\n" % len(items) + b"".join(one(item) for item in items)


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def subscriber(heard) -> tuple[Subscriber, Transport]:
    subscriber, transport = Subscriber(heard), Transport()
    subscriber.connection_made(transport)
    return subscriber, transport


def test_subscribes_are_written_one_command_per_channel_in_one_write(subscriber):
    subscriber, transport = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b"])
    assert transport.written == b"".join(hiredis.pack_command(("SUBSCRIBE", channel)) for channel in ("mq:a", "mq:b"))


def test_classic_channels_may_go_together_in_one_command_each_confirmed_in_turn(subscriber, heard):
    subscriber, transport = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b", "mq:c"], together=True)
    assert transport.written == hiredis.pack_command(("SUBSCRIBE", "mq:a", "mq:b", "mq:c"))
    subscriber.data_received(b"".join(resp("subscribe", f"mq:{c}", n) for n, c in enumerate("abc", 1)))
    assert heard.calls == [("confirmed", "SUBSCRIBE", f"mq:{c}") for c in "abc"]
    assert not subscriber.stalled(0)


def test_one_error_refuses_every_channel_of_its_command_and_no_other(subscriber, heard):
    subscriber, _ = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b"], together=True)
    subscriber.send("SUBSCRIBE", ["mq:c", "mq:d"])  # one command each
    subscriber.data_received(b"-NOPERM this user has no permissions to access the 'mq:b' channel\r\n"
                             b"-MOVED 1 127.0.0.1:7000\r\n" + resp("subscribe", "mq:d", 1))
    assert [call[:3] for call in heard.calls] == [
        ("refused", "SUBSCRIBE", "mq:a"), ("refused", "SUBSCRIBE", "mq:b"), ("refused", "SUBSCRIBE", "mq:c"),
        ("confirmed", "SUBSCRIBE", "mq:d"),
    ]


def test_a_reply_cut_anywhere_is_reported_once_whole(heard):
    stream = resp("subscribe", "mq:g", 1) + resp("message", "mq:g", "héllo wörld") + resp("message", "mq:g", "2")
    for cut in range(len(stream) + 1):
        heard.calls.clear()
        subscriber, transport = Subscriber(heard), Transport()
        subscriber.connection_made(transport)
        subscriber.send("SUBSCRIBE", ["mq:g"])
        subscriber.data_received(stream[:cut])
        subscriber.data_received(stream[cut:])
        assert heard.calls == [("confirmed", "SUBSCRIBE", "mq:g"), ("message", "mq:g", "héllo wörld"),
                               ("message", "mq:g", "2")], cut


def test_a_reply_fed_byte_by_byte_is_reported_once_whole(subscriber, heard):
    subscriber, _ = subscriber
    for byte in resp("message", "mq:g", "x" * 300):
        subscriber.data_received(bytes([byte]))
    assert heard.calls == [("message", "mq:g", "x" * 300)]


def test_every_reply_of_one_read_is_reported_in_the_order_redis_sent_them(subscriber, heard):
    subscriber, _ = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b"])
    replies = [resp("subscribe", "mq:a", 1)]
    replies += [resp("message", "mq:a", f"a{i}") for i in range(500)]
    replies += [resp("subscribe", "mq:b", 2)]
    replies += [resp("message", "mq:b" if i % 2 else "mq:a", f"m{i}") for i in range(500)]
    subscriber.data_received(b"".join(replies))
    assert heard.calls == [
        ("confirmed", "SUBSCRIBE", "mq:a"),
        *[("message", "mq:a", f"a{i}") for i in range(500)],
        ("confirmed", "SUBSCRIBE", "mq:b"),
        *[("message", "mq:b" if i % 2 else "mq:a", f"m{i}") for i in range(500)],
    ]


def test_an_error_answers_the_oldest_command_waiting(subscriber, heard):
    subscriber, _ = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b"])
    subscriber.data_received(b"-NOPERM no permission\r\n" + resp("subscribe", "mq:b", 1))
    assert heard.calls == [("refused", "SUBSCRIBE", "mq:a", "NOPERM no permission"), ("confirmed", "SUBSCRIBE", "mq:b")]


def test_an_unreadable_stream_closes_the_connection_and_stops_reading_it(subscriber, heard):
    subscriber, transport = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a"])
    subscriber.data_received(resp("message", "mq:a", "before") + b"?garbage\r\n" + resp("message", "mq:a", "after"))
    assert heard.calls[0] == ("message", "mq:a", "before")
    assert [call[0] for call in heard.calls[1:]] == ["lost"] and "unreadable" in heard.calls[1][1]
    assert transport.aborted and not subscriber.is_open
    subscriber.data_received(resp("message", "mq:a", "later"))  # a read already under way: ignored
    subscriber.connection_lost(None)  # and the transport's own report: once is enough
    assert len(heard.calls) == 2


@pytest.mark.parametrize("reply", [
    b"+OK\r\n", b":42\r\n", b"$-1\r\n", b"*-1\r\n", b"*0\r\n", resp("message", "mq:a"),
    resp(["message"], "mq:a", "x"), resp("message", ["mq:a"], "x"), resp("message", "mq:a", ["x"]),
    resp("message", 1, 2), resp("subscribe", ["mq:a"], 1), resp("pong", ""), resp("anything", "at", "all"),
])
def test_replies_of_any_other_shape_are_ignored(subscriber, heard, reply):
    subscriber, transport = subscriber
    subscriber.send("SUBSCRIBE", ["mq:a"])
    subscriber.data_received(reply + resp("subscribe", "mq:a", 1) + resp("message", "mq:a", "x"))
    assert heard.calls == [("confirmed", "SUBSCRIBE", "mq:a"), ("message", "mq:a", "x")]
    assert not transport.aborted


def test_bytes_that_are_not_utf8_are_replaced_not_fatal(subscriber, heard):
    subscriber, _ = subscriber
    subscriber.data_received(b"*3\r\n$7\r\nmessage\r\n$4\r\nmq:a\r\n$2\r\n\xff\xfe\r\n")
    assert heard.calls == [("message", "mq:a", "\ufffd\ufffd")]


def test_a_command_unanswered_for_the_timeout_is_stalled_and_an_answer_restarts_the_clock(subscriber, monkeypatch):
    import fastim.infrastructure.redis.subscriber as module

    now = [1000.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    subscriber, _ = subscriber
    assert not subscriber.stalled(5)  # nothing waits
    subscriber.send("SUBSCRIBE", ["mq:a", "mq:b"])
    now[0] += 4
    subscriber.data_received(resp("subscribe", "mq:a", 1))
    now[0] += 4
    assert not subscriber.stalled(5)  # mq:b waited 8 s, but Redis answered 4 s ago
    now[0] += 2
    assert subscriber.stalled(5)
    subscriber.data_received(resp("subscribe", "mq:b", 2))
    now[0] += 60
    assert not subscriber.stalled(5)


@pytest.mark.gen_test
async def test_the_login_is_answered_before_anything_else_and_its_error_raised(heard):
    subscriber, transport = Subscriber(heard), Transport()
    subscriber.connection_made(transport)
    logging_in = asyncio.ensure_future(subscriber._log_in([("AUTH", "alice", "secret")]))
    await asyncio.sleep(0)
    assert transport.written == hiredis.pack_command(("AUTH", "alice", "secret"))
    subscriber.data_received(b"-WRONGPASS invalid username-password pair\r\n")
    with pytest.raises(Exception, match="WRONGPASS"):
        await logging_in
    assert heard.calls == []  # a login's answer is not a subscription's


@pytest.mark.gen_test
async def test_a_connection_lost_while_logging_in_fails_the_login(heard):
    subscriber, transport = Subscriber(heard), Transport()
    subscriber.connection_made(transport)
    logging_in = asyncio.ensure_future(subscriber._log_in([("AUTH", "secret")]))
    await asyncio.sleep(0)
    subscriber.data_received(b"+O")  # half an answer, then the connection goes
    subscriber.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(redis.exceptions.ConnectionError, match="reset by peer"):
        await logging_in
