"""marshmallow schemas of every HTTP request form and response envelope (SPEC §4)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from fastim.domain.ids import ID_MAX_LENGTH, ID_PATTERN, is_valid_id


def _required(name: str) -> dict[str, str]:
    return {"required": f"{name} is required", "null": f"{name} is required"}


class _WholeId(validate.Validator):
    """The whole value is an id (fullmatch): a trailing newline or a NUL does not slip through."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __call__(self, value: str) -> str:
        if not is_valid_id(value):
            raise ValidationError(self.error)
        return value


def identifier(name: str, **kwargs) -> fields.String:
    return fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=ID_MAX_LENGTH, error=f"{name} must be 1 to {ID_MAX_LENGTH} characters"),
            _WholeId(f"{name} must not contain spaces, control characters or '/'"),
        ],
        error_messages={**_required(name), "invalid": f"{name} must be text"},
        metadata={"description": f"{name} (a string id)", "example": "1", "pattern": ID_PATTERN},
        **kwargs,
    )


SAFE_INTEGER = 2**53 - 1  # exact in JavaScript clients and in Redis' Lua numbers
MESSAGE_ID_PATTERN = r"^[0-9a-f]{1,32}-[0-9]{1,16}$"  # {epoch}-{seq}


def integer(name: str, minimum: int = -SAFE_INTEGER, **kwargs) -> fields.Integer:
    return fields.Integer(
        strict=False,
        validate=validate.Range(
            min=minimum, max=SAFE_INTEGER, error=f"{name} must be an integer from {minimum} to {SAFE_INTEGER}"
        ),
        error_messages={**_required(name), "invalid": f"{name} must be an integer"},
        **kwargs,
    )


class FormSchema(Schema):
    class Meta:
        unknown = EXCLUDE


class LoginForm(FormSchema):
    userId = identifier("userId")
    password = fields.String(required=True, error_messages=_required("password"), metadata={"example": "123456"})


class JoinGroupForm(FormSchema):
    groupId = identifier("groupId")


class LeaveGroupForm(FormSchema):
    groupId = identifier("groupId")


class RangeForm(FormSchema):
    """``/group/listMessage`` by index: Redis LRANGE semantics, negative indexes allowed."""

    groupId = identifier("groupId")
    startPage = integer("startPage", required=True, metadata={"example": 0})
    endPage = integer("endPage", required=True, metadata={"example": 5})


class ListOldMessageForm(FormSchema):
    userId = identifier("userId")
    groupId = identifier("groupId")
    ts = integer("ts", required=True, metadata={"example": 1648443134344})
    count = integer("count", minimum=0, required=True, metadata={"example": 4})


class DelMessageForm(FormSchema):
    """fast-im names the message by ``ts`` (with the caller as author); ours may name it by ``id`` instead."""

    groupId = identifier("groupId")
    ts = integer("ts", metadata={"example": 1648443134344})
    id = fields.String(
        validate=validate.Regexp(MESSAGE_ID_PATTERN, error="id must be a message id, as messages carry it"),
        metadata={"description": "the message's id (it wins over ts)", "example": "3f9a1c2e-42"},
    )

    @validates_schema
    def ts_or_id(self, data: dict, **kwargs) -> None:
        if "ts" not in data and "id" not in data:
            raise ValidationError("ts or id is required", "ts")


class Envelope(Schema):
    """Every answer: ``{"code": int, "msg": str, "data": any}``."""

    code = fields.Integer(required=True, metadata={"example": 200})
    msg = fields.String(required=True, metadata={"example": "操作成功"})
    data = fields.Raw(allow_none=True, metadata={"example": None})


class LoginEnvelope(Envelope):
    msg = fields.String(required=True, metadata={"description": "the login token, 32 lowercase hex characters"})
    data = fields.String(metadata={"example": "user_info"})


class MessageListEnvelope(Envelope):
    data = fields.List(
        fields.String(metadata={"description": "one message as a JSON string"}),
        allow_none=True,
        metadata={"description": "messages oldest first; null when the anchor message does not exist"},
    )
    clipped = fields.Boolean(
        metadata={"description": "present (true) when more messages were asked for than one answer holds"}
    )
    limit = fields.Integer(
        metadata={"description": "with clipped: the most messages one answer holds ([im] history_page_max)"}
    )


class GroupListEnvelope(Envelope):
    data = fields.List(fields.String(), metadata={"description": "ids of the groups the caller joined"})


class ErrorEnvelope(Envelope):
    data = fields.Dict(
        allow_none=True,
        metadata={"description": "on code 500: {\"requestId\": ...}, to quote when reporting the failure"},
    )


def list_message_form(fields_given) -> type[FormSchema]:
    """The seed README documents history under ``/group/listMessage`` too: ts or count selects it."""
    if "ts" in fields_given or "count" in fields_given:
        return ListOldMessageForm
    return RangeForm
