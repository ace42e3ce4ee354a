"""The JSON wire format of messages and events (SPEC §3), shared by storage, broker and sockets."""

from __future__ import annotations

import json
from typing import Any

from fastim.domain.model import Event, Message, Notice, Recall, SessionsChanged

_COMPACT = (",", ":")
MAX_TS = 2**53 - 1  # integer milliseconds that JavaScript and Lua numbers hold exactly


class InvalidPayload(ValueError):
    """A payload that is not a message or an event in the wire format."""


def encode_message(message: Message) -> str:
    """The stored and published form, keys in fast-im's order: groupId, userId, info, ts."""
    return json.dumps(
        {
            "groupId": message.group_id,
            "userId": message.user_id,
            "info": message.info,
            "ts": message.ts,
        },
        ensure_ascii=False,
        separators=_COMPACT,
    )


def message_object(message: Message) -> dict[str, Any]:
    """The message as a JSON-ready dict, for documents that embed messages."""
    return {
        "groupId": message.group_id,
        "userId": message.user_id,
        "info": message.info,
        "ts": message.ts,
    }


def encode_event(event: Event) -> str:
    if isinstance(event, Message):
        return encode_message(event)
    return json.dumps(
        {"event": "recall", "groupId": event.group_id, "userId": event.user_id, "ts": event.ts},
        ensure_ascii=False,
        separators=_COMPACT,
    )


def decode_message(payload: str | bytes) -> Message:
    """Parse and validate a stored or published message.

    Ids may arrive as JSON numbers (fast-im's own push shows ``"userId":1``);
    they are normalised to strings.
    """
    event = decode_event(payload)
    if not isinstance(event, Message):
        raise InvalidPayload("a recall event is not a message")
    return event


def decode_event(payload: str | bytes) -> Event:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidPayload("not a JSON object")
    group_id = _identifier(data, "groupId")
    user_id = _identifier(data, "userId")
    ts = _timestamp(data)
    kind = data.get("event")
    if kind == "recall":
        return Recall(group_id=group_id, user_id=user_id, ts=ts)
    if kind is not None:
        raise InvalidPayload(f"unknown event {kind!r}")
    info = data.get("info")
    if not isinstance(info, str):
        raise InvalidPayload("info must be a string")
    return Message(group_id=group_id, user_id=user_id, info=info, ts=ts)


def _identifier(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidPayload(f"{key} must be a non-empty string or an integer")


def _timestamp(data: dict[str, Any]) -> int:
    value = data.get("ts")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TS:
        raise InvalidPayload(f"ts must be an integer from 0 to {MAX_TS}")
    return value


def encode_notice(notice: Notice) -> str:
    """A node-wide notice, as published on the notices channel."""
    return json.dumps({"notice": "sessions", "userId": notice.user_id}, ensure_ascii=False, separators=_COMPACT)


def decode_notice(payload: str | bytes) -> Notice:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("notice") != "sessions":
        raise InvalidPayload("not a notice")
    return SessionsChanged(_identifier(data, "userId"))
