"""Failures the client must see as envelopes: an unexpected exception, and a storage that is away."""

from __future__ import annotations

import json
import logging
from unittest.mock import AsyncMock

import pytest

from fastim.app import make_app
from fastim.domain.messages import Messages
from tests.interfaces.http_client import Api


@pytest.fixture
def api(container, http_client, base_url):
    return Api(http_client, base_url)


class TestUnexpectedException:
    @pytest.fixture
    def app(self, container):
        failing = AsyncMock(spec=Messages)
        failing.range.side_effect = RuntimeError("secret internal detail")
        container.messages.override(failing)
        return make_app(container)

    @pytest.mark.gen_test
    async def test_is_a_500_envelope_with_a_request_id_and_no_traceback(self, api, caplog):
        await api.login("1")
        with caplog.at_level(logging.ERROR):
            response = await api.call(
                "/group/listMessage", {"groupId": "1", "startPage": 0, "endPage": 1}, api.auth("1")
            )
        body = json.loads(response.body)
        request_id = response.headers["X-Request-Id"]
        assert response.code == 500 and body["code"] == 500
        assert body["data"] == {"requestId": request_id} and request_id in body["msg"]
        assert "secret" not in response.body.decode() and "Traceback" not in response.body.decode()
        logged = [r for r in caplog.records if request_id in r.getMessage()]
        assert logged and logged[0].exc_info is not None  # the traceback stays on the server


class TestStorageAway:
    @pytest.fixture
    def backend_name(self):
        return "redis"

    @pytest.fixture
    def node_settings(self):
        return {"storage__redis_url": "redis://127.0.0.1:1/0"}

    @pytest.mark.gen_test
    async def test_login_answers_a_503_envelope(self, api):
        status, body = await api.post("/user/login", {"userId": "1", "password": "x"})
        assert status == 503 and body["code"] == 503 and body["data"] is None

    @pytest.mark.gen_test
    async def test_a_protected_call_answers_503_not_440(self, api):
        status, body = await api.post("/user/listGroup", headers={"userId": "1", "token": "0" * 32})
        assert status == 503 and body["code"] == 503

    @pytest.mark.gen_test
    async def test_readyz_answers_503(self, api):
        response = await api.call("/readyz", method="GET")
        assert response.code == 503 and json.loads(response.body)["code"] == 503
