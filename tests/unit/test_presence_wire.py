"""Presence events on the wire: the codec, the frames chat sockets get, and their way through the Sequencer and Hub."""

from __future__ import annotations

import asyncio
import json

import pytest

from fastim.domain.codec import InvalidPayload, decode_event, encode_event
from fastim.domain.messages import Messages
from fastim.domain.model import PRESENCE_LISTED_MAX, Message, PresenceChanged, epoch_of
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import MemoryMessageRepository
from fastim.infrastructure.redis.payloads import group_event
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.frames import presence_frames
from fastim.interfaces.ws.hub import Batch, Hub

T0 = 1_700_000_000_000


# -- the codec -----------------------------------------------------------------------------------


def test_a_presence_event_round_trips_in_the_documented_shape():
    event = PresenceChanged("g1", ("u1", "ü2"), ("u3",), 7)
    text = encode_event(event)
    assert json.loads(text) == {"event": "presence", "groupId": "g1", "joined": ["u1", "ü2"], "left": ["u3"],
                                "online": 7}
    assert decode_event(text) == event
    assert epoch_of(event) is None
    # What the Redis scripts publish: the lists may be empty, or absent altogether.
    assert decode_event('{"event":"presence","groupId":"g1","online":3}') == PresenceChanged("g1", (), (), 3)


@pytest.mark.parametrize("payload", [
    {"event": "presence", "groupId": "g", "joined": "u1", "left": [], "online": 1},  # not a list
    {"event": "presence", "groupId": "g", "joined": [1], "left": [], "online": 1},  # not a string id
    {"event": "presence", "groupId": "g", "joined": ["a b"], "left": [], "online": 1},  # not an id
    {"event": "presence", "groupId": "g", "joined": ["x" * 129], "left": [], "online": 1},
    {"event": "presence", "groupId": "g", "joined": ["u"] * (PRESENCE_LISTED_MAX + 1), "left": [], "online": 1},
    {"event": "presence", "groupId": "g", "joined": ["u"] * 15, "left": ["v"] * 15, "online": 1},  # 30 in all
    {"event": "presence", "groupId": "g", "joined": [], "left": [], "online": -1},
    {"event": "presence", "groupId": "g", "joined": [], "left": [], "online": True},
    {"event": "presence", "groupId": "g", "joined": [], "left": [], "online": 1.5},
    {"event": "presence", "groupId": "g", "joined": [], "left": []},
    {"event": "presence", "joined": [], "left": [], "online": 1},
])
def test_a_malformed_presence_event_is_refused(payload):
    with pytest.raises(InvalidPayload):
        decode_event(json.dumps(payload))


def test_a_huge_list_is_refused_before_it_is_walked():
    payload = json.dumps({"event": "presence", "groupId": "g", "joined": ["u"] * 100_000, "left": [], "online": 1})
    with pytest.raises(InvalidPayload, match="at most"):
        decode_event(payload)


def test_a_presence_event_of_another_group_on_a_channel_is_dropped():
    payload = encode_event(PresenceChanged("other", ("u1",), (), 1))
    assert group_event("mq:g", "g", payload) is None
    assert group_event("mq:other", "other", payload) == PresenceChanged("other", ("u1",), (), 1)


# -- frames --------------------------------------------------------------------------------------


def frames_of(data: bytes) -> list[dict]:
    """The JSON of each unmasked, final text frame (as a server writes them) in ``data``."""
    found, at = [], 0
    while at < len(data):
        assert data[at] == 0x81, data[at:at + 2]
        size, at = data[at + 1], at + 2
        if size == 126:
            size, at = int.from_bytes(data[at:at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(data[at:at + 8], "big"), at + 8
        found.append(json.loads(data[at:at + size]))
        at += size
    return found


def test_few_changes_are_one_frame_each_leaves_first():
    event = PresenceChanged("g", ("u2", "u3"), ("u1",), 2)
    assert frames_of(presence_frames(event)) == [
        {"event": "leave", "groupId": "g", "userId": "u1"},
        {"event": "join", "groupId": "g", "userId": "u2"},
        {"event": "join", "groupId": "g", "userId": "u3"},
    ]


def test_a_crowd_is_one_summary_frame():
    assert frames_of(presence_frames(PresenceChanged("g", (), (), 5000))) == [
        {"event": "presence", "groupId": "g", "online": 5000}
    ]
    listed = tuple(f"u{i}" for i in range(PRESENCE_LISTED_MAX))
    assert len(frames_of(presence_frames(PresenceChanged("g", listed, (), 20)))) == PRESENCE_LISTED_MAX


# -- the Sequencer and the Hub -------------------------------------------------------------------


class LiveSocket:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write_frames(self, data: bytes) -> None:
        self.writes.append(data)

    def deliver(self, group_id, batch) -> None:
        self.write_frames(batch.data)


async def live_hub() -> tuple[Hub, MemoryBroker, Messages, Metrics, LiveSocket]:
    clock, broker = ManualClock(T0), MemoryBroker()
    messages = Messages(MemoryMessageRepository(clock, broker), clock, message_timeout=60, list_num=0,
                        recall_time_limit=60)
    metrics = Metrics(broker)
    hub = Hub(broker, messages, metrics, clock, max_window_s=0)
    socket = LiveSocket()
    await hub.join("g", socket)
    hub.go_live("g", socket)
    return hub, broker, messages, metrics, socket


async def turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


@pytest.mark.gen_test
async def test_presence_goes_on_at_once_while_a_gap_is_repaired_and_is_not_counted_as_a_stream_event():
    hub, broker, messages, metrics, socket = await live_hub()
    first = await messages.post("g", "u", "m1")
    await turns()
    # The channel skips seq 2: the sequencer holds seq 3 while it repairs; presence is not held.
    hidden = Message("g", "u", "m3", T0, seq=3, id=first.id.rsplit("-", 1)[0] + "-3")
    hub.sequencer.accept("g", hidden)
    hub.sequencer.accept("g", PresenceChanged("g", ("v",), (), 2))
    hub.sequencer.accept("g", PresenceChanged("g", ("v",), (), 2))  # no seq: never a duplicate to drop
    await turns()
    written = [frame.get("event") or frame["info"] for frame in frames_of(b"".join(socket.writes))]
    assert written == ["m1", "join", "join", "m3"]  # m3 waited for its repair; presence did not
    assert sample(metrics, "fastim_events_fanned_out_total") == 2  # m1 and m3: presence is no stream event
    assert sample(metrics, "fastim_deliveries_total") == 2
    await hub.close()


@pytest.mark.gen_test
async def test_a_batch_frames_a_presence_event_once_for_every_socket():
    batch = Batch()
    batch.add(Message("g", "u", "hello", T0, seq=1, id="e-1"))
    batch.add(PresenceChanged("g", ("a", "b"), (), 3))
    batch.seal()
    assert batch.presence == 1
    assert [frame["event"] if "event" in frame else frame["info"] for frame in frames_of(batch.data)] == [
        "hello", "join", "join"
    ]
