"""Contract of MessageRepository, run against every backend."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.model import GroupSummary, Message, RecallTarget

T0 = 1_648_368_380_132
LIMIT = 1000  # the most messages a range returns, in the tests that are not about it
WINDOW = 200  # how far an anchor is searched, in the tests that are not about it


def msg(user: str, ts: int, info: str = "hi", group: str = "1") -> Message:
    return Message(group_id=group, user_id=user, info=info, ts=ts)


async def store(backend, message: Message, ttl: int = 600, max_length: int = 0) -> Message:
    """Append ``message``; the stored copy (with seq and id)."""
    return (await backend.messages.append(message, ttl, max_length)).message


async def fill(backend, count: int, group: str = "1", ttl: int = 600) -> list[Message]:
    return [await store(backend, msg(str(i % 3), T0 + i, f"m{i}", group), ttl) for i in range(count)]


@pytest.mark.gen_test
async def test_append_returns_the_stored_message_and_the_new_length_and_newest_is_oldest_first(backend):
    assert (await backend.messages.append(msg("1", T0, "a"), 600)).total == 1
    assert (await backend.messages.append(msg("2", T0 + 1, "b"), 600)).total == 2
    appended = await backend.messages.append(msg("1", T0 + 2, "c"), 600)
    assert appended.total == 3
    page = await backend.messages.newest("1", 2)
    assert [m.info for m in page.messages] == ["b", "c"]
    assert page.total == 3
    assert page.messages[-1] == appended.message


@pytest.mark.gen_test
async def test_newest_of_an_unknown_group_is_empty(backend):
    page = await backend.messages.newest("nope", 50)
    assert page.messages == [] and page.total == 0


@pytest.mark.gen_test
async def test_newest_zero_gives_no_messages_but_the_total(backend):
    await fill(backend, 5)
    page = await backend.messages.newest("1", 0)
    assert page.messages == [] and page.total == 5


@pytest.mark.gen_test
async def test_newest_more_than_stored_gives_all(backend):
    messages = await fill(backend, 4)
    page = await backend.messages.newest("1", 50)
    assert page.messages == messages and page.total == 4


@pytest.mark.gen_test
async def test_messages_round_trip_unicode_and_quotes(backend):
    message = await store(backend, msg("7", T0, 'héllo "世界" \\ <b>\n😀'))
    assert message.info == 'héllo "世界" \\ <b>\n😀'
    assert (await backend.messages.newest("1", 1)).messages == [message]


@pytest.mark.gen_test
async def test_append_trims_to_max_length_in_the_same_call(backend):
    messages = [msg("1", T0 + i, f"m{i}") for i in range(5)]
    for index, message in enumerate(messages):
        appended = await backend.messages.append(message, 600, max_length=3)
        messages[index], total = appended.message, appended.total
    assert total == 3
    page = await backend.messages.newest("1", 10)
    assert page.messages == messages[-3:] and page.total == 3


@pytest.mark.gen_test
async def test_groups_are_separate(backend):
    await backend.messages.append(msg("1", T0, "a", group="1"), 600)
    await backend.messages.append(msg("1", T0, "b", group="2"), 600)
    assert [m.info for m in (await backend.messages.newest("2", 5)).messages] == ["b"]


@pytest.mark.gen_test(timeout=20)
async def test_the_list_expires_ttl_after_its_last_message(backend):
    await backend.messages.append(msg("1", T0, "a"), 1)
    await backend.elapse(0.6)
    await backend.messages.append(msg("1", T0 + 1, "b"), 1)  # renews the TTL of the whole list
    await backend.elapse(0.6)
    assert (await backend.messages.newest("1", 5)).total == 2
    await backend.elapse(1.1)
    assert (await backend.messages.newest("1", 5)).total == 0


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "start,end,expected",
    [
        (0, -1, [0, 1, 2, 3, 4]),
        (0, 1, [0, 1]),
        (1, 3, [1, 2, 3]),
        (-2, -1, [3, 4]),
        (-100, 1, [0, 1]),
        (3, 100, [3, 4]),
        (3, 1, []),
        (5, 9, []),
        (-1, -2, []),
        (0, 0, [0]),
    ],
)
async def test_range_has_lrange_semantics(backend, start, end, expected):
    messages = await fill(backend, 5)
    assert await backend.messages.range("1", start, end, LIMIT) == [messages[i] for i in expected]


@pytest.mark.gen_test
async def test_range_of_an_unknown_group_is_empty(backend):
    assert await backend.messages.range("nope", 0, -1, LIMIT) == []


@pytest.mark.gen_test
async def test_before_returns_exactly_count_messages_oldest_first(backend):
    messages = await fill(backend, 10)
    anchor = messages[7]
    assert await backend.messages.before("1", anchor.user_id, anchor.ts, 4, WINDOW) == messages[3:7]


@pytest.mark.gen_test
async def test_before_the_first_message_is_empty(backend):
    messages = await fill(backend, 5)
    first = messages[0]
    assert await backend.messages.before("1", first.user_id, first.ts, 4, WINDOW) == []


@pytest.mark.gen_test
async def test_before_returns_fewer_when_fewer_exist(backend):
    messages = await fill(backend, 5)
    anchor = messages[2]
    assert await backend.messages.before("1", anchor.user_id, anchor.ts, 10, WINDOW) == messages[:2]


@pytest.mark.gen_test
async def test_before_with_count_zero_is_empty(backend):
    messages = await fill(backend, 5)
    assert await backend.messages.before("1", messages[3].user_id, messages[3].ts, 0, WINDOW) == []


@pytest.mark.gen_test
async def test_before_an_unknown_anchor_is_none(backend):
    messages = await fill(backend, 5)
    assert await backend.messages.before("1", "nobody", messages[3].ts, 2, WINDOW) is None
    assert await backend.messages.before("1", messages[3].user_id, T0 - 1, 2, WINDOW) is None
    assert await backend.messages.before("nope", "1", T0, 2, WINDOW) is None


@pytest.mark.gen_test
async def test_before_matches_the_author_not_only_the_time(backend):
    await backend.messages.append(msg("1", T0, "a"), 600)
    await backend.messages.append(msg("2", T0 + 5, "b"), 600)
    await backend.messages.append(msg("3", T0 + 5, "c"), 600)
    assert [m.info for m in await backend.messages.before("1", "2", T0 + 5, 5, WINDOW)] == ["a"]
    assert [m.info for m in await backend.messages.before("1", "3", T0 + 5, 5, WINDOW)] == ["a", "b"]


@pytest.mark.gen_test
async def test_before_ignores_the_time_appearing_inside_other_text(backend):
    await backend.messages.append(msg("1", T0, "a"), 600)
    await backend.messages.append(msg("2", T0 + 1, f"quoting {T0 + 9}"), 600)
    await backend.messages.append(msg("2", T0 + 9, "anchor"), 600)
    assert [m.info for m in await backend.messages.before("1", "2", T0 + 9, 5, WINDOW)] == ["a", f"quoting {T0 + 9}"]


@pytest.mark.gen_test(timeout=30)
async def test_before_finds_an_anchor_deep_in_a_long_list(backend):
    messages = await fill(backend, 700)
    anchor = messages[130]
    assert await backend.messages.before("1", anchor.user_id, anchor.ts, 100, WINDOW) == messages[30:130]
    newest = messages[-1]
    assert await backend.messages.before("1", newest.user_id, newest.ts, 3, WINDOW) == messages[-4:-1]


@pytest.mark.gen_test
async def test_remove_takes_out_exactly_that_message(backend):
    messages = await fill(backend, 5)
    target = messages[2]
    recall = await backend.messages.remove(RecallTarget("1", target.user_id, ts=target.ts), WINDOW, 600, 100)
    assert (recall.user_id, recall.ts, recall.id) == (target.user_id, target.ts, target.id)
    page = await backend.messages.newest("1", 10)
    assert page.messages == messages[:2] + messages[3:] and page.total == 4


@pytest.mark.gen_test
async def test_remove_of_an_unknown_message_is_none_and_keeps_the_list(backend):
    messages = await fill(backend, 3)
    assert await backend.messages.remove(RecallTarget("1", "nobody", ts=messages[1].ts), WINDOW, 600, 100) is None
    assert await backend.messages.remove(RecallTarget("nope", "1", ts=T0), WINDOW, 600, 100) is None
    assert (await backend.messages.newest("1", 10)).messages == messages


@pytest.mark.gen_test
async def test_remove_of_a_same_millisecond_duplicate_takes_the_newest(backend):
    await backend.messages.append(msg("1", T0, "first"), 600)
    second = await store(backend, msg("1", T0, "second"))
    removed = await backend.messages.remove(RecallTarget("1", "1", ts=T0), WINDOW, 600, 100)
    assert removed.id == second.id
    assert [m.info for m in (await backend.messages.newest("1", 10)).messages] == ["first"]


@pytest.mark.gen_test
async def test_remove_of_the_last_message_empties_the_group(backend):
    await backend.messages.append(msg("1", T0), 600)
    await backend.messages.remove(RecallTarget("1", "1", ts=T0), WINDOW, 600, 100)
    assert await backend.messages.summaries(["1"]) == [GroupSummary("1", None, 0)]


@pytest.mark.gen_test
async def test_summaries_give_newest_and_total_in_the_given_order(backend):
    await backend.messages.append(msg("1", T0, "a", group="g1"), 600)
    b = await store(backend, msg("2", T0 + 1, "b", group="g1"))
    c = await store(backend, msg("3", T0 + 2, "c", group="g2"))
    summaries = await backend.messages.summaries(["g2", "empty", "g1"])
    assert summaries == [GroupSummary("g2", c, 1), GroupSummary("empty", None, 0), GroupSummary("g1", b, 2)]


@pytest.mark.gen_test
@pytest.mark.parametrize(
    "start,end,limit,expected",
    [(0, -1, 3, [0, 1, 2]), (-4, -1, 2, [6, 7]), (2, 100, 1, [2]), (-100, 100, 4, [0, 1, 2, 3]), (8, 9, 5, [8, 9])],
)
async def test_range_returns_at_most_limit_messages_from_its_start(backend, start, end, limit, expected):
    messages = await fill(backend, 10)
    assert await backend.messages.range("1", start, end, limit) == [messages[i] for i in expected]


async def fill_fast(backend, count: int, group: str = "1") -> list[Message]:
    """``count`` messages a millisecond apart, written in bulk where the backend allows."""
    messages = [msg(str(i % 3), T0 + i, f"m{i}", group) for i in range(count)]
    if backend.raw is not None:
        from fastim.domain.codec import encode_message

        await backend.raw.rpush(f"gml:{group}", *(encode_message(m) for m in messages))
    else:  # all in one loop turn: the SQL backends write them in one transaction
        messages = list(await asyncio.gather(*(store(backend, message) for message in messages)))
    return messages


@pytest.mark.gen_test
async def test_an_anchor_older_than_the_window_is_found_where_its_time_places_it(backend):
    messages = await fill_fast(backend, 3000)
    anchor = messages[700]
    assert await backend.messages.before("1", anchor.user_id, anchor.ts, 3, 50) == messages[697:700]
    removed = await backend.messages.remove(RecallTarget("1", anchor.user_id, ts=anchor.ts), 50, 600, 100)
    assert (removed.user_id, removed.ts) == (anchor.user_id, anchor.ts)
    assert (await backend.messages.newest("1", 0)).total == 2999
    assert [m.info for m in await backend.messages.range("1", 699, 700, 10)] == ["m699", "m701"]


@pytest.mark.gen_test
async def test_the_search_is_bounded_a_message_far_out_of_time_order_is_not_found(backend):
    messages = await fill_fast(backend, 1000)
    stray = await store(backend, msg("9", T0 + 5, "out of order"))  # stamped near the start, stored last
    await backend.messages.append(msg("1", T0 + 5000, "newest"), 600)
    for _ in range(60):
        await backend.messages.append(msg("2", T0 + 6000, "filler"), 600)
    if backend.anchor_index:  # SQL: an index on (group, ts) finds any anchor in O(log n), out of order or not
        assert await backend.messages.before("1", stray.user_id, stray.ts, 1, 50) == [messages[-1]]
    else:
        assert await backend.messages.before("1", stray.user_id, stray.ts, 1, 50) is None
    assert await backend.messages.before("1", stray.user_id, stray.ts, 1, 100) == [messages[-1]]
