"""What the SDK raises: a refused HTTP call, a refused or lost send, a socket the node closed for good."""

from __future__ import annotations

from types import MappingProxyType

# Close codes after which the SDK does not reconnect: the node said no, and would say it again.
CLOSE_LOGIN_REQUIRED = 4440  # the token is not (or no longer) the user's: log in again
CLOSE_NOT_ALLOWED = 4403  # not a member, not allowed to join, or disconnected by the application
CLOSE_BAD_PATH = 4400  # an invalid id in the path, or a malformed since/epoch
CLOSE_POLICY = 1008  # the node judged this client abusive (too slow, too many pings, fragments)
CLOSE_TOO_BIG = 1009  # sent by the SDK: a frame from the node was over max_frame_bytes


class FastimError(Exception):
    """Base of every error the SDK raises."""


class Unreachable(FastimError):
    """The node could not be reached (refused, timed out, not HTTP); nothing was done there."""


class BadAnswer(FastimError):
    """The node's answer is not what the protocol says (not JSON, wrong types): nothing of it is trusted."""


class ApiError(FastimError):
    """The node answered an HTTP call with an error envelope: ``code`` and ``msg`` are the node's."""

    def __init__(self, code: int, msg: str, status: int = 200) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.status = status  # the HTTP status (200 for fast-im's in-envelope errors such as 440 or 100)


class LoginRefused(ApiError):
    """``/user/login`` said no (wrong password: code 100; too many failures: 429)."""


class SendError(FastimError):
    """A send that did not succeed. ``maybe_stored`` says whether the message may still have been stored.

    Answered with an error frame, ``code`` and ``msg`` are the node's (413 too
    large, 429 too fast, 403 rejected by the application, 503 not stored, 504
    storage stopped answering: maybe stored).
    """

    def __init__(self, code: int | None, msg: str, *, maybe_stored: bool = False) -> None:
        super().__init__(msg if code is None else f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.maybe_stored = maybe_stored


class ConnectionLost(SendError):
    """The connection dropped after the message was written and before the node answered.

    The message may or may not have been stored: the SDK never sends it again by
    itself. Look for it (the chat resumes and delivers it if it was stored) before
    sending it again.
    """

    def __init__(self, msg: str = "the connection was lost before the node answered; the message may or may not "
                                  "have been stored") -> None:
        super().__init__(None, msg, maybe_stored=True)


class NotSent(SendError):
    """The message was never written: the chat was closed, or not connected within the send's timeout."""

    def __init__(self, msg: str) -> None:
        super().__init__(None, msg, maybe_stored=False)


class FinalClose(FastimError):
    """The node closed the socket for a reason that reconnecting would not cure; the stream has ended.

    ``code`` is the WebSocket close code (or the HTTP status of a refused
    handshake), ``reason`` the node's words.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the node: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class LoginEnded(FinalClose):
    """4440: the token is not the user's, or its login ended (logout, a newer login, expiry)."""


class NotAllowed(FinalClose):
    """4403: not a member of the group, not allowed to join, or disconnected by the application."""


class BadRequest(FinalClose):
    """4400: the node refused the path (an invalid id) or the resume query."""


class PolicyViolation(FinalClose):
    """1008: the node found this client too slow or abusive; 1009 sent by the SDK: a frame over its bound."""


_FINAL_BY_CODE = MappingProxyType({
    CLOSE_LOGIN_REQUIRED: LoginEnded,
    CLOSE_NOT_ALLOWED: NotAllowed,
    CLOSE_BAD_PATH: BadRequest,
    CLOSE_POLICY: PolicyViolation,
})


def final_close(code: int, reason: str) -> FinalClose | None:
    """The error a close with ``code`` ends the stream with; None when the SDK should reconnect.

    Final: 4440, 4403, 4400, 1008 and every other application code (4000-4999),
    which a node uses to say no. Everything else (1001 going away, 1006
    dropped, 1011, 1013 try again later, ...) is worth a reconnect.
    """
    kind = _FINAL_BY_CODE.get(code)
    if kind is not None:
        return kind(code, reason)
    if 4000 <= code <= 4999:
        return FinalClose(code, reason)
    return None
