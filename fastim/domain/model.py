"""Value objects of the chat domain."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message; (group_id, user_id, ts) identifies it, as in fast-im."""

    group_id: str
    user_id: str
    info: str
    ts: int  # creation time, integer milliseconds since the epoch


@dataclass(frozen=True, slots=True)
class Recall:
    """The event announcing that a message was recalled by its author."""

    group_id: str
    user_id: str
    ts: int


Event = Message | Recall


@dataclass(frozen=True, slots=True)
class Page:
    """The newest messages of a group (oldest first) and the group's total."""

    messages: list[Message]
    total: int


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """What a group-list socket shows of one group."""

    group_id: str
    newest: Message | None
    total: int
