"""Calling the listeners a broker holds: each in turn, awaited when it is async, one's failure logged and not the others'."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)


async def call_each(
    listeners: Iterable[Callable[..., Awaitable[None] | None]],
    *args: Any,
    failure: str,
    failure_args: tuple[Any, ...] = (),
) -> None:
    """Call every listener with ``args``; one that raises is logged (``failure % failure_args``) and the rest still run.

    The listeners are copied first: one may add or remove listeners while it runs.
    """
    for listener in tuple(listeners):
        try:
            result = listener(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception(failure, *failure_args)


def call_each_now(
    listeners: Iterable[Callable[..., Awaitable[None] | None]],
    *args: Any,
    failure: str,
    failure_args: tuple[Any, ...] = (),
    spawn: Callable[[Awaitable[None]], None],
) -> None:
    """:func:`call_each` from code that cannot wait (a protocol's ``data_received``): an async listener's
    awaitable goes to ``spawn``, which must run it and log its failure."""
    for listener in tuple(listeners):
        try:
            result = listener(*args)
            if inspect.isawaitable(result):
                spawn(result)
        except Exception:
            logger.exception(failure, *failure_args)


class Spawned:
    """``spawn`` for :func:`call_each_now` (and a broker's other work): each awaitable runs as a task, held until
    it ends, its failure logged."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def cancel(self) -> None:
        """Cancel every task still running (the broker closes)."""
        for task in list(self._tasks):
            task.cancel()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a broker's task (an async listener, a connection) failed", exc_info=task.exception())
