"""Calling the listeners a broker holds: each in turn, awaited when it is async, one's failure logged and not the others'."""

from __future__ import annotations

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
