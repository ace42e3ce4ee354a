"""What a chat or group-list stream yields: messages, recalls, presence, and the connection's own news."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message: ``{"groupId","userId","info","ts","id","seq"}``.

    ``id`` (``{epoch}-{seq}``) and ``seq`` are absent on messages stored by
    fast-im's own nodes; such messages are delivered as they come.
    """

    group_id: str
    user_id: str
    info: str
    ts: int  # server time, ms since the epoch
    id: str | None = None
    seq: int | None = None

    @property
    def epoch(self) -> str | None:
        """The epoch of the stream the message belongs to, from its id."""
        if self.id is None:
            return None
        epoch, sep, _ = self.id.rpartition("-")
        return epoch if sep and epoch else None


@dataclass(frozen=True, slots=True)
class Recall:
    """A message was recalled: ``ts`` and ``id`` are the recalled message's, ``seq`` the recall's own place."""

    group_id: str
    user_id: str
    ts: int
    id: str | None = None
    seq: int | None = None
    epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Joined:
    """A user's first socket in the group opened (nodes with ``presence_events = 1``)."""

    group_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Left:
    """A user's last socket in the group closed (nodes with ``presence_events = 1``)."""

    group_id: str
    user_id: str


@dataclass(frozen=True, slots=True)
class Presence:
    """Many users came or went at once (a reconnect storm): only the count of distinct users online."""

    group_id: str
    online: int


@dataclass(frozen=True, slots=True)
class Opened:
    """The chat socket opened (first time, or again after a reconnect) and the node sent its opening frame.

    ``events`` is the frame's list: the newest messages on a first open, every
    event missed on a resume that ``recovered``. The stream yields these same
    events one by one right after this one (minus any already yielded), so a
    consumer that only handles :class:`Message` and :class:`Recall` misses
    nothing; ``events`` is there to render a page at once. ``seq`` and
    ``epoch`` say where the group's stream stands. ``recovered`` is None on a
    first open, True when the node had every event missed, False otherwise (a
    :class:`NotRecovered` follows).
    """

    group_id: str
    events: tuple[Message | Recall, ...]
    total: int
    seq: int
    epoch: str
    recovered: bool | None
    resumed: bool  # a reconnect, as opposed to the first open


@dataclass(frozen=True, slots=True)
class NotRecovered:
    """A resume could not bring back every event missed since ``since`` of ``epoch``.

    Events may be missing between the last one yielded and those that follow:
    re-read the history (``Client.history``) if they matter. ``epoch`` and
    ``new_epoch`` differ when the group's stream restarted (it expired, or the
    storage lost its data).
    """

    group_id: str
    since: int
    epoch: str | None
    new_epoch: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost; the stream reconnects by itself in ``retry_in`` seconds (attempt ``attempt``).

    Sends in flight failed with :class:`~fastim.client.errors.ConnectionLost`;
    new sends wait for the reconnection.
    """

    code: int | None  # the close code, None when the connection broke or could not be made
    reason: str
    attempt: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class Notice:
    """An error frame the node sent that answers no send (e.g. ``503 storage unavailable`` before a close)."""

    code: int
    msg: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One group of the user's group list: its newest message (None when empty) and its message count."""

    group_id: str
    newest: Message | None
    total: int
    online: int | None = None  # distinct users online, from nodes that count them


@dataclass(frozen=True, slots=True)
class GroupList:
    """A push of the group-list socket: every group the user joined."""

    groups: tuple[GroupEntry, ...] = field(default_factory=tuple)


ChatEvent = Message | Recall | Joined | Left | Presence | Opened | NotRecovered | Disconnected | Notice
ListEvent = GroupList | Disconnected | Notice
