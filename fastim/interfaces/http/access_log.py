"""The access log, with login tokens kept out of it.

Both WebSocket URLs carry the user's token as their last path segment; a log
line shows ``***`` in its place and never the query string, where a careless
client might put one too. Headers are never logged.
"""

from __future__ import annotations

import logging
import re

import tornado.httputil
import tornado.web

access_log = logging.getLogger("tornado.access")

# /group/chat/{groupId}/{userId}/{token} and /group/list/{userId}/{token}, at the root
# or under the prefix of an application that embeds fastim (/im/group/chat/...)
_TOKEN_SEGMENT = re.compile(r"(/group/chat/[^/]*/[^/]*/|/group/list/[^/]*/)[^/]+")
REDACTED = "***"


def redact_path(path: str) -> str:
    """``path`` with the token segment of a WebSocket URL replaced by ``***``."""
    return _TOKEN_SEGMENT.sub(lambda match: match.group(1) + REDACTED, path, count=1)


def request_summary(request: tornado.httputil.HTTPServerRequest) -> str:
    """``GET /group/list/u1/*** (127.0.0.1)``: what a log line may say about a request."""
    return f"{request.method} {redact_path(request.path)} ({request.remote_ip})"


def log_request(handler: tornado.web.RequestHandler) -> None:
    """The application's ``log_function``: Tornado's access log line, redacted."""
    status = handler.get_status()
    if status < 400:
        log = access_log.info
    elif status < 500 or getattr(handler, "refused_client", False):  # a client over its limit is no fault of ours
        log = access_log.warning
    else:
        log = access_log.error
    log("%d %s %.2fms", status, request_summary(handler.request), 1000.0 * handler.request.request_time())
