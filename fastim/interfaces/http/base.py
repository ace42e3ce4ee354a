"""The base of every HTTP handler: the envelope, the gate, CORS and the one error path."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import tornado.web
from marshmallow import Schema, ValidationError

from fastim.domain.errors import (
    AuthenticationFailed,
    DomainError,
    GroupNotGranted,
    StorageUnavailable,
    TooManyRequests,
)
from fastim.domain.model import Grant
from fastim.interfaces.errors import (
    CODE_BAD_REQUEST,
    CODE_INTERNAL,
    CODE_LOGIN_REQUIRED,
    CODE_OK,
    MSG_LOGIN_REQUIRED,
    MSG_OK,
    answer_for,
)
from fastim.interfaces.http.access_log import request_summary
from fastim.interfaces.http.gate import AuthGate, CorsPolicy
from fastim.interfaces.http.schemas import Envelope, ErrorEnvelope
from fastim.interfaces.metrics import Metrics

logger = logging.getLogger(__name__)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # a caller's id is echoed only when harmless


class LoginRequired(Exception):
    """The request lacks a live login: answered with fast-im's 440 envelope."""


class HttpContext:
    """What every HTTP handler shares: the gate, the CORS policy and the node's metrics."""

    def __init__(self, gate: AuthGate, cors: CorsPolicy, metrics: Metrics) -> None:
        self.gate = gate
        self.cors = cors
        self.metrics = metrics
        self.in_flight = 0  # requests being answered; shutdown waits for them


class ApiHandler(tornado.web.RequestHandler):
    """Answers every request, good or bad, with ``{"code", "msg", "data"}``."""

    http_method = "post"  # fast-im's API is POST only; the probes and documents are GET
    form_schema: type[Schema] | None = None
    envelope: type[Schema] = Envelope

    def initialize(self, http: HttpContext) -> None:
        self.http = http
        self.http.in_flight += 1
        self._counted = True
        self.set_default_headers()  # Tornado's own first call came before http was known

    def on_finish(self) -> None:
        self._uncount()

    def on_connection_close(self) -> None:
        self._uncount()  # the client left: finish() may never come
        super().on_connection_close()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.http.in_flight -= 1

    @property
    def request_id(self) -> str:
        if not hasattr(self, "_request_id"):
            given = self.request.headers.get("X-Request-Id", "")
            self._request_id = given if REQUEST_ID_PATTERN.match(given) else uuid.uuid4().hex
        return self._request_id

    def set_default_headers(self) -> None:
        # Also runs after clear() on errors, so error answers keep these headers.
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("X-Request-Id", self.request_id)
        if hasattr(self, "http"):
            for name, value in self.http.cors.headers(self.request.headers.get("Origin")).items():
                self.set_header(name, value)

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        headers = self.request.headers
        try:
            self.grant = await self.http.gate.admit(
                self.request.path, headers.get("userId"), headers.get("token"), headers.get("Authorization")
            )
        except AuthenticationFailed:
            raise LoginRequired() from None

    def check_xsrf_cookie(self) -> None:
        """No XSRF check, even when a host application embedding fastim sets ``xsrf_cookies``.

        The API authenticates by the ``userId`` and ``token`` headers, which a
        cross-site form cannot send, and never by cookies.
        """

    grant: Grant | None = None  # what the request's credentials allow, once prepare() admitted it

    @property
    def caller(self) -> str:
        """The user the gate admitted (header ``userId``, or a bearer JWT's ``sub``)."""
        if self.grant is None:
            raise LoginRequired()
        return self.grant.user_id

    def require_granted(self, group_id: str) -> None:
        """A JWT's ``groups`` claim limits the groups its holder reads and writes."""
        if self.grant is not None and not self.grant.allows(group_id):
            raise GroupNotGranted(f"the token does not grant group {group_id}")

    def options(self, *args: Any) -> None:
        """CORS preflight: the headers are already set by set_default_headers."""
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()

    def form(self, schema: type[Schema]) -> dict[str, Any]:
        """The request's fields (query and form body, urlencoded or multipart) loaded by ``schema``.

        Values are taken exactly as sent (the last one of a repeated field, as
        ``get_argument`` does): Tornado's ``get_argument`` would strip white
        space and turn control characters into spaces, so ``"u1\\n"`` would pass as ``"u1"``.
        """
        given = {}
        for name, values in self.request.arguments.items():
            try:
                given[name] = values[-1].decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError({name: [f"{name} is not valid UTF-8"]}) from None
        return schema().load(given)

    def given(self) -> set[str]:
        return set(self.request.arguments)

    def reply(
        self, code: int, msg: str, data: Any = None, *, schema: type[Schema] | None = None, **extra: Any
    ) -> None:
        """Finish with the envelope; ``extra`` keys (our own additions) follow fast-im's three."""
        body = (schema or self.envelope)().dump({"code": code, "msg": msg, "data": data, **extra})
        self.finish(json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    def ok(self, data: Any = None, msg: str = MSG_OK) -> None:
        self.reply(CODE_OK, msg, data)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, LoginRequired):
            self.set_status(200)
            self.reply(CODE_LOGIN_REQUIRED, MSG_LOGIN_REQUIRED)
        elif isinstance(error, ValidationError):
            self.set_status(400)
            self.reply(CODE_BAD_REQUEST, describe(error), schema=ErrorEnvelope)
        elif isinstance(error, DomainError):
            answer = answer_for(error)
            if isinstance(error, TooManyRequests):
                self.set_header("Retry-After", str(max(1, round(error.retry_after))))
            self.set_status(answer.status)
            self.reply(answer.code, answer.msg, schema=ErrorEnvelope)
        elif isinstance(error, tornado.web.HTTPError) or error is None:
            reason = self._reason if status_code != 500 else "internal error"
            self.reply(status_code, reason, schema=ErrorEnvelope)
        else:
            self.reply(
                CODE_INTERNAL,
                f"internal error (request id {self.request_id})",
                {"requestId": self.request_id},
                schema=ErrorEnvelope,
            )

    def _request_summary(self) -> str:
        return request_summary(self.request)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, StorageUnavailable):
            self.http.metrics.storage_errors.inc()
            logger.warning("request %s %s: %s", self._request_summary(), self.request_id, value)
        elif isinstance(value, (ValidationError, DomainError, LoginRequired)):
            return  # an expected answer, not a fault of the node
        elif isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            logger.error(
                "request %s failed (request id %s)", self._request_summary(), self.request_id, exc_info=(typ, value, tb)
            )


def describe(error: ValidationError) -> str:
    """One line naming each bad field, e.g. ``groupId is required; ts must be an integer``."""
    messages = error.normalized_messages()
    parts = []
    for field, problems in sorted(messages.items()):
        if isinstance(problems, dict):
            problems = [text for values in problems.values() for text in values]
        parts.extend(problems if isinstance(problems, list) else [str(problems)])
    return "; ".join(str(part) for part in parts) or "invalid request"


class NotFoundHandler(ApiHandler):
    """Unknown paths: a 404 envelope, never an HTML page."""

    async def prepare(self) -> None:
        if self.request.method == "OPTIONS":
            return
        raise tornado.web.HTTPError(404, reason="no such path")
