"""Calls to the node's HTTP API: a form-encoded POST, fast-im's envelope back, a typed error on refusal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from fastim.client.errors import ApiError, Unreachable
from fastim.client.parsing import Malformed, envelope

CODE_OK = 200
# Tornado's code for a request that got no HTTP answer at all (refused, reset, timed out).
NO_ANSWER = 599


class HttpApi:
    """The HTTP half of a :class:`~fastim.client.Client`; one Tornado client of its own, closed with it."""

    def __init__(self, base_url: str, *, timeout: float, max_answer_bytes: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._client: SimpleAsyncHTTPClient | None = None

    def _http(self) -> SimpleAsyncHTTPClient:
        # Made on first use, inside the running loop, and never shared with the application's own client.
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(
                force_instance=True, max_body_size=self.max_answer_bytes, max_buffer_size=self.max_answer_bytes
            )
        return self._client

    async def post(self, path: str, form: Mapping[str, object], headers: Mapping[str, str]) -> dict[str, Any]:
        """POST ``form`` to ``path``; the code-200 envelope (``msg``, ``data``, ...), else :class:`ApiError`."""
        request = HTTPRequest(
            self.base_url + path,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            body=urlencode({key: str(value) for key, value in form.items()}),
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            response = await self._http().fetch(request, raise_error=False)
        except OSError as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {exc}") from None
        if response.code == NO_ANSWER:
            raise Unreachable(f"cannot reach {self.base_url}: {response.error}")
        try:
            code, msg, _, answer = envelope(response.body or b"")
        except Malformed:
            raise ApiError(response.code, f"HTTP {response.code} {response.reason}: not an answer of a fastim node",
                           response.code) from None
        if code != CODE_OK:
            raise ApiError(code, msg, response.code)
        return answer

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
