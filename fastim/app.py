"""make_app(container): the route table of one node."""

from __future__ import annotations

from functools import partial

import tornado.web

from fastim.container import Container, open_logins
from fastim.interfaces.http.access_log import log_request
from fastim.interfaces.http.base import NotFoundHandler
from fastim.interfaces.http.group import DelMessageHandler, ListMessageHandler, ListOldMessageHandler
from fastim.interfaces.http.health import HealthHandler, ReadyHandler
from fastim.interfaces.http.metrics import MetricsHandler
from fastim.interfaces.http.openapi import OpenApiHandler, build_document
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
from fastim.interfaces.ws.upgrade import UpgradeHandler

SEGMENT = r"([^/]+)"  # a non-empty path segment: fast-im's token "may not be empty"


def socket_routes(container: Container) -> list[tuple]:
    context = container.socket_context()
    common = {"cors": container.cors(), "limits": container.transport_limits()}
    chat = partial(ChatSocket, context, container.chat_services())
    group_list = partial(GroupListSocket, context, container.list_services())
    return [
        (rf"/group/chat/{SEGMENT}/{SEGMENT}/{SEGMENT}", UpgradeHandler, {**common, "socket_factory": chat}),
        (rf"/group/list/{SEGMENT}/{SEGMENT}", UpgradeHandler, {**common, "socket_factory": group_list}),
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


def make_app(container: Container) -> tornado.web.Application:
    http = container.http_context()
    routes = http_routes(container)
    document = build_document([(path, handler) for path, handler, _ in routes] + [("/openapi.json", OpenApiHandler)], http.gate)
    routes.append((r"/openapi.json", OpenApiHandler, {"http": http, "document": document}))
    routes.extend(socket_routes(container))
    routes.extend(web_routes(logins_open=bool(open_logins(container))))
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args={"http": http},
        log_function=log_request,
    )
