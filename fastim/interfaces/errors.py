"""The one table that turns domain errors into client answers (HTTP envelopes and WebSocket frames)."""

from __future__ import annotations

from dataclasses import dataclass

from fastim.domain.errors import (
    AuthenticationFailed,
    DomainError,
    GroupNotGranted,
    InvalidArgument,
    JoinRefused,
    LoginsOff,
    MessageNotFound,
    NotAMember,
    NotReplicated,
    OutcomeUnknown,
    RecallWindowExpired,
    StorageUnavailable,
    TooManyGroups,
    TooManyRequests,
)

# Codes and texts fixed by fast-im's ResultUtil and its README.
CODE_OK = 200
CODE_FAILED = 100
CODE_LOGIN_REQUIRED = 440
MSG_OK = "操作成功"
MSG_LOGIN_REQUIRED = "请登录后访问"
MSG_RECALLED = "撤回消息成功"
MSG_NOT_FOUND = "消息不存在"
MSG_RECALL_TOO_LATE = "无法撤回消息"
# Our own additions, in the same envelope.
CODE_BAD_REQUEST = 400
CODE_FORBIDDEN = 403
CODE_TOO_MANY_REQUESTS = 429
CODE_INTERNAL = 500
CODE_UNAVAILABLE = 503
CODE_OUTCOME_UNKNOWN = 504
MSG_LOGIN_REFUSED = "用户名或密码错误"


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status of the envelope
    code: int  # the envelope's code, also the code of a WebSocket error frame
    msg: str


def answer_for(error: DomainError) -> Answer:
    if isinstance(error, MessageNotFound):
        return Answer(200, CODE_FAILED, MSG_NOT_FOUND)
    if isinstance(error, RecallWindowExpired):
        return Answer(200, CODE_FAILED, MSG_RECALL_TOO_LATE)
    if isinstance(error, AuthenticationFailed):
        return Answer(200, CODE_FAILED, MSG_LOGIN_REFUSED)
    if isinstance(error, NotAMember):
        return Answer(403, CODE_FORBIDDEN, "not a member of this group; join it first")
    if isinstance(error, GroupNotGranted):
        return Answer(403, CODE_FORBIDDEN, "the token does not grant this group")
    if isinstance(error, LoginsOff):
        return Answer(403, CODE_FORBIDDEN, "password logins are off on this server")
    if isinstance(error, JoinRefused):
        return Answer(403, CODE_FORBIDDEN, "not allowed to join this group")
    if isinstance(error, TooManyGroups):
        return Answer(200, CODE_FAILED, str(error))
    if isinstance(error, TooManyRequests):
        return Answer(429, CODE_TOO_MANY_REQUESTS, str(error))
    if isinstance(error, InvalidArgument):
        return Answer(400, CODE_BAD_REQUEST, str(error))
    if isinstance(error, NotReplicated):
        return Answer(504, CODE_OUTCOME_UNKNOWN, "stored and delivered, but no replica confirmed it in time")
    if isinstance(error, OutcomeUnknown):
        return Answer(504, CODE_OUTCOME_UNKNOWN, "the storage stopped answering; it may or may not have been stored")
    if isinstance(error, StorageUnavailable):
        return Answer(503, CODE_UNAVAILABLE, "storage unavailable, try again shortly")
    return Answer(500, CODE_INTERNAL, "internal error")
