"""The frames the server sends besides events: snapshots, error frames, close codes."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastim.domain.codec import event_object, message_object
from fastim.domain.model import PRESENCE_LISTED_MAX, GroupSummary, Message, PresenceChanged

if TYPE_CHECKING:
    from fastim.interfaces.ws.recovery import Opening

# fast-im sends the bare text 440 (GroupListServer: sendInfo(userId, "440")) and then closes.
LOGIN_REQUIRED_FRAME = "440"

# Close codes in the 4000-4999 range that RFC 6455 leaves to applications.
CLOSE_LOGIN_REQUIRED = 4440
CLOSE_BAD_PATH = 4400
CLOSE_NOT_A_MEMBER = 4403
# Standard close codes (RFC 6455 §7.4.1; 1013 from the IANA registry).
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# A close frame's reason must fit its 125-byte payload after the 2-byte code.
MAX_CLOSE_REASON_BYTES = 123

# Error frame codes, the same numbers as the HTTP envelope where one exists.
ERROR_EMPTY = 400
ERROR_TOKEN_REFUSED = 401  # a JWT refresh that was refused; the socket keeps its old token
ERROR_REJECTED = 403  # the application's publish hook refused the message; msg is its reason
ERROR_NOT_ACCEPTED = 405  # a frame sent on the group-list socket, which only pushes
ERROR_TOO_LARGE = 413
ERROR_BINARY = 415
ERROR_TOO_FAST = 429
ERROR_UNAVAILABLE = 503  # not stored, and never will be: send it again
ERROR_OUTCOME_UNKNOWN = 504  # storage stopped answering mid-write and could not be asked since


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def error_frame(code: int, msg: str) -> str:
    return _dumps({"code": code, "msg": msg})


def ack_frame(message: Message) -> str:
    """With ``?ack=1``: the answer to a stored send, ``{"event":"ack","id","seq","ts"}``, in the order sent."""
    return _dumps({"event": "ack", "id": message.id, "seq": message.seq, "ts": message.ts})


def refreshed_frame(expires_at: float | None) -> str:
    """The answer to an accepted JWT refresh: ``{"event":"refreshed","exp":...}``."""
    exp = int(expires_at) if expires_at is not None and float(expires_at).is_integer() else expires_at
    return _dumps({"event": "refreshed", "exp": exp})


def chat_opening(opening: Opening) -> str:
    """What a chat socket gets on open: ``{"list":[...oldest first...],"total":N,"seq":S,"epoch":E}``.

    fast-im's two keys first; then where the group's stream stands, and for a
    client that asked to resume, whether ``list`` holds every event it missed
    (``"recovered":true``) or, as usual, the newest messages.
    """
    data: dict[str, Any] = {
        "list": [event_object(event) for event in opening.events],
        "total": opening.total,
        "seq": opening.seq,
        "epoch": opening.epoch,
    }
    if opening.recovered is not None:
        data["recovered"] = opening.recovered
    return _dumps(data)


def group_list(summaries: list[GroupSummary], online: Mapping[str, int] | None = None) -> str:
    """What a group-list socket gets: one entry per joined group, with the distinct users ``online`` in it."""
    entries = []
    for summary in summaries:
        entry: dict[str, Any] = {
            "groupId": summary.group_id,
            "newMessage": message_object(summary.newest) if summary.newest else None,
            "total": summary.total,
        }
        if online is not None:
            entry["online"] = online.get(summary.group_id, 0)
        entries.append(entry)
    return _dumps(entries)


def presence_frames(event: PresenceChanged) -> bytes:
    """What chat sockets get of a presence event, as complete frames back to back.

    Up to :data:`PRESENCE_LISTED_MAX` changes: one frame each, leaves first,
    ``{"event":"leave"|"join","groupId","userId"}``. More (a reconnect storm):
    one frame, ``{"event":"presence","groupId","online"}``.
    """
    group_id = event.group_id
    changes = len(event.joined) + len(event.left)
    if not 0 < changes <= PRESENCE_LISTED_MAX:
        return text_frame(_dumps({"event": "presence", "groupId": group_id, "online": event.online}).encode("utf-8"))
    return b"".join(
        text_frame(_dumps({"event": kind, "groupId": group_id, "userId": user_id}).encode("utf-8"))
        for kind, users in (("leave", event.left), ("join", event.joined))
        for user_id in users
    )


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, final WebSocket text frame (RFC 6455 §5.2), as a server sends it.

    Built once per event and written as is to every socket of the group.
    """
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size <= 0xFFFF:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A close, ping or pong frame; its payload is at most 125 bytes (RFC 6455 §5.5)."""
    return bytes((0x80 | opcode, len(payload))) + payload


def close_frame(code: int | None, reason: str) -> bytes:
    """A close frame with ``code`` and as much of ``reason`` as fits, cut on a character boundary."""
    if code is None:
        return control_frame(0x8, b"")
    data = reason.encode("utf-8")[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return control_frame(0x8, struct.pack("!H", code) + data)
