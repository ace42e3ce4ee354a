"""``Client``: one user at one node (or a proxy in front of several): login, history, chat and group-list sockets."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from fastim.client import parsing
from fastim.client.chat import Chat
from fastim.client.errors import ApiError, BadAnswer, FastimError, LoginRefused
from fastim.client.events import Message
from fastim.client.group_list import GroupListStream
from fastim.client.http import HttpApi
from fastim.client.stream import Stream, StreamOptions

WS_SCHEMES = MappingProxyType({"http": "ws", "https": "wss"})
# The token path segment of a node with login_auth = 0, which accepts any token.
NO_TOKEN = "-"
# An HTTP answer larger than this is refused whole; a history page of 200 messages of 4 KiB is under 1 MiB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

S = TypeVar("S", bound=Stream[Any])


@dataclass(frozen=True, slots=True)
class History:
    """A history answer: messages oldest first; ``clipped`` when the node cut it to ``limit`` messages."""

    messages: tuple[Message, ...]
    clipped: bool = False
    limit: int | None = None


def is_jwt(token: str) -> bool:
    """A JWT (three dot-separated parts) rather than a fast-im login token (32 hex digits)."""
    return token.count(".") == 2


def ws_base_of(base_url: str) -> str:
    """``http://host:port[/prefix]`` -> ``ws://host:port[/prefix]`` (``https`` -> ``wss``)."""
    parts = urlsplit(base_url)
    if parts.scheme not in WS_SCHEMES or not parts.netloc:
        raise ValueError(f"the node's URL must be http://HOST:PORT or https://HOST:PORT, not {base_url!r}")
    return urlunsplit((WS_SCHEMES[parts.scheme], parts.netloc, parts.path.rstrip("/"), "", ""))


class Client:
    """One user's client of a fastim node, an async context manager.

    ``base_url`` is the node's HTTP address (``http://127.0.0.1:9000``); the
    WebSocket addresses are derived from it. Log in with :meth:`login`, or give
    ``user_id`` and ``token`` up front: a fast-im login token, or a JWT the
    application minted (sent as ``Authorization: Bearer`` to the HTTP API).
    Without a token, sockets use the path segment ``-``, which nodes with
    ``login_auth = 0`` accept.

    Every socket the client opened is closed with it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        user_id: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        options: StreamOptions | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_base = ws_base_of(self.base_url)
        self.user_id = user_id
        self.token = token
        self.options = options or StreamOptions()
        self._http = HttpApi(self.base_url, timeout=timeout, max_answer_bytes=MAX_ANSWER_BYTES)
        self._streams: list[Stream[Any]] = []

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every socket opened by this client, and its HTTP connections."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.close()
        self._http.close()

    # -- login -----------------------------------------------------------------------------

    async def login(self, user_id: str, password: str) -> str:
        """``/user/login``: the new token (kept for what follows). Raises :class:`LoginRefused`."""
        try:
            answer = await self._http.post("/user/login", {"userId": user_id, "password": password}, {})
        except ApiError as exc:
            raise LoginRefused(exc.code, exc.msg, exc.status) from None
        token = answer.get("msg")
        if not token:
            raise BadAnswer("the login answer holds no token")
        self.user_id, self.token = user_id, token
        return token

    async def logout(self) -> None:
        """``/user/logout``: the token stops working and every socket opened with it is closed (4440)."""
        await self._post("/user/logout", {})
        self.token = None

    # -- groups and history ----------------------------------------------------------------

    async def join_group(self, group_id: str) -> None:
        await self._post("/user/joinGroup", {"groupId": group_id})

    async def leave_group(self, group_id: str) -> None:
        await self._post("/user/leaveGroup", {"groupId": group_id})

    async def list_groups(self) -> list[str]:
        """The ids of the groups the user joined."""
        data = (await self._post("/user/listGroup", {})).get("data")
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise BadAnswer("listGroup's data must be a list of group ids")
        return data

    async def history(self, group_id: str, start: int = 0, end: int = -1) -> History:
        """Messages by list index ``start..end`` inclusive, oldest first (negative indexes count from the newest)."""
        answer = await self._post("/group/listMessage", {"groupId": group_id, "startPage": start, "endPage": end})
        history = _history(answer)
        if history is None:
            raise BadAnswer("listMessage's data must be a list")
        return history

    async def history_before(self, group_id: str, user_id: str, ts: int, count: int) -> History | None:
        """The ``count`` messages just before the message (``user_id``, ``ts``); None when it is not found."""
        answer = await self._post(
            "/group/listOldMessage", {"groupId": group_id, "userId": user_id, "ts": ts, "count": count}
        )
        return _history(answer)

    async def recall(self, group_id: str, *, id: str | None = None, ts: int | None = None) -> None:  # noqa: A002
        """Recall one's own message, named by ``id`` (or by fast-im's ``ts``); raises :class:`ApiError` if refused."""
        if (id is None) == (ts is None):
            raise ValueError("recall takes id or ts")
        form: dict[str, object] = {"groupId": group_id}
        form["id" if id is not None else "ts"] = id if id is not None else ts
        await self._post("/group/delMessage", form)

    # -- sockets ---------------------------------------------------------------------------

    async def chat(self, group_id: str, *, since: int | None = None, epoch: str | None = None) -> Chat:
        """Open the group's chat socket and wait for its opening frame (the first event it yields).

        ``since`` and ``epoch`` resume from a position saved earlier
        (:attr:`Chat.position`). Raises :class:`Unreachable` when the node cannot
        be reached, or a :class:`FinalClose` when it refuses the socket.
        """
        return await self._open(Chat(self.ws_base, group_id, self._credentials, self.options, since=since,
                                     epoch=epoch))

    async def group_list(self) -> GroupListStream:
        """Open the user's group-list socket and wait for its first push."""
        return await self._open(GroupListStream(self.ws_base, self._credentials, self.options))

    async def _open(self, stream: S) -> S:
        self._credentials()  # no user: say so here, before any connection
        await stream.start()
        self._streams = [s for s in self._streams if not s.closed]
        self._streams.append(stream)
        return stream

    def _credentials(self) -> tuple[str, str]:
        """The user and token of the next connection (a new login is used at the next reconnect)."""
        if not self.user_id:
            raise FastimError("no user: log in first, or give user_id")
        return self.user_id, self.token or NO_TOKEN

    async def _post(self, path: str, form: dict[str, object]) -> dict[str, Any]:
        user_id, token = self._credentials()
        if token != NO_TOKEN and is_jwt(token):
            headers = {"userId": user_id, "Authorization": f"Bearer {token}"}
        else:
            headers = {"userId": user_id, "token": token}
        return await self._http.post(path, form, headers)


def _history(answer: dict[str, Any]) -> History | None:
    data = answer.get("data")
    if data is None:
        return None
    if not isinstance(data, list):
        raise BadAnswer("a history answer's data must be a list")
    try:
        messages = tuple(parsing.message(parsing.load(item) if isinstance(item, str) else item) for item in data)
    except parsing.Malformed as exc:
        raise BadAnswer(f"a history answer holds a malformed message: {exc}") from None
    limit = answer.get("limit")
    return History(messages, answer.get("clipped") is True, limit if isinstance(limit, int) else None)
