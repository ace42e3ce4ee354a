"""Contract of MembershipRepository, run against every backend."""

import pytest

from fastim.domain.model import Joined


@pytest.mark.gen_test
async def test_join_is_idempotent_and_listed(backend):
    await backend.memberships.join("1", "g1")
    await backend.memberships.join("1", "g1")
    await backend.memberships.join("1", "g2")
    assert sorted(await backend.memberships.groups_of("1")) == ["g1", "g2"]


@pytest.mark.gen_test
async def test_is_member(backend):
    await backend.memberships.join("1", "g1")
    assert await backend.memberships.is_member("1", "g1")
    assert not await backend.memberships.is_member("1", "g2")
    assert not await backend.memberships.is_member("2", "g1")


@pytest.mark.gen_test
async def test_a_user_who_joined_nothing_has_no_groups(backend):
    assert await backend.memberships.groups_of("stranger") == []


@pytest.mark.gen_test
async def test_join_says_what_it_did(backend):
    assert await backend.memberships.join("1", "g1") is Joined.ADDED
    assert await backend.memberships.join("1", "g1") is Joined.ALREADY


@pytest.mark.gen_test
async def test_join_stops_at_max_groups_but_a_member_still_rejoins(backend):
    for group in ("g1", "g2", "g3"):
        assert await backend.memberships.join("1", group, 3) is Joined.ADDED
    assert await backend.memberships.join("1", "g4", 3) is Joined.FULL
    assert await backend.memberships.join("1", "g2", 3) is Joined.ALREADY
    assert await backend.memberships.count("1") == 3
    assert await backend.memberships.join("1", "g4", 0) is Joined.ADDED  # 0: no limit


@pytest.mark.gen_test
async def test_leave_and_count(backend):
    await backend.memberships.join("1", "g1")
    await backend.memberships.join("1", "g2")
    assert await backend.memberships.count("1") == 2
    assert await backend.memberships.leave("1", "g1")
    assert not await backend.memberships.leave("1", "g1")
    assert await backend.memberships.groups_of("1") == ["g2"]
    assert await backend.memberships.leave("1", "g2")
    assert await backend.memberships.count("1") == 0
    assert await backend.memberships.count("nobody") == 0
