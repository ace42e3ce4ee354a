"""The domain's protections on the in-memory fakes: login throttle, logout, join policy, group limit, history pages."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.errors import (
    AuthenticationFailed,
    JoinRefused,
    NotAMember,
    TooManyGroups,
    TooManyRequests,
)
from fastim.domain.groups import Groups
from fastim.domain.ids import is_valid_id
from fastim.domain.messages import Messages
from fastim.domain.model import Message, SessionsChanged
from fastim.domain.sessions import Sessions
from fastim.domain.throttle import FailureCounter, LoginThrottle
from fastim.infrastructure.auth import AcceptAnyPassword
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.join_policy import AllowAnyJoin
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import (
    MemoryMembershipRepository,
    MemoryMessageRepository,
    MemoryTokenRepository,
)


class Time:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("value", ["1", "u-1", "群组", "a" * 128, "ü@x.y"])
def test_good_ids(value):
    assert is_valid_id(value)


@pytest.mark.parametrize("value", ["", "a" * 129, "u1\n", "u\x00", "a b", "a/b", "u\t", "\x7f", "u\x9f", None, 5])
def test_bad_ids(value):
    assert not is_valid_id(value)


def test_a_failure_counter_blocks_at_the_limit_until_the_window_passes():
    time = Time()
    counter = FailureCounter(limit=3, window_s=60, now=time)
    for _ in range(3):
        assert counter.wait("k") == 0
        counter.failed("k")
    assert counter.wait("k") == 60
    time.now += 59.5
    assert counter.wait("k") == pytest.approx(0.5)
    time.now += 1
    assert counter.wait("k") == 0
    counter.failed("k")  # a new window
    assert counter.wait("k") == 0


def test_a_failure_counter_forgets_the_oldest_keys_past_its_size():
    counter = FailureCounter(limit=1, window_s=60, now=Time(), max_keys=3)
    for key in "abcd":
        counter.failed(key)
    assert len(counter) == 3
    assert counter.wait("a") == 0 and counter.wait("d") > 0


def test_a_zero_limit_never_blocks():
    counter = FailureCounter(limit=0, window_s=60, now=Time())
    for _ in range(100):
        counter.failed("k")
    assert counter.wait("k") == 0


def test_the_throttle_counts_by_user_and_by_source_apart():
    throttle = LoginThrottle(per_source=4, per_user=2, window_s=60, now=Time())
    throttle.failed("u1", "10.0.0.1")
    throttle.failed("u1", "10.0.0.2")
    with pytest.raises(TooManyRequests):
        throttle.check("u1", "10.0.0.3")
    throttle.check("u2", "10.0.0.1")
    throttle.failed("u2", "10.0.0.1")
    throttle.failed("u3", "10.0.0.1")
    throttle.failed("u4", "10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        throttle.check("u5", "10.0.0.1")
    assert refused.value.retry_after == 60


class RefuseAll:
    async def authenticate(self, user_id, password):
        return False


def make_sessions(clock, broker=None, authenticator=None, **options):
    return Sessions(
        MemoryTokenRepository(clock), authenticator or AcceptAnyPassword(), broker,
        token_ttl=60, login_auth=True, **options,
    )


@pytest.mark.gen_test
async def test_a_refused_login_is_answered_no_sooner_than_the_floor():
    sessions = make_sessions(ManualClock(), authenticator=RefuseAll(), failed_login_floor_s=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AuthenticationFailed):
        await sessions.login("1", "pw")
    assert loop.time() - started >= 0.19


@pytest.mark.gen_test
async def test_failed_logins_are_throttled_before_the_password_is_checked():
    class Counting(RefuseAll):
        calls = 0

        async def authenticate(self, user_id, password):
            Counting.calls += 1
            return False

    throttle = LoginThrottle(per_source=0, per_user=2, window_s=60)
    sessions = make_sessions(ManualClock(), authenticator=Counting(), throttle=throttle, failed_login_floor_s=0)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            await sessions.login("1", "pw", source="a")
    with pytest.raises(TooManyRequests):
        await sessions.login("1", "pw", source="a")
    assert Counting.calls == 2


@pytest.mark.gen_test
async def test_login_and_logout_tell_every_node_and_logout_ends_the_token():
    broker = MemoryBroker()
    heard = []
    await broker.watch_notices(heard.append)
    sessions = make_sessions(ManualClock(), broker)
    token = await sessions.login("1", "pw")
    assert await sessions.remaining("1", token) == 60
    await sessions.logout("1", token)
    assert heard == [SessionsChanged("1"), SessionsChanged("1")]
    assert await sessions.remaining("1", token) is None
    assert not await sessions.check("1", token)


@pytest.mark.gen_test
async def test_the_socket_rule_says_how_long_the_token_lives():
    sessions = make_sessions(ManualClock())
    token = await sessions.login("1", "pw")
    assert (await sessions.authorize_socket("1", token)).lives_s == 60
    assert not await sessions.check("1\n", token)
    assert not await sessions.check("1", "x" * 129)


class OnlyPublic:
    async def may_join(self, user_id, group_id):
        return group_id.startswith("public-")


def make_groups(policy=None, auto_join=True, max_groups=0):
    memberships = MemoryMembershipRepository()
    groups = Groups(memberships, MemoryMessageRepository(ManualClock()), policy or AllowAnyJoin(),
                    auto_join=auto_join, max_groups=max_groups)
    return groups, memberships


@pytest.mark.gen_test
async def test_the_join_policy_guards_joining_and_entering():
    groups, memberships = make_groups(OnlyPublic())
    assert await groups.join("u", "public-1")
    assert not await groups.join("u", "public-1")  # already a member
    with pytest.raises(JoinRefused):
        await groups.join("u", "secret")
    with pytest.raises(JoinRefused):
        await groups.enter("u", "secret")
    await memberships.join("u", "secret")  # joined before the policy changed
    await groups.enter("u", "secret")


@pytest.mark.gen_test
async def test_history_access_follows_auto_join_and_the_policy():
    open_groups, _ = make_groups(OnlyPublic(), auto_join=True)
    await open_groups.require_access("u", "public-1")  # may join, so may read
    with pytest.raises(NotAMember):
        await open_groups.require_access("u", "secret")
    closed_groups, _ = make_groups(auto_join=False)
    with pytest.raises(NotAMember):
        await closed_groups.require_access("u", "g")
    await closed_groups.join("u", "g")
    await closed_groups.require_access("u", "g")


@pytest.mark.gen_test
async def test_max_groups_refuses_one_more_but_not_a_rejoin_and_leaving_makes_room():
    groups, _ = make_groups(max_groups=2)
    await groups.join("u", "a")
    await groups.join("u", "b")
    with pytest.raises(TooManyGroups):
        await groups.join("u", "c")
    with pytest.raises(TooManyGroups):
        await groups.enter("u", "c")
    await groups.enter("u", "a")
    assert await groups.leave("u", "a")
    await groups.join("u", "c")
    assert await groups.groups_of("u") == ["b", "c"]
    assert await groups.count_of("u") == 2


@pytest.mark.gen_test
async def test_history_reads_are_clipped_to_the_page_and_say_so():
    clock = ManualClock()
    repository = MemoryMessageRepository(clock, MemoryBroker())
    messages = Messages(repository, clock, message_timeout=600, list_num=5, recall_time_limit=120,
                        history_page_max=10)
    stored = [(await repository.append(Message("g", "u", f"m{i}", clock.now_ms() + i), 600)).message
              for i in range(25)]
    page = await messages.range("g", 0, -1)
    assert page.messages == stored[:10] and page.clipped
    page = await messages.range("g", -10, -1)
    assert page.messages == stored[-10:] and not page.clipped
    page = await messages.before("g", "u", stored[20].ts, 100)
    assert page.messages == stored[10:20] and page.clipped
    page = await messages.before("g", "u", stored[5].ts, 100)
    assert page.messages == stored[:5] and not page.clipped  # fewer exist: nothing was cut
    page = await messages.before("g", "nobody", stored[5].ts, 3)
    assert page.messages is None and not page.clipped
