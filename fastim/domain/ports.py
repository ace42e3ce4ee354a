"""The ports the domain services depend on; adapters in fastim.infrastructure implement them.

Every storage call is one round trip to the storage, and raises
:class:`fastim.domain.errors.StorageUnavailable` when the storage does not answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from fastim.domain.model import (
    Appended,
    Event,
    Grant,
    GroupSummary,
    Joined,
    Message,
    Notice,
    OnlineUser,
    Page,
    Recall,
    RecallTarget,
    Tail,
)


class Clock(Protocol):
    """The time source of the domain and of the in-memory TTLs."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch."""
        ...


class MessageRepository(Protocol):
    """Each group's stream of events: its message list, oldest first (``gml:{groupId}``), numbered by seq.

    Every event of a group (a message, a recall) takes the next seq of the
    group's stream, starting at 1, and is announced on the group's channel
    in the same atomic step that stores it, so subscribers receive a
    group's events in seq order. A stream has an epoch, a string that
    changes whenever its numbering restarts (the group expired, the storage
    lost its data); a message's id is ``{epoch}-{seq}``.
    """

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> Appended:
        """Store ``message`` as its group's next event and announce it; the stored message, with seq and id.

        The list's TTL is renewed; with ``max_length > 0`` the oldest messages
        beyond that many are dropped in the same step. Raises
        :class:`StorageUnavailable` when the message was not stored and never
        will be, and :class:`OutcomeUnknown` when that cannot be told yet.
        """
        ...

    async def find(self, draft: Message, window: int) -> Message | None:
        """The stored copy of ``draft`` (same group, author, ts and text), searched as :meth:`before` does."""
        ...

    async def newest(self, group_id: str, count: int) -> Page:
        """The newest ``count`` messages (oldest first), the total and the stream's seq and epoch.

        ``count <= 0`` gives no messages.
        """
        ...

    async def tail(self, group_id: str, since: int, limit: int) -> Tail:
        """The events after seq ``since`` that storage still holds, oldest first, and the stream's seq and epoch.

        When more than ``limit`` events came after ``since``, none is read and
        the tail is not complete. A recalled message is left out; its recall
        event is there, as long as no more than ``limit`` events came after it.
        """
        ...

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        """Messages with list index ``start..end`` inclusive, negative indexes counting from the end.

        At most the first ``limit`` of them: the work done never depends on how wide the range is.
        """
        ...

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        """Up to ``count`` messages just before the anchor (user_id, ts), oldest first.

        The anchor is searched among the newest ``window`` messages, then, in
        an older part of the list, among the ``window`` messages on either side
        of where its ``ts`` places it (a list is appended in time order); the
        newest match wins. ``None`` when no such message is found. The work
        done is O(window + log of the list's length).
        """
        ...

    async def remove(self, target: RecallTarget, window: int, ttl_seconds: int, keep_recalls: int) -> Recall | None:
        """Remove the message ``target`` names and announce its recall event, in one step; the event, or ``None``.

        The message is searched by (user, ts) as :meth:`before` does, or by id
        (which holds its seq: O(log n)); only the user's own message matches.
        A message older than ``target.not_before_ms`` is left alone:
        :class:`RecallWindowExpired`. The newest ``keep_recalls`` recall
        events are kept (for :meth:`tail`), with the TTL ``ttl_seconds``.
        """
        ...

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        """The newest message (or ``None``) and the total of each group, in the given order."""
        ...


class MembershipRepository(Protocol):
    """The groups each user joined (``ugs:{userId}``)."""

    async def join(self, user_id: str, group_id: str, max_groups: int = 0) -> Joined:
        """Add the group to the user's set, unless the user is in ``max_groups`` groups already (0: no limit).

        Idempotent; the check and the addition are one atomic step.
        """
        ...

    async def leave(self, user_id: str, group_id: str) -> bool:
        """Remove the group from the user's set; whether it was there."""
        ...

    async def groups_of(self, user_id: str) -> list[str]:
        ...

    async def count(self, user_id: str) -> int:
        """How many groups the user joined, in O(1)."""
        ...

    async def is_member(self, user_id: str, group_id: str) -> bool:
        ...


class TokenRepository(Protocol):
    """Login tokens (``login:{userId}``), one per user."""

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        """Store ``token`` as the user's token, replacing any earlier one."""
        ...

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        """True when ``token`` is the user's current token; its TTL is then renewed."""
        ...

    async def remaining(self, user_id: str, token: str) -> float | None:
        """Seconds ``token`` still lives (``math.inf`` without expiry); ``None`` when it is not the user's token."""
        ...

    async def revoke(self, user_id: str, token: str) -> bool:
        """Delete the user's token if it is ``token``; whether it was."""
        ...

    async def revoke_all(self, user_id: str) -> bool:
        """Delete the user's token, whatever it is; whether there was one."""
        ...


class GrantVerifier(Protocol):
    """Checks connection tokens the application minted (JWTs) without asking the storage."""

    def recognizes(self, token: str) -> bool:
        """Whether ``token`` has this verifier's shape (and so is not a fast-im login token)."""
        ...

    def verify(self, token: str, user_id: str | None) -> Grant:
        """The grant ``token`` gives ``user_id`` (None: the user its ``sub`` names); raises :class:`AuthenticationFailed`."""
        ...


class Authenticator(Protocol):
    """Decides whether a login attempt may have a token (fast-im's UserService)."""

    async def authenticate(self, user_id: str, password: str) -> bool:
        ...


class JoinPolicy(Protocol):
    """Decides who may join which group; the default lets anyone join anything, as fast-im does."""

    async def may_join(self, user_id: str, group_id: str) -> bool:
        ...


class PublishHook(Protocol):
    """The application's review of a chat send before it is stored (``[hooks] publish_url``)."""

    async def review(self, group_id: str, user_id: str, info: str) -> str:
        """The text to store: ``info`` as sent, or the application's replacement.

        Raises :class:`MessageRejected` when the application refuses the
        message, :class:`HookFailed` when it gives no usable answer.
        """
        ...

    async def close(self) -> None:
        """Release the hook's connections; a review still in flight may finish first."""
        ...


EventListener = Callable[[str, Event], Awaitable[None] | None]
NoticeListener = Callable[[Notice], Awaitable[None] | None]
ResumeListener = Callable[[frozenset[str]], Awaitable[None] | None]


class Broker(Protocol):
    """Publish/subscribe of each group's events (``mq:{groupId}``) across nodes."""

    @property
    def healthy(self) -> bool:
        """Whether events published anywhere reach this node now."""
        ...

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to the listeners of its group on every node."""
        ...

    async def subscribe(self, group_id: str, listener: EventListener) -> None:
        """Call ``listener(group_id, event)`` for each event of the group until unsubscribed."""
        ...

    async def unsubscribe(self, group_id: str, listener: EventListener) -> None:
        """Undo one :meth:`subscribe`; unknown pairs are ignored."""
        ...

    async def subscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        """:meth:`subscribe` to each group, in one round trip."""
        ...

    async def unsubscribe_many(self, group_ids: Iterable[str], listener: EventListener) -> None:
        """:meth:`unsubscribe` from each group, in one round trip."""
        ...

    async def notify(self, notice: Notice) -> None:
        """Tell every node, this one included, about ``notice``."""
        ...

    async def watch_notices(self, listener: NoticeListener) -> None:
        """Call ``listener(notice)`` for every notice any node sends from now on."""
        ...

    def on_resume(self, listener: ResumeListener) -> None:
        """Call ``listener(groups)`` each time delivery resumes after the broker lost its connection.

        Events published while it was away were not delivered; the listener
        can catch up on the given groups from storage.
        """
        ...

    async def close(self) -> None:
        ...


class PresenceRepository(Protocol):
    """Who is online in each group, kept per node: each node writes its own sockets' counts under a lease.

    A node's entries in a group count while its lease there lives; a node that
    stops renewing (killed) drops out when the lease lapses, and the next call
    of any node on that group removes it and reports its users' leave. A call
    that makes a user's first socket in a group (over all live nodes) or its
    last one announces, with ``announce``, one :class:`PresenceChanged` per
    group on the group's channel. ``lease_s`` must exceed the time between a
    node's renewals.
    """

    async def apply(
        self, node_id: str, changes: Mapping[str, Mapping[str, int]], lease_s: float, announce: bool
    ) -> set[str]:
        """Set the node's socket count of each (group, user) in ``changes`` (0: none left) and renew its leases there.

        The groups of ``changes`` where the node held no live lease before the
        call (new to it, or lapsed): its other users there must be written again.
        """
        ...

    async def renew(self, node_id: str, group_ids: Iterable[str], lease_s: float, announce: bool) -> set[str]:
        """Renew the node's lease in each group; the groups where it had lapsed (its entries are gone)."""
        ...

    async def drop(self, node_id: str, group_ids: Iterable[str], announce: bool) -> None:
        """Remove the node's entries from each group at once: its users there leave (a graceful stop)."""
        ...

    async def users(self, group_id: str) -> list[OnlineUser]:
        """The users online in the group on live nodes, sorted by user id, with their sockets summed over nodes."""
        ...

    async def counts(self, group_ids: Iterable[str]) -> dict[str, int]:
        """Distinct users online in each group (0: none), in one round trip."""
        ...


class Storage(Protocol):
    """The readiness probe of the storage behind the repositories."""

    async def ping(self) -> bool:
        """True when the storage answers."""
        ...
