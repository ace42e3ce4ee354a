"""Value objects of the chat domain."""

from __future__ import annotations

import enum
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


@dataclass(frozen=True, slots=True)
class History:
    """Messages of one history request, oldest first; ``clipped`` when more were asked than a page holds."""

    messages: list[Message] | None  # None: the anchor message does not exist
    clipped: bool = False


class Joined(enum.Enum):
    """What asking to join a group did."""

    ADDED = "added"
    ALREADY = "already"  # the user was a member: nothing changed
    FULL = "full"  # the user is in as many groups as allowed: nothing changed


@dataclass(frozen=True, slots=True)
class SessionsChanged:
    """A node-wide notice: the user's login token changed (new login, logout); sockets must check theirs."""

    user_id: str


Notice = SessionsChanged
