"""Opening frames: resumes recovered when storage holds every missed event, reads shared by a group's sockets."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.messages import Messages
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.repositories import MemoryMessageRepository
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.recovery import Recovery
from fastim.interfaces.ws.sequencer import Sequencer


class CountingRepository(MemoryMessageRepository):
    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.tails = 0
        self.pages = 0

    async def tail(self, group_id, since, limit):
        self.tails += 1
        await asyncio.sleep(0.01)  # a storage round trip, during which other sockets come
        return await super().tail(group_id, since, limit)

    async def newest(self, group_id, count):
        self.pages += 1
        await asyncio.sleep(0.01)
        return await super().newest(group_id, count)


@pytest.fixture
def setup():
    clock = ManualClock()
    repository = CountingRepository(clock)
    messages = Messages(repository, clock, message_timeout=600, list_num=3, recall_time_limit=60, recover_max=50)
    metrics = Metrics(object())
    forwarded = []
    sequencer = Sequencer(messages, lambda group, event: forwarded.append(event), metrics)
    return repository, messages, sequencer, Recovery(messages, sequencer, metrics)


@pytest.mark.gen_test
async def test_a_resume_lists_every_event_after_since_and_says_recovered(setup):
    repository, messages, _, recovery = setup
    sent = [await messages.post("g", "u", f"m{i}") for i in range(6)]
    recall = await messages.recall("g", "u", message_id=sent[4].id)
    epoch = sent[0].id.split("-")[0]
    opening = await recovery.opening("g", 2, epoch)
    assert opening.recovered is True and opening.seq == 7 and opening.epoch == epoch and opening.total == 5
    assert opening.events == [sent[2], sent[3], sent[5], recall]
    fresh = await recovery.opening("g", None, None)
    assert fresh.recovered is None and fresh.events == [sent[2], sent[3], sent[5]]


@pytest.mark.gen_test
@pytest.mark.parametrize("since,epoch", [(2, "0badc0de"), (2, None), (9, "own"), (0, None)])
async def test_a_resume_that_cannot_be_whole_gets_the_newest_page(setup, since, epoch):
    repository, messages, _, recovery = setup
    sent = [await messages.post("g", "u", f"m{i}") for i in range(60)]  # more than recover_max after 0
    opening = await recovery.opening("g", since, sent[0].id.split("-")[0] if epoch == "own" else epoch)
    assert opening.recovered is False and opening.events == sent[-3:]


@pytest.mark.gen_test
async def test_the_sockets_of_a_group_that_resume_together_share_one_read(setup):
    repository, messages, _, recovery = setup
    sent = [await messages.post("g", "u", f"m{i}") for i in range(5)]
    epoch = sent[0].id.split("-")[0]
    openings = await asyncio.gather(*(recovery.opening("g", 3, epoch) for _ in range(100)))
    assert repository.tails == 1
    assert all(o.recovered and [e.seq for e in o.events] == [4, 5] for o in openings)
    later = await recovery.opening("g", 4, epoch)  # a newer since is served by the same read
    assert [e.seq for e in later.events] == [5] and repository.tails == 1
    older = await recovery.opening("g", 1, epoch)  # an older one needs a read of its own
    assert [e.seq for e in older.events] == [2, 3, 4, 5] and repository.tails == 2


@pytest.mark.gen_test
async def test_a_shared_read_older_than_what_the_socket_was_forwarded_is_not_used(setup):
    repository, messages, sequencer, recovery = setup
    sent = [await messages.post("g", "u", f"m{i}") for i in range(3)]
    first = await recovery.opening("g", None, None)
    assert first.seq == 3 and repository.pages == 1
    newer = await messages.post("g", "u", "newer")
    sequencer.accept("g", newer)  # the Hub forwarded seq 4 before the next socket joined
    second = await recovery.opening("g", None, None)
    assert repository.pages == 2 and second.seq == 4 and second.events[-1] == newer


@pytest.mark.gen_test
async def test_a_group_the_node_left_and_joined_again_is_read_afresh(setup):
    """A finished read is shared only while the node follows the stream: after leaving, events came unseen."""
    repository, messages, sequencer, recovery = setup
    first = await recovery.opening("g", None, None)  # no stream yet
    assert (first.seq, first.epoch) == (0, "")
    sequencer.forget("g")  # the group's last socket left
    sent = await messages.post("g", "u", "while nobody here listened")
    again = await recovery.opening("g", None, None)  # within FRESH_S of the first read
    assert (again.seq, again.epoch, again.events) == (1, sent.id.split("-")[0], [sent])
    assert repository.pages == 2


@pytest.mark.parametrize("query", [
    {"since": "9" * 100_000},  # huge: refused on its length, never converted
    {"since": "٣"},  # a digit, but not an ASCII one
    {"since": "-1"},
    {"since": "1e9"},
    {"since": str(2**53)},
    {"since": "1", "epoch": "x" * 65},
    {"since": "1", "epoch": "ab\ncd"},
    {"since": "1", "epoch": "\x00"},
])
def test_a_hostile_resume_query_is_refused_whole(query):
    from fastim.interfaces.ws.chat import parse_resume

    assert parse_resume(query) is None


def test_a_well_formed_resume_query_is_taken():
    from fastim.interfaces.ws.chat import parse_resume

    assert parse_resume({"since": "42", "epoch": "0a1b2c3d"}) == (42, "0a1b2c3d")
    assert parse_resume({"since": "0", "epoch": ""}) == (0, None)
    assert parse_resume({}) == (None, None)


class LateReplies(MemoryMessageRepository):
    """Reads storage at once and answers 20 ms later: a reply still on its way while events are published."""

    async def newest(self, group_id, count):
        page = await super().newest(group_id, count)
        await asyncio.sleep(0.02)
        return page


@pytest.mark.gen_test
@pytest.mark.parametrize("stored_before_read", [0, 2])
async def test_events_published_between_the_read_and_the_first_one_heard_are_in_the_opening(stored_before_read):
    """The node hears its first event of the group (seq 5) while the socket's read (at seq 0 or 2) is on its
    way back, and not the ones between: its subscription took effect late. The opening brings them."""
    clock = ManualClock()
    messages = Messages(LateReplies(clock), clock, message_timeout=600, list_num=3, recall_time_limit=60,
                        recover_max=50)
    metrics = Metrics(object())
    forwarded = []
    sequencer = Sequencer(messages, lambda group, event: forwarded.append(event), metrics)
    recovery = Recovery(messages, sequencer, metrics)
    sent = [await messages.post("g", "u", f"m{i}") for i in range(stored_before_read)]
    read = asyncio.ensure_future(recovery.opening("g", None, None))
    await asyncio.sleep(0.005)  # read in storage, its reply on the way
    sent += [await messages.post("g", "u", f"m{i}") for i in range(stored_before_read, 5)]
    sequencer.accept("g", sent[4])  # the first event the node hears: seq 5
    opening = await read
    assert opening.seq == 4 and opening.epoch == sent[0].id.split("-")[0]
    assert [e.seq for e in opening.events] == [1, 2, 3, 4]  # the newest stored before the read, then the bridge
    assert forwarded == [sent[4]]  # live from seq 5 on: the socket's floor (4) lets it through, once
    later = await recovery.opening("g", None, None)  # a read that covers the first event heard needs no bridge
    assert later.seq == 5 and [e.seq for e in later.events] == [3, 4, 5]
