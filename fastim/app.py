"""The route table of one node: ``routes(container, prefix)``, and ``make_app(container)`` serving it alone."""

from __future__ import annotations

import re
from functools import partial

import tornado.web

from fastim.container import Container, open_logins
from fastim.interfaces.http.access_log import log_request
from fastim.interfaces.http.base import NotFoundHandler
from fastim.interfaces.http.group import DelMessageHandler, ListMessageHandler, ListOldMessageHandler
from fastim.interfaces.http.health import HealthHandler, ReadyHandler
from fastim.interfaces.http.metrics import MetricsHandler
from fastim.interfaces.http.openapi import OpenApiHandler, build_document
from fastim.interfaces.http.server_api import (
    BroadcastHandler,
    DisconnectHandler,
    GroupHandler,
    PresenceHandler,
    PublishHandler,
    RecallHandler,
)
from fastim.interfaces.http.user import (
    JoinGroupHandler,
    LeaveGroupHandler,
    ListGroupHandler,
    LoginHandler,
    LogoutHandler,
)
from fastim.interfaces.web.page import web_routes
from fastim.interfaces.ws.chat import ChatSocket
from fastim.interfaces.ws.group_list import GroupListSocket
from fastim.interfaces.ws.handshake import SocketRoute
from fastim.interfaces.ws.upgrade import UpgradeHandler

SEGMENT = r"([^/]+)"  # a non-empty path segment: fast-im's token "may not be empty"


def socket_endpoints(container: Container, prefix: str = "") -> list[SocketRoute]:
    """The two socket URLs, under ``prefix``, and what opens a socket on each.

    Tornado's routes serve them, and so does the acceptor's handshake (fastim.interfaces.ws.handshake).
    """
    context = container.socket_context()
    pattern = re.escape(prefix)
    return [
        SocketRoute(rf"{pattern}/group/chat/{SEGMENT}/{SEGMENT}/{SEGMENT}",
                    partial(ChatSocket, context, container.chat_services())),
        SocketRoute(rf"{pattern}/group/list/{SEGMENT}/{SEGMENT}",
                    partial(GroupListSocket, context, container.list_services())),
    ]


def socket_routes(container: Container) -> list[tuple]:
    common = {"cors": container.cors(), "limits": container.transport_limits(), "metrics": container.metrics()}
    return [
        (route.pattern, UpgradeHandler, {**common, "socket_factory": route.factory})
        for route in socket_endpoints(container)
    ]


def http_routes(container: Container) -> list[tuple]:
    http = container.http_context()
    messages, groups, sessions = container.messages(), container.groups(), container.sessions()
    return [
        (r"/user/login", LoginHandler, {"http": http, "sessions": sessions}),
        (r"/user/logout", LogoutHandler, {"http": http, "sessions": sessions}),
        (r"/user/joinGroup", JoinGroupHandler, {"http": http, "groups": groups}),
        (r"/user/leaveGroup", LeaveGroupHandler, {"http": http, "groups": groups}),
        (r"/user/listGroup", ListGroupHandler, {"http": http, "groups": groups}),
        (r"/group/listMessage", ListMessageHandler, {"http": http, "messages": messages, "groups": groups}),
        (r"/group/listOldMessage", ListOldMessageHandler, {"http": http, "messages": messages, "groups": groups}),
        (r"/group/delMessage", DelMessageHandler, {"http": http, "messages": messages}),
        (r"/healthz", HealthHandler, {"http": http}),
        (r"/readyz", ReadyHandler, {"http": http, "storage": container.storage(), "broker": container.broker()}),
        (r"/metrics", MetricsHandler, {"http": http, "metrics": container.metrics()}),
    ]


def server_api_routes(container: Container) -> list[tuple]:
    """``/api/*``, only when ``[api] key`` is set."""
    if not container.config.api.key():
        return []
    common = {"http": container.http_context(), "api": container.server_api()}
    return [
        (r"/api/publish", PublishHandler, common),
        (r"/api/broadcast", BroadcastHandler, common),
        (r"/api/recall", RecallHandler, common),
        (r"/api/disconnect", DisconnectHandler, common),
        (rf"/api/presence/{SEGMENT}", PresenceHandler, common),
        (rf"/api/groups/{SEGMENT}", GroupHandler, common),
    ]


def routes(container: Container, prefix: str = "") -> list[tuple]:
    """Every route of the node, each path under ``prefix`` (``""``, or e.g. ``"/im"``).

    The OpenAPI document lists the paths with the prefix. The container's auth
    gate must know the open paths with the same prefix (``fastim.embed.mount``
    sees to that), since it judges the path a request came in on.
    """
    http = container.http_context()
    api = http_routes(container) + server_api_routes(container)
    documented = [(path.replace(SEGMENT, "{groupId}"), handler) for path, handler, _ in api]
    documented.append(("/openapi.json", OpenApiHandler))
    document = build_document([(prefix + path, handler) for path, handler in documented], http.gate)
    api.append((r"/openapi.json", OpenApiHandler, {"http": http, "document": document}))
    table = api + socket_routes(container) + web_routes(logins_open=bool(open_logins(container)))
    pattern = re.escape(prefix)
    return [(pattern + path, handler, kwargs) for path, handler, kwargs in table]


def make_app(container: Container) -> tornado.web.Application:
    """The node's own application: every route at the root, a JSON 404 elsewhere, tokens kept out of the access log."""
    return tornado.web.Application(
        routes(container),
        default_handler_class=NotFoundHandler,
        default_handler_args={"http": container.http_context()},
        log_function=log_request,
    )
