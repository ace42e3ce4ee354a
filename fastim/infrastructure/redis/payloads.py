"""What arrives on a pub/sub channel, judged once for every broker: a group's event, a notice, or nothing."""

from __future__ import annotations

import logging

from fastim.domain.codec import InvalidPayload, decode_event, decode_notice
from fastim.domain.model import Event, Notice
from fastim.infrastructure.redis.keys import NOTICES_CHANNEL

logger = logging.getLogger(__name__)


def group_event(channel: str, group_id: str, data: str) -> Event | None:
    """The event published on ``group_id``'s channel; None (logged) when it is not one of that group."""
    try:
        event = decode_event(data)
    except InvalidPayload as exc:
        logger.warning("dropping an invalid payload on %s: %s", channel, exc)
        return None
    if event.group_id != group_id:
        # Delivered, it would show the group's clients another group's message
        # (the memory broker routes by the event's own group, so it never can).
        logger.warning("dropping an invalid payload on %s: its groupId is %r", channel, event.group_id)
        return None
    return event


def notice(data: str) -> Notice | None:
    """The notice published on the notices channel; None (logged) when it is not one."""
    try:
        return decode_notice(data)
    except InvalidPayload as exc:
        logger.warning("dropping an invalid payload on %s: %s", NOTICES_CHANNEL, exc)
        return None
