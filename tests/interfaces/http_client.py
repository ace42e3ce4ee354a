"""A small client of the HTTP API for tests: form posts, envelopes back."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode


class Api:
    def __init__(self, http_client, base_url: str) -> None:
        self.http_client = http_client
        self.base_url = base_url
        self.tokens: dict[str, str] = {}

    async def call(self, path, fields=None, headers=None, *, method="POST", multipart=False, raw_body=None):
        headers = dict(headers or {})
        body = None
        if method == "POST":
            if raw_body is not None:
                body = raw_body
            elif multipart:
                body, content_type = encode_multipart(fields or {})
                headers["Content-Type"] = content_type
            else:
                body = urlencode(fields or {})
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        response = await self.http_client.fetch(
            self.base_url + path, method=method, body=body, headers=headers, raise_error=False
        )
        return response

    async def post(self, path, fields=None, user=None, **kwargs):
        headers = kwargs.pop("headers", None) or (self.auth(user) if user else {})
        response = await self.call(path, fields, headers, **kwargs)
        return response.code, json.loads(response.body)

    async def login(self, user: str) -> str:
        status, body = await self.post("/user/login", {"userId": user, "password": "pw"})
        assert status == 200 and body["code"] == 200, body
        self.tokens[user] = body["msg"]
        return body["msg"]

    def auth(self, user: str) -> dict[str, str]:
        return {"userId": user, "token": self.tokens[user]}


def encode_multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    lines = []
    for name, value in fields.items():
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", str(value)]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("utf-8"), f"multipart/form-data; boundary={boundary}"
