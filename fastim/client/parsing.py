"""Reading the node's frames as a hostile peer's: anything malformed is refused as a whole, never half taken.

Each function returns a typed value or raises :class:`Malformed`; the stream
skips a malformed frame (and counts it) rather than crash or guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastim.client.events import GroupEntry, GroupList, Joined, Left, Message, Presence, Recall

MAX_SAFE_INTEGER = 2**53 - 1  # the node's bound for ts and seq (what a JavaScript number holds exactly)
MAX_ID_LENGTH = 128  # the node's bound for userId and groupId
MAX_TEXT_ID_LENGTH = 64  # message ids and epochs
EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what the node accepts back as ?epoch=
MAX_ERROR_MSG = 1000  # an error frame's msg is a sentence; longer is cut, not trusted whole


class Malformed(ValueError):
    """A frame that is not what the protocol says the node sends."""


@dataclass(frozen=True, slots=True)
class Ack:
    """``{"event":"ack","id","seq","ts"}``: the answer to a stored send (chat sockets opened with ``ack=1``)."""

    id: str
    seq: int
    ts: int


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """``{"code","msg"}``: a refused frame, or a notice before a close."""

    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class Opening:
    """``{"list","total","seq","epoch"[,"recovered"]}``: what a chat socket sends first."""

    events: tuple[Message | Recall, ...]
    total: int
    seq: int
    epoch: str
    recovered: bool | None


@dataclass(frozen=True, slots=True)
class Refreshed:
    """``{"event":"refreshed","exp"}``: the node took a text frame as a JWT refresh, not as a message."""


@dataclass(frozen=True, slots=True)
class LoginRequired:
    """The bare text ``440`` fast-im sends before closing a socket whose login is not (or no longer) valid."""


ChatFrame = Message | Recall | Joined | Left | Presence | Ack | ErrorFrame | Refreshed | Opening | LoginRequired


def load(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"not JSON: {str(exc)[:100]}") from None


def chat_frame(text: str) -> ChatFrame | None:
    """A chat socket's frame, typed; None for a well-formed frame the SDK does not know (skipped quietly)."""
    if text == "440":
        return LoginRequired()
    data = load(text)
    if not isinstance(data, dict):
        raise Malformed("a chat frame is a JSON object")
    kind = data.get("event")
    if kind is None:
        if "list" in data:
            return opening(data)
        if "code" in data and "info" not in data:
            return error_frame(data)
        return message(data)
    if kind == "recall":
        return recall(data)
    if kind == "ack":
        return Ack(_text_id(data, "id"), _integer(data, "seq", 1), _integer(data, "ts", 0))
    if kind in ("join", "leave"):
        cls = Joined if kind == "join" else Left
        return cls(_identifier(data, "groupId"), _identifier(data, "userId"))
    if kind == "presence":
        return Presence(_identifier(data, "groupId"), _integer(data, "online", 0))
    if kind == "refreshed":
        return Refreshed()
    return None  # an event of a newer node


def message(data: Any) -> Message:
    if not isinstance(data, dict):
        raise Malformed("a message is a JSON object")
    info = data.get("info")
    if not isinstance(info, str):
        raise Malformed("info must be a string")
    return Message(
        group_id=_identifier(data, "groupId"),
        user_id=_identifier(data, "userId"),
        info=info,
        ts=_integer(data, "ts", 0),
        id=_optional_text_id(data, "id"),
        seq=_optional_integer(data, "seq", 1),
    )


def recall(data: dict[str, Any]) -> Recall:
    epoch = _optional_text_id(data, "epoch")
    if epoch is not None and not EPOCH.fullmatch(epoch):
        raise Malformed("epoch is not an epoch")
    return Recall(
        group_id=_identifier(data, "groupId"),
        user_id=_identifier(data, "userId"),
        ts=_integer(data, "ts", 0),
        id=_optional_text_id(data, "id"),
        seq=_optional_integer(data, "seq", 1),
        epoch=epoch,
    )


def stream_event(data: Any) -> Message | Recall:
    """One entry of an opening list: a message or a recall event."""
    if isinstance(data, dict) and data.get("event") == "recall":
        return recall(data)
    return message(data)


def opening(data: dict[str, Any]) -> Opening:
    listed = data.get("list")
    if not isinstance(listed, list):
        raise Malformed("list must be a list")
    epoch = data.get("epoch")
    if not isinstance(epoch, str) or (epoch and not EPOCH.fullmatch(epoch)):
        raise Malformed("epoch is not an epoch")
    recovered = data.get("recovered")
    if recovered is not None and not isinstance(recovered, bool):
        raise Malformed("recovered must be true or false")
    return Opening(
        events=tuple(stream_event(item) for item in listed),
        total=_integer(data, "total", 0),
        seq=_integer(data, "seq", 0),
        epoch=epoch,
        recovered=recovered,
    )


def error_frame(data: dict[str, Any]) -> ErrorFrame:
    msg = data.get("msg")
    if not isinstance(msg, str):
        raise Malformed("msg must be a string")
    return ErrorFrame(_integer(data, "code", 0), msg[:MAX_ERROR_MSG])


def group_list(text: str) -> GroupList | None:
    """A group-list push; None for the bare ``440`` (the close that follows says the rest)."""
    if text == "440":
        return None
    data = load(text)
    if not isinstance(data, list):
        raise Malformed("a group list is a JSON array")
    entries = []
    for item in data:
        if not isinstance(item, dict):
            raise Malformed("a group list entry is a JSON object")
        newest = item.get("newMessage")
        online = item.get("online")
        entries.append(GroupEntry(
            group_id=_identifier(item, "groupId"),
            newest=None if newest is None else message(newest),
            total=_integer(item, "total", 0),
            online=None if online is None else _integer(item, "online", 0),
        ))
    return GroupList(tuple(entries))


def envelope(text: str | bytes) -> tuple[int, str, Any, dict[str, Any]]:
    """fast-im's HTTP answer ``{"code","msg","data"}``: its code, msg, data, and the whole object."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Malformed("the answer is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed("the answer is not a JSON object")
    msg = data.get("msg")
    if msg is not None and not isinstance(msg, str):
        raise Malformed("msg must be a string")
    return _integer(data, "code", 0), (msg or "")[:MAX_ERROR_MSG], data.get("data"), data


def _identifier(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # fast-im's own pushes show "userId":1
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise Malformed(f"{key} must be an id")
    return value


def _integer(data: dict[str, Any], key: str, least: int) -> int:
    value = data.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_SAFE_INTEGER:
        raise Malformed(f"{key} must be an integer from {least} to {MAX_SAFE_INTEGER}")
    return value


def _optional_integer(data: dict[str, Any], key: str, least: int) -> int | None:
    return None if data.get(key) is None else _integer(data, key, least)


def _text_id(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_ID_LENGTH:
        raise Malformed(f"{key} must be a string of 1 to {MAX_TEXT_ID_LENGTH} characters")
    return value


def _optional_text_id(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text_id(data, key)
