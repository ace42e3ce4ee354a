"""The JSON wire format of messages and events (SPEC §3), shared by storage, broker and sockets."""

from __future__ import annotations

import json
from typing import Any

from fastim.domain.ids import is_valid_id
from fastim.domain.model import (
    PRESENCE_LISTED_MAX,
    Event,
    Message,
    Notice,
    PresenceChanged,
    Recall,
    SessionsChanged,
    UserDisconnected,
)

_COMPACT = (",", ":")
MAX_TS = 2**53 - 1  # integer milliseconds that JavaScript and Lua numbers hold exactly
MAX_TEXT_ID = 64  # message ids and epochs are short; anything longer is not ours


class InvalidPayload(ValueError):
    """A payload that is not a message or an event in the wire format."""


def message_object(message: Message) -> dict[str, Any]:
    """The message as a JSON-ready dict: fast-im's keys in its order (groupId, userId, info, ts), then id and seq."""
    data: dict[str, Any] = {
        "groupId": message.group_id,
        "userId": message.user_id,
        "info": message.info,
        "ts": message.ts,
    }
    if message.id is not None:
        data["id"] = message.id
    if message.seq is not None:
        data["seq"] = message.seq
    return data


def event_object(event: Event) -> dict[str, Any]:
    """A message, a recall event: ``{"event":"recall","groupId","userId","ts"[,"id","seq","epoch"]}``,
    or a presence event: ``{"event":"presence","groupId","joined":[...],"left":[...],"online"}``."""
    if isinstance(event, Message):
        return message_object(event)
    if isinstance(event, PresenceChanged):
        return {"event": "presence", "groupId": event.group_id, "joined": list(event.joined),
                "left": list(event.left), "online": event.online}
    data: dict[str, Any] = {"event": "recall", "groupId": event.group_id, "userId": event.user_id, "ts": event.ts}
    if event.id is not None:
        data["id"] = event.id
    if event.seq is not None:
        data["seq"] = event.seq
    if event.epoch is not None:
        data["epoch"] = event.epoch
    return data


def encode_message(message: Message) -> str:
    """The stored and published form (the storage adds id and seq to a new message, in this order, at its end)."""
    return json.dumps(message_object(message), ensure_ascii=False, separators=_COMPACT)


def encode_event(event: Event) -> str:
    return json.dumps(event_object(event), ensure_ascii=False, separators=_COMPACT)


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
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidPayload("not a JSON object")
    group_id = _identifier(data, "groupId")
    if data.get("event") == "presence":
        return _presence(data, group_id)
    user_id = _identifier(data, "userId")
    ts = _timestamp(data)
    seq = _sequence(data)
    event_id = _optional_text(data, "id")
    kind = data.get("event")
    if kind == "recall":
        return Recall(group_id=group_id, user_id=user_id, ts=ts, id=event_id, seq=seq,
                      epoch=_optional_text(data, "epoch"))
    if kind is not None:
        raise InvalidPayload(f"unknown event {kind!r}")
    info = data.get("info")
    if not isinstance(info, str):
        raise InvalidPayload("info must be a string")
    return Message(group_id=group_id, user_id=user_id, info=info, ts=ts, seq=seq, id=event_id)


def _presence(data: dict[str, Any], group_id: str) -> PresenceChanged:
    joined, left = _user_ids(data, "joined"), _user_ids(data, "left")
    if len(joined) + len(left) > PRESENCE_LISTED_MAX:
        raise InvalidPayload(f"a presence event lists at most {PRESENCE_LISTED_MAX} users")
    online = data.get("online")
    if isinstance(online, bool) or not isinstance(online, int) or not 0 <= online <= MAX_TS:
        raise InvalidPayload(f"online must be an integer from 0 to {MAX_TS}")
    return PresenceChanged(group_id, joined, left, online)


def _user_ids(data: dict[str, Any], key: str) -> tuple[str, ...]:
    """A list of user ids (absent: none); checked before it is walked, so a huge list costs one len()."""
    value = data.get(key, [])
    if not isinstance(value, list) or len(value) > PRESENCE_LISTED_MAX:
        raise InvalidPayload(f"{key} must be a list of at most {PRESENCE_LISTED_MAX} user ids")
    if not all(is_valid_id(item) for item in value):
        raise InvalidPayload(f"{key} must hold user ids")
    return tuple(value)


def _identifier(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidPayload(f"{key} must be a non-empty string or an integer")


def _sequence(data: dict[str, Any]) -> int | None:
    value = data.get("seq")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TS:
        raise InvalidPayload(f"seq must be an integer from 1 to {MAX_TS}")
    return value


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_ID:
        raise InvalidPayload(f"{key} must be a non-empty string of at most {MAX_TEXT_ID} characters")
    return value


def _timestamp(data: dict[str, Any]) -> int:
    value = data.get("ts")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TS:
        raise InvalidPayload(f"ts must be an integer from 0 to {MAX_TS}")
    return value


def encode_notice(notice: Notice) -> str:
    """A node-wide notice, as published on the notices channel."""
    kind = "disconnect" if isinstance(notice, UserDisconnected) else "sessions"
    return json.dumps({"notice": kind, "userId": notice.user_id}, ensure_ascii=False, separators=_COMPACT)


def decode_notice(payload: str | bytes) -> Notice:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise InvalidPayload(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("notice") not in ("sessions", "disconnect"):
        raise InvalidPayload("not a notice")
    if data["notice"] == "disconnect":
        return UserDisconnected(_identifier(data, "userId"))
    return SessionsChanged(_identifier(data, "userId"))
