"""``/api/*``: the server API an application's backend calls, authenticated by ``Authorization: apikey <key>``.

Served only when ``[api] key`` is set. JSON bodies in, fast-im's envelopes
``{"code","msg","data"}`` out. The key is compared in constant time and never
logged; requests are not subject to the userId/token gate.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError

from fastim.domain.codec import event_object
from fastim.domain.errors import DomainError
from fastim.domain.ids import is_valid_id
from fastim.domain.messages import Messages
from fastim.domain.model import Message
from fastim.domain.presence import Presence
from fastim.domain.sessions import Sessions
from fastim.interfaces.errors import CODE_OK, MSG_OK, answer_for
from fastim.interfaces.http.api_schemas import (
    BroadcastBody,
    BroadcastEnvelope,
    DisconnectBody,
    DisconnectEnvelope,
    GroupEnvelope,
    PresenceEnvelope,
    PublishBody,
    PublishEnvelope,
    RecallBody,
    RecallEnvelope,
)
from fastim.interfaces.http.base import ApiHandler, HttpContext
from fastim.interfaces.http.schemas import ErrorEnvelope

API_KEY_SCHEME = "apikey "
CODE_UNAUTHORIZED = 401
MSG_UNAUTHORIZED = 'the server API needs "Authorization: apikey <key>" with the configured key'


class ApiKeyRefused(Exception):
    """The request lacks the server API's key: 401."""


@dataclass(frozen=True)
class ServerApi:
    """What every server API handler uses, built once."""

    key: str
    messages: Messages
    sessions: Sessions
    presence: Presence
    max_message_bytes: int
    broadcast_max: int

    def admits(self, authorization: str | None) -> bool:
        if not authorization or authorization[: len(API_KEY_SCHEME)].lower() != API_KEY_SCHEME:
            return False
        given = authorization[len(API_KEY_SCHEME):].strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.key.encode("utf-8"))


def published(message: Message) -> dict[str, Any]:
    return {"groupId": message.group_id, "userId": message.user_id, "seq": message.seq, "id": message.id,
            "ts": message.ts}


class ServerApiHandler(ApiHandler):
    """Base of the ``/api/*`` handlers: the API key instead of a user's login, and a JSON body."""

    security = "apikey"  # for the OpenAPI document
    body_schema: type[Schema] | None = None

    def initialize(self, http: HttpContext, api: ServerApi) -> None:
        super().initialize(http)
        self.api = api

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        if not self.api.admits(self.request.headers.get("Authorization")):
            raise ApiKeyRefused()

    def body(self, schema: type[Schema]) -> dict[str, Any]:
        """The request's JSON object, loaded by ``schema``."""
        try:
            data = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise ValidationError({"body": ["the body must be a JSON object"]}) from None
        if not isinstance(data, dict):
            raise ValidationError({"body": ["the body must be a JSON object"]})
        loader = schema()
        unknown = sorted(set(data) - set(loader.fields))
        if unknown:  # named, where marshmallow would only say "Unknown field."
            raise ValidationError({"body": [f"unknown key {name[:64]!r}" for name in unknown[:5]]})
        return loader.load(data)

    def path_id(self, value: str) -> str:
        """A groupId from the path, checked as form fields are."""
        if not is_valid_id(value):
            raise ValidationError({"groupId": ["groupId must not contain spaces, control characters or '/'"]})
        return value

    def check_size(self, info: str) -> None:
        size = len(info.encode("utf-8"))
        if size > self.api.max_message_bytes:
            raise ValidationError({"info": [f"info of {size} bytes is over the limit of {self.api.max_message_bytes}"]})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, ApiKeyRefused):
            self.set_status(401)
            self.set_header("WWW-Authenticate", "apikey")
            self.reply(CODE_UNAUTHORIZED, MSG_UNAUTHORIZED, schema=ErrorEnvelope)
            return
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ApiKeyRefused):
            return  # the access log has the 401; the header itself is never logged
        super().log_exception(typ, value, tb)


class PublishHandler(ServerApiHandler):
    """Store and broadcast a message as a chat send would (no publish hook); answers its seq, id and ts."""

    body_schema = PublishBody
    envelope = PublishEnvelope

    async def post(self) -> None:
        body = self.body(PublishBody)
        self.check_size(body["info"])
        message = await self.api.messages.post(body["groupId"], body["userId"], body["info"])
        self.ok(published(message))


class BroadcastHandler(ServerApiHandler):
    """Publish one text to several groups in one call; one result per group, in the order given."""

    body_schema = BroadcastBody
    envelope = BroadcastEnvelope

    async def post(self) -> None:
        body = self.body(BroadcastBody)
        self.check_size(body["info"])
        groups = body["groupIds"]
        if len(groups) > self.api.broadcast_max:
            raise ValidationError({"groupIds": [f"at most {self.api.broadcast_max} groups per call"]})
        outcomes = await asyncio.gather(
            *(self.api.messages.post(group_id, body["userId"], body["info"]) for group_id in groups),
            return_exceptions=True,
        )
        results, failed = [], 0
        for group_id, outcome in zip(groups, outcomes):
            if isinstance(outcome, Message):
                results.append(published(outcome))
                continue
            if not isinstance(outcome, DomainError):
                raise outcome
            failed += 1
            answer = answer_for(outcome)
            results.append({"groupId": group_id, "code": answer.code, "msg": answer.msg})
        self.reply(CODE_OK, MSG_OK, results, failed=failed)


class RecallHandler(ServerApiHandler):
    """Recall any message by id, whatever its author and age (moderation); answers the recall event."""

    body_schema = RecallBody
    envelope = RecallEnvelope

    async def post(self) -> None:
        body = self.body(RecallBody)
        recall = await self.api.messages.moderate(body["groupId"], body["id"])
        self.ok(event_object(recall))


class DisconnectHandler(ServerApiHandler):
    """Close every socket of the user on every node (close code 4403) and revoke its fast-im login token."""

    body_schema = DisconnectBody
    envelope = DisconnectEnvelope

    async def post(self) -> None:
        body = self.body(DisconnectBody)
        revoked = await self.api.sessions.disconnect(body["userId"])
        self.ok({"userId": body["userId"], "revoked": revoked})


class PresenceHandler(ServerApiHandler):
    """The users online in the group across every node, with their open chat sockets."""

    http_method = "get"
    envelope = PresenceEnvelope

    async def get(self, group_id: str) -> None:
        group_id = self.path_id(group_id)
        users = await self.api.presence.users(group_id)
        self.ok({"groupId": group_id, "users": [{"userId": u.user_id, "sockets": u.sockets} for u in users]})


class GroupHandler(ServerApiHandler):
    """A group at a glance: messages held, where its stream stands, distinct users online."""

    http_method = "get"
    envelope = GroupEnvelope

    async def get(self, group_id: str) -> None:
        group_id = self.path_id(group_id)
        page, counts = await asyncio.gather(
            self.api.messages.position(group_id), self.api.presence.counts([group_id])
        )
        self.ok({"groupId": group_id, "total": page.total, "seq": page.seq, "epoch": page.epoch,
                 "online": counts.get(group_id, 0)})
