"""The rules of the Messages, Groups and Sessions services, on the in-memory fakes."""

from __future__ import annotations

import re

import pytest

from fastim.domain.errors import (
    AuthenticationFailed,
    InvalidArgument,
    MessageNotFound,
    NotAMember,
    RecallWindowExpired,
)
from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.model import Message, Recall
from fastim.domain.sessions import Sessions
from fastim.infrastructure.auth import AcceptAnyPassword
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.join_policy import AllowAnyJoin
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import (
    MemoryMembershipRepository,
    MemoryMessageRepository,
    MemoryTokenRepository,
)


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def broker():
    return MemoryBroker()


@pytest.fixture
def repository(clock, broker):
    return MemoryMessageRepository(clock, broker)


def make_messages(repository, broker, clock, **overrides):
    options = dict(message_timeout=600, list_num=3, recall_time_limit=120, history_max=0)
    options.update(overrides)
    return Messages(repository, clock, **options)


@pytest.mark.gen_test
async def test_post_stores_and_announces_a_message_stamped_by_the_clock_with_its_seq_and_id(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    published = []
    await broker.subscribe("g", lambda group_id, event: published.append(event))
    message = await messages.post("g", "u", "hello")
    epoch = (await repository.newest("g", 0)).epoch
    assert message == Message("g", "u", "hello", clock.now_ms(), seq=1, id=f"{epoch}-1")
    assert published == [message]
    assert (await repository.newest("g", 5)).messages == [message]


@pytest.mark.gen_test
async def test_latest_sends_list_num_messages(repository, broker, clock):
    messages = make_messages(repository, broker, clock, list_num=3)
    for i in range(5):
        await messages.post("g", "u", f"m{i}")
        clock.advance(0.001)
    page = await messages.latest("g")
    assert [m.info for m in page.messages] == ["m2", "m3", "m4"] and page.total == 5


@pytest.mark.gen_test
async def test_history_max_caps_the_list(repository, broker, clock):
    messages = make_messages(repository, broker, clock, history_max=2)
    for i in range(4):
        await messages.post("g", "u", f"m{i}")
        clock.advance(0.001)
    assert [m.info for m in (await messages.latest("g")).messages] == ["m2", "m3"]


@pytest.mark.gen_test
async def test_recall_inside_the_window_removes_and_announces(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    published = []
    await broker.subscribe("g", lambda group_id, event: published.append(event))
    sent = await messages.post("g", "u", "oops")
    clock.advance(120)  # exactly at the edge of the window: still allowed
    epoch = (await repository.newest("g", 0)).epoch
    recall = Recall("g", "u", sent.ts, id=sent.id, seq=2, epoch=epoch)
    assert await messages.recall("g", "u", ts=sent.ts) == recall
    assert published[-1] == recall
    assert (await messages.latest("g")).total == 0


@pytest.mark.gen_test
async def test_recall_by_id_tells_apart_messages_of_the_same_millisecond(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    twins = [await messages.post("g", "u", f"twin {i}") for i in range(5)]
    assert len({twin.id for twin in twins}) == 5 and len({twin.ts for twin in twins}) == 1
    recall = await messages.recall("g", "u", message_id=twins[2].id)
    assert recall.id == twins[2].id
    assert [m.info for m in (await messages.latest("g")).messages] == ["twin 1", "twin 3", "twin 4"]


@pytest.mark.gen_test
async def test_recall_after_the_window_is_refused_and_the_message_kept(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    sent = await messages.post("g", "u", "too late")
    clock.advance(120.001)
    with pytest.raises(RecallWindowExpired):
        await messages.recall("g", "u", ts=sent.ts)
    assert (await messages.latest("g")).total == 1


@pytest.mark.gen_test
async def test_recall_of_another_users_message_is_not_found_and_keeps_it(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    sent = await messages.post("g", "author", "mine")
    with pytest.raises(MessageNotFound):
        await messages.recall("g", "someone-else", ts=sent.ts)
    assert (await messages.latest("g")).messages == [sent]


@pytest.mark.gen_test
async def test_recall_of_a_message_that_does_not_exist(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    with pytest.raises(MessageNotFound):
        await messages.recall("g", "u", ts=clock.now_ms())


@pytest.mark.gen_test
async def test_before_refuses_a_negative_count(repository, broker, clock):
    messages = make_messages(repository, broker, clock)
    with pytest.raises(InvalidArgument):
        await messages.before("g", "u", 1, -1)


@pytest.mark.gen_test
async def test_enter_joins_with_auto_join(clock):
    memberships = MemoryMembershipRepository()
    groups = Groups(memberships, MemoryMessageRepository(clock), AllowAnyJoin(), auto_join=True)
    await groups.enter("u", "g")
    assert await groups.groups_of("u") == ["g"]


@pytest.mark.gen_test
async def test_enter_without_auto_join_requires_membership(clock):
    memberships = MemoryMembershipRepository()
    groups = Groups(memberships, MemoryMessageRepository(clock), AllowAnyJoin(), auto_join=False)
    with pytest.raises(NotAMember):
        await groups.enter("u", "g")
    await groups.join("u", "g")
    await groups.enter("u", "g")


@pytest.mark.gen_test
async def test_summaries_cover_every_joined_group(repository, broker, clock):
    memberships = MemoryMembershipRepository()
    groups = Groups(memberships, repository, AllowAnyJoin(), auto_join=True)
    messages = make_messages(repository, broker, clock)
    await groups.join("u", "a")
    await groups.join("u", "b")
    sent = await messages.post("a", "x", "hi")
    summaries = await groups.summaries("u")
    assert [(s.group_id, s.newest, s.total) for s in summaries] == [("a", sent, 1), ("b", None, 0)]
    assert await groups.summaries("nobody") == []


class RefuseAll:
    async def authenticate(self, user_id, password):
        return False


def make_sessions(clock, authenticator=None, login_auth=True):
    return Sessions(
        MemoryTokenRepository(clock),
        authenticator or AcceptAnyPassword(),
        token_ttl=60,
        login_auth=login_auth,
    )


@pytest.mark.gen_test
async def test_login_issues_distinct_32_hex_tokens(clock):
    sessions = make_sessions(clock)
    first, second = await sessions.login("1", "pw"), await sessions.login("2", "pw")
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second
    assert await sessions.check("1", first)


@pytest.mark.gen_test
async def test_a_refused_login_raises(clock):
    with pytest.raises(AuthenticationFailed):
        await make_sessions(clock, RefuseAll()).login("1", "pw")


@pytest.mark.gen_test
async def test_check_renews_and_tokens_expire(clock):
    sessions = make_sessions(clock)
    token = await sessions.login("1", "pw")
    clock.advance(59)
    assert await sessions.check("1", token)
    clock.advance(59)
    assert await sessions.check("1", token)
    clock.advance(61)
    assert not await sessions.check("1", token)


@pytest.mark.gen_test
async def test_empty_credentials_never_check(clock):
    assert not await make_sessions(clock).check("", "")


@pytest.mark.gen_test
async def test_socket_rule_follows_login_auth(clock):
    open_sessions = make_sessions(clock, login_auth=False)
    await open_sessions.authorize_socket("1", "anything")
    guarded = make_sessions(clock, login_auth=True)
    with pytest.raises(AuthenticationFailed):
        await guarded.authorize_socket("1", "anything")
    token = await guarded.login("1", "pw")
    await guarded.authorize_socket("1", token)
