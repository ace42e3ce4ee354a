"""The Review service: the application's publish hook looks at each chat send before it is stored."""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Callable
from typing import Protocol

from fastim.domain.errors import HookFailed, MessageRejected
from fastim.domain.ports import PublishHook

logger = logging.getLogger(__name__)

# What a sender is told of a refusal: the application's reason, printable and short enough
# for one line of a chat client's UI.
MAX_REASON_CHARS = 200
DEFAULT_REASON = "the message was refused"
# A hook that keeps failing (the application is down) writes one line per interval, not one per send.
LOG_INTERVAL_S = 10.0
# Unicode categories that never reach a client's screen: controls, and the lone surrogates a
# JSON "\ud800" escape decodes to (no UTF-8 encoding exists for them).
_UNPRINTABLE = frozenset({"Cc", "Cs"})


class ReviewMetrics(Protocol):
    """Where the outcome of each review goes (the node's Prometheus metrics)."""

    def hook_called(self, outcome: str, seconds: float) -> None:
        """One hook call ended: ``accepted``, ``replaced``, ``rejected`` or ``failed``, after ``seconds``."""
        ...

    def hook_failed(self, cause: str) -> None:
        """A send had no usable review (:attr:`HookFailed.cause` says why), whether or not a call was made."""
        ...


class NoHook:
    """The hook of a node without ``[hooks] publish_url``: every text is stored as sent.

    :class:`Review` knows it and is then :attr:`~Review.active` no longer, so a
    chat send pays nothing for it.
    """

    async def review(self, group_id: str, user_id: str, info: str) -> str:
        return info

    async def close(self) -> None:
        pass


def reason_for(text: str) -> str:
    """What the sender is told of a refusal: ``text`` without control characters, at most 200 characters."""
    kept: list[str] = []
    for char in str(text).strip():
        if unicodedata.category(char) not in _UNPRINTABLE:
            kept.append(char)
            if len(kept) == MAX_REASON_CHARS:
                break  # the work stays bounded however long the application's reason
    return "".join(kept).strip() or DEFAULT_REASON


class Review:
    """Asks the hook about a send, within ``[hooks] max_in_flight`` calls at once; ``fail`` decides on failures.

    A send past ``max_in_flight`` is a hook failure at once: no queue builds up
    behind a slow application. With ``fail_open`` a failure stores the text
    unreviewed; otherwise the send is refused with :class:`HookFailed`.
    """

    def __init__(
        self,
        hook: PublishHook,
        metrics: ReviewMetrics,
        *,
        fail_open: bool,
        max_in_flight: int,
        max_message_bytes: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hook = hook
        self._metrics = metrics
        self._fail_open = fail_open
        self._max_in_flight = max_in_flight
        self._max_message_bytes = max_message_bytes
        self._monotonic = monotonic
        self._in_flight = 0
        self._next_line_at = float("-inf")  # when the next failure may be logged
        self._unlogged = 0  # failures since the last line

    @property
    def active(self) -> bool:
        """Whether sends go through a hook at all (not when it is :class:`NoHook`)."""
        return not isinstance(self._hook, NoHook)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def text(self, group_id: str, user_id: str, info: str) -> str:
        """The text to store for this send: ``info``, or the application's replacement.

        Raises :class:`MessageRejected` (its reason fit for the sender) when the
        application refuses the message, and :class:`HookFailed` when there is
        no usable review and the hook fails closed.
        """
        if self._in_flight >= self._max_in_flight:
            return self._failed(HookFailed(f"{self._max_in_flight} hook calls in flight already", cause="busy"), info)
        self._in_flight += 1
        started = self._monotonic()
        try:
            text = await self._hook.review(group_id, user_id, info)
        except MessageRejected as refusal:
            self._metrics.hook_called("rejected", self._monotonic() - started)
            raise MessageRejected(reason_for(refusal.reason)) from None
        except HookFailed as failure:
            self._metrics.hook_called("failed", self._monotonic() - started)
            return self._failed(failure, info)
        except Exception as exc:  # an embedding application's own hook may raise anything
            self._metrics.hook_called("failed", self._monotonic() - started)
            return self._failed(HookFailed(f"the hook raised {type(exc).__name__}: {exc}", cause="error"), info)
        finally:
            self._in_flight -= 1
        seconds = self._monotonic() - started
        if text == info:
            self._metrics.hook_called("accepted", seconds)
            return info
        problem = self._unfit(text)
        if problem is not None:
            self._metrics.hook_called("failed", seconds)
            return self._failed(HookFailed(problem, cause="answer"), info)
        self._metrics.hook_called("replaced", seconds)
        return text

    def _unfit(self, text: object) -> str | None:
        """Why a replacement cannot be stored as a chat message, or None when it can."""
        if not isinstance(text, str):
            return f"the replacement is a {type(text).__name__}, not a string"
        if not text:
            return "the replacement is empty"
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            return "the replacement holds lone surrogates (no UTF-8 text)"
        if size > self._max_message_bytes:
            return f"the replacement of {size} bytes is over the limit of {self._max_message_bytes}"
        return None

    def _failed(self, failure: HookFailed, info: str) -> str:
        """Count and log the failure; the text stored unreviewed (fail open), or the failure raised (closed)."""
        self._metrics.hook_failed(failure.cause)
        self._log(failure)
        if self._fail_open:
            return info
        raise failure

    def _log(self, failure: HookFailed) -> None:
        """One line at the first failure, then at most one per LOG_INTERVAL_S with how many came since."""
        now = self._monotonic()
        self._unlogged += 1
        if now < self._next_line_at:
            return
        count, self._unlogged = self._unlogged, 0
        self._next_line_at = now + LOG_INTERVAL_S
        consequence = "stored unreviewed" if self._fail_open else "refused"
        earlier = f" ({count - 1} more since the last such line)" if count > 1 else ""
        logger.warning("publish hook failed (%s): %s; sends are %s while it fails%s",
                       failure.cause, failure, consequence, earlier)
