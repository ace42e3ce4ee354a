"""Typed domain errors; each carries a stable code that the interfaces map to answers."""


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "domain_error"


class InvalidArgument(DomainError):
    """A value that no storage call could make sense of (negative count, ...)."""

    code = "invalid_argument"


class MessageNotFound(DomainError):
    """No message of the group matches (user_id, ts)."""

    code = "message_not_found"


class RecallWindowExpired(DomainError):
    """The message is older than the recall window allows."""

    code = "recall_window_expired"


class NotAMember(DomainError):
    """The user has not joined the group and joining on connect is off."""

    code = "not_a_member"


class AuthenticationFailed(DomainError):
    """The credentials or the token do not match."""

    code = "authentication_failed"


class StorageUnavailable(DomainError):
    """The storage or the broker does not answer; the operation did not happen."""

    code = "storage_unavailable"


class OutcomeUnknown(StorageUnavailable):
    """The storage stopped answering after a write was sent: it may or may not have happened.

    After ``settle_after`` seconds it can no longer happen, and reading tells which.
    """

    code = "outcome_unknown"

    def __init__(self, message: str, settle_after: float = 0.0) -> None:
        super().__init__(message)
        self.settle_after = settle_after


class NotReplicated(OutcomeUnknown):
    """Stored and delivered, but fewer replicas than asked for confirmed it: a failover may lose it."""

    code = "not_replicated"


class TooManyRequests(DomainError):
    """The caller must wait: too many failed logins, or more work at once than the node takes."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds until trying again can succeed


class LoginsOff(DomainError):
    """Password logins are turned off (``[auth] password_logins = 0``): the application mints tokens."""

    code = "logins_off"


class GroupNotGranted(DomainError):
    """The caller's token (a JWT's ``groups`` claim) does not name this group."""

    code = "group_not_granted"


class JoinRefused(DomainError):
    """The join policy does not let this user into this group."""

    code = "join_refused"


class TooManyGroups(DomainError):
    """The user has joined as many groups as ``[im] max_groups_per_user`` allows."""

    code = "too_many_groups"


class MessageRejected(DomainError):
    """The application's publish hook refused the message; ``reason`` is what the sender is told."""

    code = "message_rejected"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HookFailed(DomainError):
    """The publish hook gave no usable answer, so the message was not reviewed.

    ``cause``: ``timeout``, ``unreachable`` (no connection, or it broke),
    ``status`` (not 200), ``answer`` (not a JSON object of the agreed shape, or
    too large), ``busy`` (``[hooks] max_in_flight`` calls already), ``error``.
    """

    code = "hook_failed"

    def __init__(self, message: str, cause: str = "error") -> None:
        super().__init__(message)
        self.cause = cause
