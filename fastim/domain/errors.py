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


class JoinRefused(DomainError):
    """The join policy does not let this user into this group."""

    code = "join_refused"


class TooManyGroups(DomainError):
    """The user has joined as many groups as ``[im] max_groups_per_user`` allows."""

    code = "too_many_groups"
