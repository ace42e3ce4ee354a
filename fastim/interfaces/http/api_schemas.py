"""marshmallow schemas of the server API (``/api/*``): JSON bodies in, fast-im envelopes out."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from fastim.interfaces.http.schemas import MESSAGE_ID_PATTERN, Envelope, identifier


class JsonBody(Schema):
    class Meta:
        unknown = RAISE  # a misspelt key is an error, not silently ignored


def _text(name: str) -> fields.String:
    return fields.String(
        required=True,
        validate=validate.Length(min=1, error=f"{name} must not be empty"),
        error_messages={"required": f"{name} is required", "null": f"{name} is required",
                        "invalid": f"{name} must be a string"},
        metadata={"description": "the message's text", "example": "hello"},
    )


class _InfoChecked(JsonBody):
    info = _text("info")

    @validates("info")
    def encodable(self, value: str, **kwargs) -> None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("info must be valid Unicode (no lone surrogates)") from None


class PublishBody(_InfoChecked):
    groupId = identifier("groupId")
    userId = identifier("userId")  # the author clients see: any id, a bot or a system user too


class BroadcastBody(_InfoChecked):
    groupIds = fields.List(
        identifier("groupId"),
        required=True,
        validate=validate.Length(min=1, error="groupIds must name at least one group"),
        error_messages={"required": "groupIds is required", "invalid": "groupIds must be a list of group ids"},
        metadata={"example": ["g1", "g2"]},
    )
    userId = identifier("userId")

    @validates("groupIds")
    def distinct(self, value: list[str], **kwargs) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("groupIds must not repeat a group")


class RecallBody(JsonBody):
    groupId = identifier("groupId")
    id = fields.String(
        required=True,
        validate=validate.Regexp(MESSAGE_ID_PATTERN, error="id must be a message id, as messages carry it"),
        error_messages={"required": "id is required", "null": "id is required", "invalid": "id must be a string"},
        metadata={"example": "3f9a1c2e-42"},
    )


class DisconnectBody(JsonBody):
    userId = identifier("userId")


class Published(Schema):
    groupId = fields.String(required=True)
    userId = fields.String(required=True)
    seq = fields.Integer(required=True, metadata={"description": "the message's place in the group's stream"})
    id = fields.String(required=True, metadata={"description": "{epoch}-{seq}: recall it by this id"})
    ts = fields.Integer(required=True)


class BroadcastResult(Schema):
    groupId = fields.String(required=True)
    seq = fields.Integer(metadata={"description": "on success"})
    id = fields.String(metadata={"description": "on success"})
    ts = fields.Integer(metadata={"description": "on success"})
    code = fields.Integer(metadata={"description": "on failure: what a publish to this group alone would answer"})
    msg = fields.String(metadata={"description": "on failure"})


class OnlineUserSchema(Schema):
    userId = fields.String(required=True)
    sockets = fields.Integer(required=True, metadata={"description": "open chat sockets in the group, all nodes"})


class PresenceData(Schema):
    groupId = fields.String(required=True)
    users = fields.List(fields.Nested(OnlineUserSchema), required=True)


class GroupData(Schema):
    groupId = fields.String(required=True)
    total = fields.Integer(required=True, metadata={"description": "messages in the group's list"})
    seq = fields.Integer(required=True, metadata={"description": "the stream's latest seq (0: none yet)"})
    epoch = fields.String(required=True, metadata={"description": "the stream's epoch (\"\": none yet)"})
    online = fields.Integer(required=True, metadata={"description": "distinct users online in the group"})


class DisconnectData(Schema):
    userId = fields.String(required=True)
    revoked = fields.Boolean(required=True, metadata={"description": "whether a fast-im login token was revoked"})


class PublishEnvelope(Envelope):
    data = fields.Nested(Published)


class BroadcastEnvelope(Envelope):
    data = fields.List(fields.Nested(BroadcastResult), metadata={"description": "one result per group, in order"})
    failed = fields.Integer(metadata={"description": "how many groups failed"})


class RecallEnvelope(Envelope):
    data = fields.Dict(metadata={"description": "the recall event, as chat sockets receive it"})


class DisconnectEnvelope(Envelope):
    data = fields.Nested(DisconnectData)


class PresenceEnvelope(Envelope):
    data = fields.Nested(PresenceData)


class GroupEnvelope(Envelope):
    data = fields.Nested(GroupData)
