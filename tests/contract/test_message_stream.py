"""Contract of the group stream the MessageRepository keeps: seq, epoch, ids, recall events, tails."""

from __future__ import annotations

import re

import pytest

from fastim.domain.errors import RecallWindowExpired, StorageUnavailable
from fastim.domain.model import Message, Recall, RecallTarget
from tests.contract.conftest import wait_for, wait_subscribed

T0 = 1_648_368_380_132
WINDOW = 200


def msg(user: str, ts: int, info: str = "hi", group: str = "g") -> Message:
    return Message(group_id=group, user_id=user, info=info, ts=ts)


async def store(backend, message: Message, ttl: int = 600, max_length: int = 0) -> Message:
    return (await backend.messages.append(message, ttl, max_length)).message


async def recall(backend, user: str, ts: int | None = None, message_id: str | None = None, group: str = "g",
                 keep: int = 100, not_before_ms: int = 0) -> Recall | None:
    target = RecallTarget(group, user, ts=ts, id=message_id, not_before_ms=not_before_ms)
    return await backend.messages.remove(target, WINDOW, 600, keep)


@pytest.mark.gen_test
async def test_every_event_takes_the_next_seq_of_one_epoch_and_a_message_id_holds_both(backend):
    assert (await backend.messages.newest("g", 0)).seq == 0
    first = await store(backend, msg("u", T0, "a"))
    second = await store(backend, msg("u", T0, "b"))
    removed = await recall(backend, "u", ts=T0)
    third = await store(backend, msg("v", T0 + 1, "c"))
    page = await backend.messages.newest("g", 10)
    epoch = page.epoch
    assert re.fullmatch(r"[0-9a-f]{8}", epoch)
    assert (first.seq, second.seq, removed.seq, third.seq, page.seq) == (1, 2, 3, 4, 4)
    assert (first.id, second.id, third.id) == (f"{epoch}-1", f"{epoch}-2", f"{epoch}-4")
    assert removed == Recall("g", "u", T0, id=second.id, seq=3, epoch=epoch)
    assert page.messages == [first, third]


@pytest.mark.gen_test
async def test_groups_have_streams_of_their_own(backend):
    await store(backend, msg("u", T0, group="a"))
    other = await store(backend, msg("u", T0, group="b"))
    assert other.seq == 1
    assert (await backend.messages.newest("a", 0)).epoch != (await backend.messages.newest("b", 0)).epoch


@pytest.mark.gen_test
async def test_storing_announces_exactly_what_was_stored_in_seq_order(backend):
    broker = backend.new_broker()
    heard = []
    await broker.subscribe("g", lambda group_id, event: heard.append(event))
    await wait_subscribed(backend, "g")
    stored = [await store(backend, msg("u", T0 + i, f"m{i}")) for i in range(3)]
    removed = await recall(backend, "u", ts=T0 + 1)
    await wait_for(lambda: len(heard) == 4)
    assert heard == [*stored, removed]


@pytest.mark.gen_test
async def test_the_tail_holds_the_events_after_a_seq_recall_events_included(backend):
    stored = [await store(backend, msg("u", T0 + i, f"m{i}")) for i in range(6)]
    removed = await recall(backend, "u", ts=T0 + 4)  # seq 7, recalling seq 5
    later = await store(backend, msg("v", T0 + 9, "later"))  # seq 8
    tail = await backend.messages.tail("g", 3, 100)
    assert tail.complete and tail.seq == 8 and tail.total == 6
    assert tail.events == [stored[3], stored[5], removed, later]  # seq 4, 6, 7, 8: 5 was recalled
    assert (await backend.messages.tail("g", 8, 100)).events == []
    assert (await backend.messages.tail("g", 8, 100)).complete


@pytest.mark.gen_test
async def test_a_tail_is_not_complete_past_its_limit_trimmed_or_ahead_of_the_stream(backend):
    for i in range(10):
        await store(backend, msg("u", T0 + i), max_length=4)  # the list keeps seq 7..10
    too_far = await backend.messages.tail("g", 2, 5)
    assert not too_far.complete and too_far.events == [] and too_far.seq == 10
    trimmed = await backend.messages.tail("g", 4, 100)
    assert not trimmed.complete and [e.seq for e in trimmed.events] == [7, 8, 9, 10]
    kept = await backend.messages.tail("g", 6, 100)
    assert kept.complete and [e.seq for e in kept.events] == [7, 8, 9, 10]
    assert not (await backend.messages.tail("g", 11, 100)).complete
    assert (await backend.messages.tail("empty", 0, 100)).complete
    assert not (await backend.messages.tail("empty", 3, 100)).complete


@pytest.mark.gen_test
async def test_only_the_newest_recall_events_are_kept(backend):
    for i in range(4):
        await store(backend, msg("u", T0 + i))
    for i in range(4):
        await recall(backend, "u", ts=T0 + i, keep=2)
    assert not (await backend.messages.tail("g", 4, 100)).complete  # the first two recalls are gone
    assert [e.seq for e in (await backend.messages.tail("g", 6, 100)).events] == [7, 8]


@pytest.mark.gen_test(timeout=20)
async def test_an_expired_stream_restarts_with_a_new_epoch(backend):
    first = await store(backend, msg("u", T0), ttl=1)
    old_epoch = (await backend.messages.newest("g", 0)).epoch
    await backend.elapse(2.2)
    again = await store(backend, msg("u", T0 + 1))
    page = await backend.messages.newest("g", 10)
    assert again.seq == 1 and page.epoch != old_epoch and again.id != first.id


@pytest.mark.gen_test
async def test_recall_by_id_takes_that_message_only_and_only_the_authors(backend):
    twins = [await store(backend, msg("u", T0, f"twin {i}")) for i in range(5)]
    assert len({twin.id for twin in twins}) == 5
    assert await recall(backend, "someone-else", message_id=twins[2].id) is None
    assert await recall(backend, "u", message_id="deadbeef-3") is None  # another epoch
    assert await recall(backend, "u", message_id="not an id") is None
    removed = await recall(backend, "u", message_id=twins[2].id)
    assert removed.id == twins[2].id
    assert [m.info for m in (await backend.messages.newest("g", 10)).messages] == [
        "twin 0", "twin 1", "twin 3", "twin 4"]
    assert await recall(backend, "u", message_id=twins[2].id) is None  # once


@pytest.mark.gen_test
async def test_a_message_older_than_the_window_is_not_recalled(backend):
    sent = await store(backend, msg("u", T0))
    with pytest.raises(RecallWindowExpired):
        await recall(backend, "u", message_id=sent.id, not_before_ms=T0 + 1)
    with pytest.raises(RecallWindowExpired):
        await recall(backend, "u", ts=T0, not_before_ms=T0 + 1)
    assert (await backend.messages.newest("g", 10)).messages == [sent]


@pytest.mark.gen_test
async def test_find_gives_the_stored_copy_of_a_draft(backend):
    draft = msg("u", T0, "the text")
    stored = await store(backend, draft)
    assert await backend.messages.find(draft, WINDOW) == stored
    assert await backend.messages.find(msg("u", T0, "another text"), WINDOW) is None
    assert await backend.messages.find(msg("u", T0 + 1, "the text"), WINDOW) is None


@pytest.mark.gen_test
@pytest.mark.parametrize("backend", ["fakeredis", pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_an_append_that_reaches_redis_after_its_deadline_is_not_stored(backend, monkeypatch):
    from fastim.infrastructure.redis import repositories

    monkeypatch.setattr(repositories, "APPEND_DEADLINE_MS", -60_000)  # as if it had waited a minute in a queue
    with pytest.raises(StorageUnavailable, match="too late"):
        await backend.messages.append(msg("u", T0), 600)
    assert (await backend.messages.newest("g", 10)).total == 0
    assert (await backend.messages.newest("g", 0)).seq == 0


@pytest.mark.gen_test
@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_a_node_whose_clock_is_off_still_stores_its_first_append(backend, monkeypatch):
    import time

    behind_s = 60.0  # this node's clock a minute behind Redis's: deadlines are stated in Redis's
    real_time, real_time_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() - behind_s)
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() - int(behind_s * 1e9))
    stored = await store(backend, msg("u", T0, "first of a new connection"))
    assert stored.seq == 1


@pytest.mark.gen_test
@pytest.mark.parametrize("text", ["nul \x00 inside", "\U0001f600" * 300, "'); DROP TABLE fastim_messages; --", "\ufeff\r\n"])
async def test_any_text_a_client_sends_is_stored_and_read_back_as_sent(backend, text):
    """Message text is the client's, byte for byte: NUL (which PostgreSQL's TEXT refuses), astral
    characters, SQL-looking text."""
    stored = (await backend.messages.append(Message("hostile", "u", text, T0), 600)).message
    page = await backend.messages.newest("hostile", 5)
    assert [message.info for message in page.messages] == [text]
    assert await backend.messages.find(Message("hostile", "u", text, T0), 10) == stored
