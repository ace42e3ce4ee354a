"""Contract of the Storage readiness probe."""

import pytest


@pytest.mark.gen_test
async def test_a_live_storage_answers(backend):
    assert await backend.storage.ping() is True
