"""``/user/*``: login and logout, joining and leaving a group, listing one's groups."""

from __future__ import annotations

from fastim.domain.errors import TooManyRequests
from fastim.domain.groups import Groups
from fastim.domain.sessions import Sessions
from fastim.interfaces.acceptor import client_key
from fastim.interfaces.errors import CODE_OK
from fastim.interfaces.http.base import ApiHandler, HttpContext
from fastim.interfaces.http.schemas import GroupListEnvelope, JoinGroupForm, LeaveGroupForm, LoginEnvelope, LoginForm

LOGIN_DATA = "user_info"  # fast-im's placeholder for the user's profile


class LoginHandler(ApiHandler):
    """Log in: the token comes back in ``msg``, as fast-im does."""

    form_schema = LoginForm
    envelope = LoginEnvelope

    def initialize(self, http: HttpContext, sessions: Sessions) -> None:
        super().initialize(http)
        self.sessions = sessions

    async def post(self) -> None:
        form = self.form(LoginForm)
        try:
            # Failed logins are counted by address as connections are (an IPv6 /64 is one client).
            source = client_key(self.request.remote_ip)
            token = await self.sessions.login(form["userId"], form["password"], source=source)
        except TooManyRequests:
            self.http.metrics.login_throttled.inc()
            raise
        self.reply(CODE_OK, token, LOGIN_DATA)


class LogoutHandler(ApiHandler):
    """End the caller's login: the token stops working and every socket opened with it is closed (4440)."""

    def initialize(self, http: HttpContext, sessions: Sessions) -> None:
        super().initialize(http)
        self.sessions = sessions

    async def post(self) -> None:
        await self.sessions.logout(self.caller, self.request.headers.get("token", ""))
        self.ok()


class JoinGroupHandler(ApiHandler):
    """Join a group (idempotent); the node's join policy and ``max_groups_per_user`` apply."""

    form_schema = JoinGroupForm

    def initialize(self, http: HttpContext, groups: Groups) -> None:
        super().initialize(http)
        self.groups = groups

    async def post(self) -> None:
        form = self.form(JoinGroupForm)
        self.require_granted(form["groupId"])
        await self.groups.join(self.caller, form["groupId"])
        self.ok()


class LeaveGroupHandler(ApiHandler):
    """Leave a group (idempotent): it leaves the caller's group list."""

    form_schema = LeaveGroupForm

    def initialize(self, http: HttpContext, groups: Groups) -> None:
        super().initialize(http)
        self.groups = groups

    async def post(self) -> None:
        form = self.form(LeaveGroupForm)
        await self.groups.leave(self.caller, form["groupId"])
        self.ok()


class ListGroupHandler(ApiHandler):
    """The ids of the groups the caller joined."""

    envelope = GroupListEnvelope

    def initialize(self, http: HttpContext, groups: Groups) -> None:
        super().initialize(http)
        self.groups = groups

    async def post(self) -> None:
        joined = await self.groups.groups_of(self.caller)
        self.ok([group_id for group_id in joined if self.grant is None or self.grant.allows(group_id)])
