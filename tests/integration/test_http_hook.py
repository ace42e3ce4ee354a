"""HttpPublishHook against a real HTTP server in the test: the three answers, every kind of failure, keep-alive."""

from __future__ import annotations

import asyncio
import json

import pytest

from fastim.domain.errors import HookFailed, MessageRejected
from fastim.infrastructure.http_hook import MAX_ANSWER_BYTES, HttpPublishHook
from tests.hook_server import HookServer, serving
from tests.processes import free_port

TIMEOUT_S = 0.5


@pytest.fixture
def hook_server(io_loop):
    with serving(io_loop, HookServer()) as server:
        yield server


@pytest.fixture
def hook(hook_server, io_loop):
    adapter = HttpPublishHook(hook_server.url, timeout_s=TIMEOUT_S, max_clients=20)
    yield adapter
    io_loop.run_sync(adapter.close)


def answering(status: int, body: bytes | str | dict | list | None):
    data = body if isinstance(body, bytes) else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
    return lambda request: (status, data)


@pytest.mark.gen_test
async def test_the_application_gets_group_user_and_text_as_json_and_an_empty_object_accepts(hook, hook_server):
    text = "héllo\x00 <b>wörld</b> 😀"
    assert await hook.review("g1", "u1", text) == text
    assert hook_server.requests == [{"groupId": "g1", "userId": "u1", "info": text}]
    assert hook_server.content_types[0].startswith("application/json")


@pytest.mark.gen_test
@pytest.mark.parametrize("answer", [{"info": None}, {"reject": None, "info": None}, {"other": 1}])
async def test_null_keys_and_unknown_keys_accept(hook, hook_server, answer):
    hook_server.answer = answering(200, answer)
    assert await hook.review("g", "u", "as sent") == "as sent"


@pytest.mark.gen_test
async def test_info_replaces_the_text(hook, hook_server):
    hook_server.answer = answering(200, {"info": "*** filtered ***"})
    assert await hook.review("g", "u", "darn") == "*** filtered ***"


@pytest.mark.gen_test
async def test_reject_refuses_with_the_application_s_reason_and_wins_over_info(hook, hook_server):
    hook_server.answer = answering(200, {"reject": "no links, please", "info": "ignored"})
    with pytest.raises(MessageRejected) as refused:
        await hook.review("g", "u", "http://spam")
    assert refused.value.reason == "no links, please"


@pytest.mark.gen_test
@pytest.mark.parametrize("status", [500, 503, 404, 204, 201, 302])
async def test_any_status_but_200_is_a_failure(hook, hook_server, status):
    hook_server.answer = answering(status, {} if status not in (204, 302) else b"")
    with pytest.raises(HookFailed) as failed:
        await hook.review("g", "u", "x")
    assert failed.value.cause == "status" and str(status) in str(failed.value)


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [
    b"", b"not json", b"{", b"\xff\xfe{}", b"[" * 60_000, b"1" * 5000, b'{"info": "a"} trailing',
])
async def test_a_body_that_is_not_json_is_a_failure(hook, hook_server, body):
    hook_server.answer = answering(200, body)
    with pytest.raises(HookFailed) as failed:
        await hook.review("g", "u", "x")
    assert failed.value.cause == "answer"


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [[], "text", 1, None, True, [{"reject": "x"}]])
async def test_json_that_is_not_an_object_is_a_failure(hook, hook_server, body):
    hook_server.answer = answering(200, json.dumps(body))
    with pytest.raises(HookFailed, match="not an object"):
        await hook.review("g", "u", "x")


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [{"info": 5}, {"info": ["a"]}, {"reject": 1}, {"reject": {"why": "x"}}, {"reject": True}])
async def test_info_or_reject_that_is_not_a_string_is_a_failure(hook, hook_server, body):
    hook_server.answer = answering(200, body)
    with pytest.raises(HookFailed, match="not a string"):
        await hook.review("g", "u", "x")


@pytest.mark.gen_test
async def test_an_answer_just_under_64_kb_is_read(hook, hook_server):
    replacement = "r" * (MAX_ANSWER_BYTES - 100)
    hook_server.answer = answering(200, {"info": replacement})
    assert await hook.review("g", "u", "x") == replacement


@pytest.mark.gen_test
async def test_a_huge_answer_is_a_failure_and_is_not_read_whole(hook, hook_server):
    hook_server.answer = answering(200, b'{"info": "' + b"x" * (8 * 1024 * 1024) + b'"}')
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HookFailed, match="over 65536 bytes") as failed:
        await hook.review("g", "u", "x")
    assert failed.value.cause == "answer"
    assert loop.time() - started < TIMEOUT_S  # cut short at the limit, not read to the end


@pytest.mark.gen_test
async def test_a_huge_answer_streamed_without_a_length_is_cut_too(hook, hook_server):
    # No Content-Length: written piece by piece, as a runaway application would.
    hook_server.answer = lambda request: (200, [b'{"info": "'] + [b"x" * 16384] * 64 + [b'"}'])
    with pytest.raises(HookFailed) as failed:
        await hook.review("g", "u", "x")
    assert failed.value.cause == "answer"


@pytest.mark.gen_test
async def test_an_answer_slower_than_the_timeout_is_a_failure_at_the_timeout(hook, hook_server):
    async def slow(request):
        await asyncio.sleep(TIMEOUT_S * 4)
        return 200, b"{}"

    hook_server.answer = slow
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(HookFailed) as failed:
        await hook.review("g", "u", "x")
    took = loop.time() - started
    assert failed.value.cause == "timeout"
    assert TIMEOUT_S * 0.9 <= took < TIMEOUT_S + 0.5  # the call's own deadline, not a poll


@pytest.mark.gen_test
async def test_a_hanging_application_is_a_timeout(hook, hook_server):
    hook_server.answer = hook_server.hang
    with pytest.raises(HookFailed) as failed:
        await hook.review("g", "u", "x")
    assert failed.value.cause == "timeout"


@pytest.mark.gen_test
async def test_a_refused_connection_is_a_failure():
    hook = HttpPublishHook(f"http://127.0.0.1:{free_port()}/review", timeout_s=TIMEOUT_S, max_clients=2)
    try:
        with pytest.raises(HookFailed) as failed:
            await hook.review("g", "u", "x")
        assert failed.value.cause == "unreachable"
    finally:
        await hook.close()


@pytest.mark.gen_test
async def test_sequential_calls_reuse_one_kept_alive_connection(hook, hook_server):
    for i in range(50):
        assert await hook.review("g", "u", f"m{i}") == f"m{i}"
    assert len(hook_server.requests) == 50
    assert hook_server.connections <= 2


@pytest.mark.gen_test
async def test_concurrent_calls_all_get_their_own_answer(hook, hook_server):
    hook_server.answer = lambda request: (200, json.dumps({"info": request["info"].upper()}).encode())
    texts = [f"m{i}" for i in range(20)]
    assert await asyncio.gather(*(hook.review("g", "u", text) for text in texts)) == [t.upper() for t in texts]


@pytest.mark.gen_test
async def test_a_failed_call_does_not_spoil_the_next(hook, hook_server):
    hook_server.answer = answering(200, b"x" * (MAX_ANSWER_BYTES * 2))
    with pytest.raises(HookFailed):
        await hook.review("g", "u", "x")
    hook_server.answer = answering(200, {})
    assert await hook.review("g", "u", "y") == "y"


@pytest.mark.gen_test
async def test_close_lets_a_call_in_flight_end_within_its_grace_and_refuses_later_calls(hook_server):
    hook = HttpPublishHook(hook_server.url, timeout_s=5.0, max_clients=2)
    hook_server.answer = hook_server.hang
    pending = asyncio.ensure_future(hook.review("g", "u", "x"))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hook.close()
    assert loop.time() - started < 3.0
    with pytest.raises(HookFailed):
        await hook.review("g", "u", "later")
    pending.cancel()


class _RawApplication:
    """An HTTP server in a few lines, to answer exactly as a test needs: each connection answers
    ``per_connection`` requests with ``answer`` bytes, then closes without saying so first."""

    def __init__(self, answer: bytes, per_connection: int = 1) -> None:
        self.answer, self.per_connection, self.connections = answer, per_connection, 0
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/review"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.add(asyncio.current_task())
        try:
            for _ in range(self.per_connection):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                writer.write(self.answer)
                await writer.drain()
            await asyncio.sleep(0.05)  # the client has put the connection back as idle meanwhile
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()


@pytest.mark.gen_test
async def test_a_kept_alive_connection_the_application_closed_is_replaced_without_a_failure():
    application = _RawApplication(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", per_connection=1)
    hook = HttpPublishHook(await application.start(), timeout_s=2.0, max_clients=4)
    try:
        for i in range(5):
            assert await hook.review("g", "u", f"m{i}") == f"m{i}"
            await asyncio.sleep(0.1)  # the application closes the idle connection meanwhile
        assert application.connections == 5
    finally:
        await hook.close()
        await application.stop()


@pytest.mark.gen_test
@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"info\": \"x\"}",  # no length: the body ends with the connection
    b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\n{\"info\": \"x\"}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"inf\r\n8;ext=1\r\no\": \"x\"}\r\n0\r\nX-Trailer: 1\r\n\r\n",
])
async def test_answers_framed_every_way_http_allows_are_read(answer):
    application = _RawApplication(answer)
    hook = HttpPublishHook(await application.start(), timeout_s=2.0, max_clients=4)
    try:
        assert await hook.review("g", "u", "y") == "x"
        assert await hook.review("g", "u", "y") == "x"  # on a new connection: this one said it would close
    finally:
        await hook.close()
        await application.stop()


@pytest.mark.gen_test
@pytest.mark.parametrize("answer", [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n{}",
])
async def test_answers_that_are_not_http_are_failures(answer):
    application = _RawApplication(answer)
    hook = HttpPublishHook(await application.start(), timeout_s=1.0, max_clients=4)
    try:
        with pytest.raises(HookFailed) as failed:
            await hook.review("g", "u", "y")
        assert failed.value.cause == "answer"
    finally:
        await hook.close()
        await application.stop()
