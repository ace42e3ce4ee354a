"""The Review policy with a fake hook: the three verdicts, fail closed or open, the in-flight bound, rationed logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from dependency_injector import providers

from fastim.container import build_container
from fastim.domain.errors import HookFailed, MessageRejected
from fastim.domain.review import DEFAULT_REASON, LOG_INTERVAL_S, MAX_REASON_CHARS, NoHook, Review, reason_for
from fastim.infrastructure.http_hook import HttpPublishHook
from tests.settings_factory import make_settings

MAX_BYTES = 100


class FakeHook:
    """Answers with ``verdict(info)``: a string to store, or an exception to raise; or holds calls until released."""

    def __init__(self, verdict=lambda info: info) -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, str, str]] = []
        self.gate: asyncio.Event | None = None

    async def review(self, group_id, user_id, info):
        self.calls.append((group_id, user_id, info))
        if self.gate is not None:
            await self.gate.wait()
        answer = self.verdict(info)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def close(self):
        pass


class RecordingMetrics:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.failures: list[str] = []

    def hook_called(self, outcome, seconds):
        assert seconds >= 0
        self.calls.append(outcome)

    def hook_failed(self, cause):
        self.failures.append(cause)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_review(hook, *, fail_open=False, max_in_flight=10, metrics=None, monotonic=None) -> Review:
    return Review(hook, metrics or RecordingMetrics(), fail_open=fail_open, max_in_flight=max_in_flight,
                  max_message_bytes=MAX_BYTES, monotonic=monotonic or FakeTime())


@pytest.mark.gen_test
async def test_an_accepted_text_is_stored_as_sent():
    hook, metrics = FakeHook(), RecordingMetrics()
    review = make_review(hook, metrics=metrics)
    assert await review.text("g", "u", "hello") == "hello"
    assert hook.calls == [("g", "u", "hello")]
    assert metrics.calls == ["accepted"] and metrics.failures == []


@pytest.mark.gen_test
async def test_a_replacement_is_stored_instead():
    metrics = RecordingMetrics()
    review = make_review(FakeHook(lambda info: info.upper()), metrics=metrics)
    assert await review.text("g", "u", "hello") == "HELLO"
    assert metrics.calls == ["replaced"]


@pytest.mark.gen_test
@pytest.mark.parametrize("fail_open", [False, True])
async def test_a_rejection_refuses_whatever_the_fail_setting(fail_open):
    metrics = RecordingMetrics()
    review = make_review(FakeHook(lambda info: MessageRejected("no spam")), fail_open=fail_open, metrics=metrics)
    with pytest.raises(MessageRejected) as refused:
        await review.text("g", "u", "buy now")
    assert refused.value.reason == "no spam"
    assert metrics.calls == ["rejected"] and metrics.failures == []


@pytest.mark.gen_test
async def test_the_reason_the_sender_gets_is_printable_and_short():
    review = make_review(FakeHook(lambda info: MessageRejected("\x1b[31mred\x00\n" + "x" * 5000)))
    with pytest.raises(MessageRejected) as refused:
        await review.text("g", "u", "x")
    assert refused.value.reason == "[31mred" + "x" * (MAX_REASON_CHARS - 7)


@pytest.mark.parametrize("raw, told", [
    ("plain", "plain"),
    ("  padded\t", "padded"),
    ("a\u0000b\u007fc\u0085d\u009fe", "abcde"),  # C0, DEL, C1
    ("lone \ud800 surrogate", "lone  surrogate"),
    ("日本語の理由", "日本語の理由"),
    ("", DEFAULT_REASON),
    ("\r\n\x00", DEFAULT_REASON),
    ("y" * 1000, "y" * MAX_REASON_CHARS),
])
def test_reason_for(raw, told):
    assert reason_for(raw) == told
    reason_for(raw).encode("utf-8")  # always encodable into an error frame


@pytest.mark.gen_test
async def test_fail_closed_refuses_the_send_with_the_failure():
    metrics = RecordingMetrics()
    review = make_review(FakeHook(lambda info: HookFailed("status 500, not 200", cause="status")), metrics=metrics)
    with pytest.raises(HookFailed):
        await review.text("g", "u", "x")
    assert metrics.calls == ["failed"] and metrics.failures == ["status"]


@pytest.mark.gen_test
async def test_fail_open_stores_the_text_unreviewed():
    metrics = RecordingMetrics()
    review = make_review(FakeHook(lambda info: HookFailed("no answer in time", cause="timeout")), fail_open=True,
                         metrics=metrics)
    assert await review.text("g", "u", "as sent") == "as sent"
    assert metrics.calls == ["failed"] and metrics.failures == ["timeout"]


@pytest.mark.gen_test
@pytest.mark.parametrize("fail_open", [False, True])
async def test_any_exception_of_the_hook_is_a_failure(fail_open):
    review = make_review(FakeHook(lambda info: ValueError("bug in the application's hook")), fail_open=fail_open)
    if fail_open:
        assert await review.text("g", "u", "x") == "x"
    else:
        with pytest.raises(HookFailed) as failed:
            await review.text("g", "u", "x")
        assert failed.value.cause == "error" and "ValueError" in str(failed.value)


@pytest.mark.gen_test
@pytest.mark.parametrize("replacement", ["", "é" * (MAX_BYTES // 2 + 1), "bad \udc80", None, 42])
async def test_a_replacement_that_no_client_could_send_is_a_failure(replacement):
    metrics = RecordingMetrics()
    review = make_review(FakeHook(lambda info: replacement), metrics=metrics)
    with pytest.raises(HookFailed) as failed:
        await review.text("g", "u", "x")
    assert failed.value.cause == "answer"
    assert metrics.calls == ["failed"] and metrics.failures == ["answer"]


@pytest.mark.gen_test
async def test_a_replacement_of_exactly_the_limit_is_stored():
    review = make_review(FakeHook(lambda info: "é" * (MAX_BYTES // 2)))
    assert await review.text("g", "u", "x") == "é" * (MAX_BYTES // 2)


@pytest.mark.gen_test
@pytest.mark.parametrize("fail_open", [False, True])
async def test_sends_past_max_in_flight_fail_at_once_without_calling_the_hook(fail_open):
    hook, metrics = FakeHook(), RecordingMetrics()
    hook.gate = asyncio.Event()
    review = make_review(hook, fail_open=fail_open, max_in_flight=3, metrics=metrics)
    held = [asyncio.ensure_future(review.text("g", f"u{i}", f"m{i}")) for i in range(3)]
    await asyncio.sleep(0)
    assert review.in_flight == 3
    if fail_open:
        assert await review.text("g", "late", "unreviewed") == "unreviewed"
    else:
        with pytest.raises(HookFailed) as failed:
            await review.text("g", "late", "refused")
        assert failed.value.cause == "busy"
    assert len(hook.calls) == 3 and metrics.failures == ["busy"]
    hook.gate.set()
    assert await asyncio.gather(*held) == ["m0", "m1", "m2"]
    assert review.in_flight == 0
    assert await review.text("g", "again", "fits again") == "fits again"  # the bound frees as calls end


@pytest.mark.gen_test
async def test_in_flight_is_given_back_whatever_the_outcome():
    verdicts = iter([MessageRejected("no"), HookFailed("down", cause="unreachable"), ValueError("x"), "ok"])
    review = make_review(FakeHook(lambda info: next(verdicts)), fail_open=False, max_in_flight=1)
    for _ in range(3):
        with pytest.raises((MessageRejected, HookFailed)):
            await review.text("g", "u", "x")
    assert review.in_flight == 0
    assert await review.text("g", "u", "x") == "ok"


@pytest.mark.gen_test
async def test_a_cancelled_send_gives_its_place_back():
    hook = FakeHook()
    hook.gate = asyncio.Event()
    review = make_review(hook, max_in_flight=1)
    pending = asyncio.ensure_future(review.text("g", "u", "x"))
    await asyncio.sleep(0)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    assert review.in_flight == 0


@pytest.mark.gen_test
async def test_a_failing_hook_logs_one_line_per_interval_not_one_per_send(caplog):
    clock = FakeTime()
    review = make_review(FakeHook(lambda info: HookFailed("connection refused", cause="unreachable")),
                         fail_open=True, monotonic=clock)
    caplog.set_level(logging.WARNING, logger="fastim.domain.review")

    def lines():  # the review's own (another test's task collected meanwhile may log on asyncio's)
        return [record for record in caplog.records if record.name == "fastim.domain.review"]

    for _ in range(500):
        await review.text("g", "u", "x")
    assert len(lines()) == 1
    assert "publish hook failed (unreachable): connection refused" in lines()[0].getMessage()
    assert "stored unreviewed" in lines()[0].getMessage()
    clock.now += LOG_INTERVAL_S / 2
    await review.text("g", "u", "x")
    assert len(lines()) == 1
    clock.now += LOG_INTERVAL_S / 2
    await review.text("g", "u", "x")
    assert len(lines()) == 2
    assert "(500 more since the last such line)" in lines()[1].getMessage()


def test_no_hook_makes_the_review_inactive():
    assert not make_review(NoHook()).active
    assert make_review(FakeHook()).active


def test_without_publish_url_chat_sockets_get_no_review_at_all():
    container = build_container(make_settings())
    assert isinstance(container.publish_hook(), NoHook)
    assert container.chat_services().review is None


def test_with_publish_url_the_http_hook_reviews_with_the_settings():
    container = build_container(make_settings(hooks__publish_url="http://127.0.0.1:9/hook", hooks__fail="open",
                                              hooks__max_in_flight=7, hooks__timeout=0.25))
    hook = container.publish_hook()
    assert isinstance(hook, HttpPublishHook)
    assert (hook._url, hook._timeout_s, hook._max_clients) == ("http://127.0.0.1:9/hook", 0.25, 7)
    review = container.chat_services().review
    assert review is container.review() and review.active
    assert review._fail_open and review._max_in_flight == 7


def test_an_embedding_application_s_own_hook_is_used_without_publish_url():
    container = build_container(make_settings())
    container.publish_hook.override(providers.Object(FakeHook()))
    assert container.chat_services().review is container.review()
