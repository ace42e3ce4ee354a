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
