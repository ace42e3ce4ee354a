"""The publish hook over HTTP: POST ``{"groupId","userId","info"}`` to the application, read its verdict."""

from __future__ import annotations

import asyncio
import json

import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse

from fastim.domain.errors import HookFailed, MessageRejected

# The application answers {} or {"info": ...} or {"reject": ...}: a replacement of [im] max_message_bytes
# (4096 by default) fits many times over, even JSON-escaped; a larger body is no such answer, and is not read.
MAX_ANSWER_BYTES = 64 * 1024
HEADERS = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
USER_AGENT = "fastim-publish-hook"
# At shutdown, reviews in flight get this long to end before the connections are closed.
CLOSE_GRACE_S = 2.0
CLOSE_POLL_S = 0.02


def _prepare(curl: pycurl.Curl) -> None:
    """What Tornado's setup of each transfer leaves to us (it runs last)."""
    # libcurl must not use signals (SIGALRM for DNS timeouts) in a process with other threads.
    curl.setopt(pycurl.NOSIGNAL, 1)
    # Only the status and the body are read: not parsing the header lines in Python saves 15-45 µs
    # of the node's CPU per call (a tenth of what a call costs it; benchmarks/hook.py).
    curl.setopt(pycurl.HEADERFUNCTION, len)


def verdict(body: bytes, info: str) -> str:
    """The text a 200 answer's ``body`` says to store; raises MessageRejected or HookFailed.

    ``null`` counts as an absent key, so a typed application can answer
    ``{"info": null, "reject": null}`` for "accepted". A refusal wins over a replacement.
    """
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, a 4300-digit number, nesting too deep
        raise HookFailed("the answer is not JSON", cause="answer") from None
    if not isinstance(answer, dict):
        raise HookFailed(f"the answer is a JSON {type(answer).__name__}, not an object", cause="answer")
    reject = answer.get("reject")
    if reject is not None:
        if not isinstance(reject, str):
            raise HookFailed("the answer's reject is not a string", cause="answer")
        raise MessageRejected(reject)
    replacement = answer.get("info")
    if replacement is None:
        return info
    if not isinstance(replacement, str):
        raise HookFailed("the answer's info is not a string", cause="answer")
    return replacement


def failure(response: HTTPResponse | None, error: Exception | None) -> HookFailed:
    """Why a call brought no 200 answer."""
    if isinstance(error, CurlError):
        if error.errno == pycurl.E_OPERATION_TIMEDOUT:
            return HookFailed("no answer in time", cause="timeout")
        if error.errno == pycurl.E_WRITE_ERROR:
            return HookFailed(f"the answer is over {MAX_ANSWER_BYTES} bytes", cause="answer")
        return HookFailed(f"curl error {error.errno}: {error.message or ''}"[:300], cause="unreachable")
    if error is not None:
        return HookFailed(f"{type(error).__name__}: {error}"[:300], cause="unreachable")
    return HookFailed(f"status {response.code}, not 200", cause="status")


class HttpPublishHook:
    """POSTs each send to ``url`` with libcurl, over connections kept alive between calls.

    The client is created on the first call, in the node's loop, with
    ``max_clients`` transfers at once (the review never starts more); it is an
    instance of its own (``force_instance``), so an embedding application's
    AsyncHTTPClient stays as it configured it. ``timeout_s`` bounds the
    connect and the whole call, answer included.
    """

    def __init__(self, url: str, *, timeout_s: float, max_clients: int) -> None:
        self._url = url
        self._timeout_s = timeout_s
        self._max_clients = max_clients
        self._client: CurlAsyncHTTPClient | None = None
        self._in_flight = 0
        self._closed = False

    def _http(self) -> CurlAsyncHTTPClient:
        if self._closed:
            raise HookFailed("the node is shutting down", cause="unreachable")
        if self._client is None:
            self._client = CurlAsyncHTTPClient(
                force_instance=True, max_clients=self._max_clients, max_body_size=MAX_ANSWER_BYTES
            )
        return self._client

    async def review(self, group_id: str, user_id: str, info: str) -> str:
        body = json.dumps({"groupId": group_id, "userId": user_id, "info": info}, ensure_ascii=False)
        request = HTTPRequest(
            self._url,
            method="POST",
            headers=HEADERS,
            body=body.encode("utf-8"),
            connect_timeout=self._timeout_s,
            request_timeout=self._timeout_s,
            follow_redirects=False,
            decompress_response=False,
            user_agent=USER_AGENT,
            prepare_curl_callback=_prepare,
        )
        client = self._http()
        self._in_flight += 1
        try:
            response = await client.fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as error:
            raise failure(None, error) from None
        finally:
            self._in_flight -= 1
        if response.code != 200:
            raise failure(response, None)
        return verdict(response.body, info)

    async def close(self) -> None:
        """Let reviews in flight end (CLOSE_GRACE_S at most), then close the connections."""
        self._closed = True
        client, self._client = self._client, None
        if client is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(CLOSE_GRACE_S, self._timeout_s)
        while self._in_flight and loop.time() < deadline:
            await asyncio.sleep(CLOSE_POLL_S)
        client.close()
