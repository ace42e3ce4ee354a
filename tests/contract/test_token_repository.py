"""Contract of TokenRepository, run against every backend."""

import math

import pytest

TOKEN = "8f2c1eb2099049eab5cad6a78a1f8285"
OTHER = "00000000000000000000000000000000"


@pytest.mark.gen_test
async def test_an_issued_token_checks(backend):
    await backend.tokens.issue("1", TOKEN, 600)
    assert await backend.tokens.check_and_renew("1", TOKEN, 600)


@pytest.mark.gen_test
async def test_a_wrong_or_absent_token_does_not_check(backend):
    await backend.tokens.issue("1", TOKEN, 600)
    assert not await backend.tokens.check_and_renew("1", OTHER, 600)
    assert not await backend.tokens.check_and_renew("2", TOKEN, 600)


@pytest.mark.gen_test
async def test_a_new_login_replaces_the_old_token(backend):
    await backend.tokens.issue("1", TOKEN, 600)
    await backend.tokens.issue("1", OTHER, 600)
    assert not await backend.tokens.check_and_renew("1", TOKEN, 600)
    assert await backend.tokens.check_and_renew("1", OTHER, 600)


@pytest.mark.gen_test(timeout=20)
async def test_a_successful_check_renews_the_ttl_and_the_token_then_expires(backend):
    await backend.tokens.issue("1", TOKEN, 1)
    await backend.elapse(0.6)
    assert await backend.tokens.check_and_renew("1", TOKEN, 1)
    await backend.elapse(0.6)  # 1.2 s after issue: alive only because it was renewed
    assert await backend.tokens.check_and_renew("1", TOKEN, 1)
    await backend.elapse(1.2)
    assert not await backend.tokens.check_and_renew("1", TOKEN, 1)


@pytest.mark.gen_test(timeout=20)
async def test_a_failed_check_does_not_renew(backend):
    await backend.tokens.issue("1", TOKEN, 1)
    await backend.elapse(0.6)
    assert not await backend.tokens.check_and_renew("1", OTHER, 100)
    await backend.elapse(0.6)
    assert not await backend.tokens.check_and_renew("1", TOKEN, 1)


@pytest.mark.gen_test
async def test_remaining_is_the_time_left_of_the_users_current_token_only(backend):
    await backend.tokens.issue("1", TOKEN, 600)
    left = await backend.tokens.remaining("1", TOKEN)
    assert 590 < left <= 600
    assert await backend.tokens.remaining("1", OTHER) is None
    assert await backend.tokens.remaining("2", TOKEN) is None
    await backend.tokens.issue("2", TOKEN, 0)  # no expiry
    assert await backend.tokens.remaining("2", TOKEN) == math.inf


@pytest.mark.gen_test
async def test_revoke_deletes_only_the_token_it_names(backend):
    await backend.tokens.issue("1", TOKEN, 600)
    assert not await backend.tokens.revoke("1", OTHER)
    assert await backend.tokens.check_and_renew("1", TOKEN, 600)
    assert await backend.tokens.revoke("1", TOKEN)
    assert not await backend.tokens.check_and_renew("1", TOKEN, 600)
    assert await backend.tokens.remaining("1", TOKEN) is None
