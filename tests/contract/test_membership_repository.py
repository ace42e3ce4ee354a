"""Contract of MembershipRepository, run against every backend."""

import pytest


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
