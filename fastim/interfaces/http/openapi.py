"""``/openapi.json``: the OpenAPI 3 document of the HTTP API, generated from the marshmallow schemas."""

from __future__ import annotations

import json
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

import fastim
from fastim.interfaces.http.base import ApiHandler, HttpContext
from fastim.interfaces.http.gate import AuthGate
from fastim.interfaces.http.schemas import Envelope, ErrorEnvelope

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
AUTH_HEADERS = [
    {"in": "header", "name": "userId", "required": True, "schema": {"type": "string"}, "example": "1"},
    {
        "in": "header",
        "name": "token",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "description": "the token /user/login returned in msg",
    },
]


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


SECURITY_SCHEMES = {
    "apikey": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "the server API's key, sent as `Authorization: apikey <key>` ([api] key)",
    },
    "bearerJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "a JWT the application minted ([auth] jwt_secret or jwt_public_key_file); "
                       "instead of the userId and token headers",
    },
}


def _server_api_operation(path: str, handler: type[ApiHandler]) -> tuple[str, dict[str, Any]]:
    """An ``/api/*`` operation: API key security, a JSON body or a path parameter."""
    doc = (handler.__doc__ or path).strip().splitlines()[0]
    operation: dict[str, Any] = {
        "summary": doc,
        "tags": ["server API"],
        "security": [{"apikey": []}],
        "responses": {
            "200": _json(handler.envelope, "the envelope; `code` 200 on success, 100 when the message is not found"),
            "400": _json(ErrorEnvelope, "a missing or malformed field; `msg` names it"),
            "401": _json(ErrorEnvelope, "no API key, or a wrong one"),
            "503": _json(ErrorEnvelope, "the storage is unavailable; try again"),
            "504": _json(ErrorEnvelope, "the storage stopped answering: the outcome is unknown"),
        },
    }
    body = getattr(handler, "body_schema", None)
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if "{groupId}" in path:
        operation["parameters"] = [
            {"in": "path", "name": "groupId", "required": True, "schema": {"type": "string"}, "example": "g1"}
        ]
    return handler.http_method, operation


def _operation(path: str, handler: type[ApiHandler], gate: AuthGate) -> tuple[str, dict[str, Any]]:
    if getattr(handler, "security", None) == "apikey":
        return _server_api_operation(path, handler)
    method = handler.http_method
    doc = (handler.__doc__ or path).strip().splitlines()[0]
    responses: dict[str, Any] = {
        "200": _json(handler.envelope, "the envelope; `code` 200 on success, 100 on a business failure"
                     + ("" if gate.is_open(path) else ", 440 without a live login")),
        "400": _json(ErrorEnvelope, "a missing or malformed field; `msg` names it"),
        "500": _json(ErrorEnvelope, "an unexpected failure; `data.requestId` identifies it in the logs"),
        "503": _json(ErrorEnvelope, "the storage is unavailable; try again"),
    }
    operation: dict[str, Any] = {"summary": doc, "responses": responses}
    if not gate.is_open(path):
        operation["parameters"] = AUTH_HEADERS
        # userId + token headers, or (with JWTs configured) a bearer JWT instead
        operation["security"] = [{}, {"bearerJwt": []}]
    form = handler.form_schema
    if form is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {media: {"schema": form} for media in FORM_TYPES},
        }
    return method, operation


def build_document(routes: list[tuple[str, type]], gate: AuthGate) -> dict[str, Any]:
    """One OpenAPI 3 document for the HTTP routes (WebSocket routes are described in README)."""
    spec = APISpec(
        title="fastim",
        version=fastim.__version__,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Group-chat HTTP API, wire-compatible with fast-im."},
    )
    spec.components.schema("Envelope", schema=Envelope)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for path, handler in routes:
        if isinstance(handler, type) and issubclass(handler, ApiHandler):
            method, operation = _operation(path, handler, gate)
            spec.path(path=path, operations={method: operation})
    return spec.to_dict()


class OpenApiHandler(ApiHandler):
    """This document."""

    http_method = "get"

    def initialize(self, http: HttpContext, document: dict[str, Any]) -> None:
        super().initialize(http)
        self.document = document

    def get(self) -> None:
        self.finish(json.dumps(self.document, ensure_ascii=False))
