"""The Sequencer forwards a group's events in seq order, once, and fills gaps from storage."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from fastim.domain.errors import StorageUnavailable
from fastim.domain.messages import Messages
from fastim.domain.model import Message
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.repositories import MemoryMessageRepository
from fastim.interfaces import metrics as metrics_module
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws import sequencer as sequencer_module
from fastim.interfaces.ws.sequencer import Sequencer


class Setup:
    def __init__(self, history_max: int = 0) -> None:
        self.clock = ManualClock()
        self.repository = MemoryMessageRepository(self.clock)  # announces to nobody: the test plays the channel
        self.messages = Messages(self.repository, self.clock, message_timeout=600, list_num=10,
                                 recall_time_limit=60, history_max=history_max)
        self.metrics = Metrics(object())
        self.forwarded: list = []
        self.sequencer = Sequencer(self.messages, lambda group, event: self.forwarded.append(event), self.metrics)

    async def stored(self, count: int, group: str = "g") -> list[Message]:
        return [await self.messages.post(group, "u", f"m{i}") for i in range(count)]

    def seqs(self) -> list[int | None]:
        return [event.seq for event in self.forwarded]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


@pytest.mark.gen_test
async def test_events_in_order_go_on_and_repeats_are_dropped():
    setup = Setup()
    events = await setup.stored(3)
    for event in (events[0], events[1], events[1], events[0], events[2]):
        setup.sequencer.accept("g", event)
    assert setup.seqs() == [1, 2, 3]


@pytest.mark.gen_test
async def test_a_gap_is_filled_from_storage_before_what_came_after_it():
    setup = Setup()
    events = await setup.stored(6)
    setup.sequencer.accept("g", events[0])
    setup.sequencer.accept("g", events[3])  # 2 and 3 were lost on the way
    setup.sequencer.accept("g", events[4])
    assert setup.seqs() == [1]
    await settle()
    assert setup.seqs() == [1, 2, 3, 4, 5, 6]  # the repair reads up to the newest stored
    setup.sequencer.accept("g", events[2])  # late copies of what the repair read: dropped
    setup.sequencer.accept("g", events[5])
    assert setup.seqs() == [1, 2, 3, 4, 5, 6]
    assert metrics_value(setup, "fastim_repaired_events_total") == 3  # 2, 3 and 6: not heard on the channel


@pytest.mark.gen_test
async def test_a_snapshot_baseline_catches_a_gap_before_the_first_event_heard():
    setup = Setup()
    events = await setup.stored(3)
    setup.sequencer.baseline("g", setup.repository._streams.get("g").epoch, 1)
    setup.sequencer.accept("g", events[2])
    await settle()
    assert setup.seqs() == [2, 3]


@pytest.mark.gen_test
async def test_a_new_epoch_starts_the_count_afresh_and_events_without_seq_go_on_as_they_come():
    setup = Setup()
    events = await setup.stored(3)
    setup.sequencer.accept("g", events[2])
    restarted = dataclasses.replace(events[0], id="0badc0de-1")
    setup.sequencer.accept("g", restarted)
    fast_im = Message("g", "7", "from java", 1)
    setup.sequencer.accept("g", fast_im)
    assert setup.forwarded == [events[2], restarted, fast_im]


@pytest.mark.gen_test
async def test_a_new_stream_heard_past_its_start_is_read_from_its_start():
    """Two nodes store a new group's first events; the second's announcement arrives first."""
    setup = Setup()
    setup.sequencer.baseline("g", "", 0)  # the opening found no stream
    events = await setup.stored(2)
    setup.sequencer.accept("g", events[1])
    assert setup.seqs() == []  # held: seq 1 is on its way or in storage
    setup.sequencer.accept("g", events[0])
    await settle()
    assert setup.forwarded == events


@pytest.mark.gen_test
async def test_what_storage_no_longer_holds_is_skipped_and_counted():
    setup = Setup(history_max=2)
    events = await setup.stored(6)  # storage keeps 5 and 6
    setup.sequencer.accept("g", events[0])
    setup.sequencer.accept("g", events[5])
    await settle()
    assert setup.seqs() == [1, 5, 6]
    assert metrics_value(setup, "fastim_unrecovered_events_total") == 3


@pytest.mark.gen_test
async def test_when_storage_does_not_answer_the_held_events_go_on_after_the_retries(monkeypatch):
    monkeypatch.setattr(sequencer_module, "REPAIR_RETRY_S", (0.0, 0.0))
    setup = Setup()
    events = await setup.stored(4)

    async def away(group_id, since):
        raise StorageUnavailable("redis is away")

    setup.sequencer.accept("g", events[0])
    monkeypatch.setattr(setup.messages, "tail", away)
    setup.sequencer.accept("g", events[3])
    await settle()
    assert setup.seqs() == [1, 4]


@pytest.mark.gen_test
async def test_a_repair_asked_after_an_outage_reads_what_the_channel_missed():
    setup = Setup()
    events = await setup.stored(2)
    setup.sequencer.accept("g", events[0])
    await setup.stored(2)  # 3 and 4 published while the broker was away
    setup.sequencer.repair("g")
    await settle()
    assert setup.seqs() == [1, 2, 3, 4]


@pytest.mark.gen_test
async def test_forgetting_a_group_stops_its_repair():
    setup = Setup()
    events = await setup.stored(3)
    setup.sequencer.accept("g", events[0])
    setup.sequencer.accept("g", events[2])
    setup.sequencer.forget("g")
    await settle()
    assert setup.seqs() == [1] and setup.sequencer.last("g") is None


def metrics_value(setup: Setup, name: str) -> float:
    for line in setup.metrics.exposition().decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)
