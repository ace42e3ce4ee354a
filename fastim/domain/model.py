"""Value objects of the chat domain."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. Once stored it has ``seq``, its place in the group's stream, and ``id``.

    fast-im identifies a message by (group_id, user_id, ts); messages stored
    by fast-im's own nodes have neither seq nor id.
    """

    group_id: str
    user_id: str
    info: str
    ts: int  # creation time, integer milliseconds since the epoch
    seq: int | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Recall:
    """The event announcing that a message was recalled by its author: an event of the stream with its own seq."""

    group_id: str
    user_id: str
    ts: int  # the recalled message's
    id: str | None = None  # the recalled message's
    seq: int | None = None  # this event's own place in the stream
    epoch: str | None = None  # the stream's (the recalled message may be older than it)


# A presence event names who joined and who left only when this few changed together; past it, it
# tells only how many are online (one frame per socket instead of one per change: a 5,000-socket
# reconnect storm must not cost 5,000 frames on each of 5,000 sockets).
PRESENCE_LISTED_MAX = 20


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """Users came online in a group (their first socket on any node) or went offline (their last), at once.

    Not an event of the group's stream: it has no seq, is never stored, and is
    delivered as it comes. ``joined`` and ``left`` are both empty when more
    than :data:`PRESENCE_LISTED_MAX` users changed together: then only
    ``online`` (distinct users online in the group) is told.
    """

    group_id: str
    joined: tuple[str, ...]
    left: tuple[str, ...]
    online: int
    # Read as every event's are: no place in the stream, so whatever orders or filters events by
    # seq passes it on as it comes, as it does fast-im's own messages.
    seq: ClassVar[None] = None
    id: ClassVar[None] = None


Event = Message | Recall | PresenceChanged


def message_id(epoch: str, seq: int) -> str:
    """A stored message's id: unique within its group, across restarts of the group's stream too."""
    return f"{epoch}-{seq}"


def parse_message_id(value: str) -> tuple[str, int] | None:
    """(epoch, seq) of an id made by :func:`message_id`; None for anything else."""
    epoch, sep, seq = value.rpartition("-")
    if not sep or not epoch or not seq.isdigit() or len(seq) > 16:
        return None
    return epoch, int(seq)


def epoch_of(event: Event) -> str | None:
    """The epoch of the stream an event belongs to: a recall says it, a message's id holds it."""
    if isinstance(event, Recall):
        return event.epoch
    if event.id is None:
        return None
    parsed = parse_message_id(event.id)
    return parsed[0] if parsed else None


@dataclass(frozen=True, slots=True)
class Page:
    """The newest messages of a group (oldest first), the group's total, and where its stream stands."""

    messages: list[Message]
    total: int
    seq: int = 0  # the stream's latest seq; 0 before its first event
    epoch: str = ""  # the stream's epoch; "" before its first event


@dataclass(frozen=True, slots=True)
class Appended:
    """A message as stored (with seq and id), and the length of the group's list after it."""

    message: Message
    total: int


@dataclass(frozen=True, slots=True)
class RecallTarget:
    """Which message a user recalls: by (user_id, ts) as fast-im does, or by id.

    ``user_id`` None (by id only): a moderator's recall, of anyone's message.
    """

    group_id: str
    user_id: str | None
    ts: int | None = None
    id: str | None = None
    not_before_ms: int = 0  # an older message is past the recall window


@dataclass(frozen=True, slots=True)
class Tail:
    """A group's events after a seq, oldest first, as storage still holds them.

    ``complete`` is true when every event after that seq is accounted for: a
    message is there, a recall event is there, or a recall event names it.
    """

    events: list[Event]
    seq: int  # the stream's latest
    epoch: str
    complete: bool
    total: int = 0  # messages in the group's list


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """What a group-list socket shows of one group."""

    group_id: str
    newest: Message | None
    total: int


@dataclass(frozen=True, slots=True)
class OnlineUser:
    """A user online in a group, with the sockets the user holds open in it on every live node."""

    user_id: str
    sockets: int


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


@dataclass(frozen=True, slots=True)
class UserDisconnected:
    """A node-wide notice: the application disconnected the user; every node closes the user's sockets."""

    user_id: str


Notice = SessionsChanged | UserDisconnected


class GrantKind(enum.Enum):
    LOGIN = "login"  # fast-im's login token: lives while it is renewed, watched in storage
    JWT = "jwt"  # a JSON Web Token the application minted: lives until its exp, checked locally


@dataclass(frozen=True, slots=True)
class Grant:
    """What a checked credential allows: who, for how long, into which groups."""

    user_id: str
    kind: GrantKind
    lives_s: float  # seconds it still lives (math.inf: no expiry)
    groups: frozenset[str] | None = None  # None: any group
    expires_at: float | None = None  # a JWT's exp (seconds since the epoch)

    def allows(self, group_id: str) -> bool:
        return self.groups is None or group_id in self.groups
