"""A client of a fastim node for tests: HTTP calls with envelopes back, chat sockets with frames read under a deadline.

It runs in the test's own event loop (``asyncio.run`` in a plain test,
pytest-tornado's ``gen_test``, pytest-asyncio, ...). HTTP goes through the
standard library in a worker thread; WebSockets need the ``websockets``
package (fastim's ``test`` extra installs it), imported on first use.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

# A node on loopback answers in milliseconds; 5 s leaves room for a loaded CI machine
# while a test waiting for a frame that never comes still fails quickly.
TIMEOUT_S = 5.0
# A clean close takes one round trip; a node that does not answer it is not worth waiting for.
CLOSE_TIMEOUT_S = 2.0
CODE_OK = 200
LOGIN_REQUIRED = 440  # the frame a chat socket gets before its close when the token is not the user's
# Loopback needs no proxy, whatever HTTP_PROXY says.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FastimError(Exception):
    """The node answered a call or a frame with an error envelope; ``code`` and ``msg`` are its."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg


class SocketClosed(Exception):
    """The node closed the socket; ``code`` and ``reason`` are its close frame's."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"socket closed: {code} {reason or ''}".rstrip())
        self.code = code
        self.reason = reason


class Client:
    """Talks to the node at ``base_url`` (``http://127.0.0.1:PORT``): the ``fastim_client`` fixture."""

    def __init__(self, base_url: str, timeout: float = TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    async def post(self, path: str, fields: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None) -> dict:
        """POST form ``fields`` to ``path`` (``/group/listMessage``); the envelope ``{"code", "msg", "data"}``."""
        body = urlencode({name: str(value) for name, value in (fields or {}).items()}).encode()
        request = urllib.request.Request(self.base_url + path, data=body, headers=dict(headers or {}), method="POST")
        return await asyncio.to_thread(self._fetch, request)

    def _fetch(self, request: urllib.request.Request) -> dict:
        try:
            with _NO_PROXY.open(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # 4xx and 5xx answers carry the envelope too
            with error:
                return json.loads(error.read())

    async def login(self, user_id: str, password: str = "password") -> Session:
        """Log in through ``/user/login``; the session, or :class:`FastimError` when the node refuses."""
        envelope = await self.post("/user/login", {"userId": user_id, "password": password})
        if envelope["code"] != CODE_OK:
            raise FastimError(envelope["code"], envelope["msg"])
        return Session(self, user_id, envelope["msg"])

    def chat(self, group_id: str, user_id: str, token: str = "-", **resume: Any) -> ChatSocket:
        """A chat socket of ``group_id`` for ``user_id``; ``await`` it, or use it with ``async with``.

        ``resume`` may name ``since`` and ``epoch`` (see the README on resuming).
        """
        path = "/group/chat/" + "/".join(quote(part, safe="") for part in (group_id, user_id, token))
        if resume:
            path += "?" + urlencode(resume)
        return ChatSocket(self.ws_url(path), self.timeout)

    def ws_url(self, path: str) -> str:
        return "ws" + self.base_url[len("http"):] + path


class Session:
    """A logged-in user: calls carry its ``userId`` and ``token`` headers, sockets its token."""

    def __init__(self, client: Client, user_id: str, token: str) -> None:
        self.client = client
        self.user_id = user_id
        self.token = token

    async def post(self, path: str, **fields: Any) -> dict:
        """POST ``fields`` to ``path`` as this user; the envelope."""
        return await self.client.post(path, fields, headers={"userId": self.user_id, "token": self.token})

    def chat(self, group_id: str, **resume: Any) -> ChatSocket:
        return self.client.chat(group_id, self.user_id, self.token, **resume)


class ChatSocket:
    """One chat socket. Entering it (``async with``, or ``await``) connects and reads the opening frame into :attr:`opening`."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.opening: dict | None = None  # {"list": [...], "total": N, "seq": S, "epoch": E}
        self._connection: Any = None

    def __await__(self):
        return self.open().__await__()

    async def __aenter__(self) -> ChatSocket:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> ChatSocket:
        """Connect and read the opening frame; :class:`SocketClosed` when the node refuses the socket (4440, 4403)."""
        connect = _websockets_connect()
        options = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}
        self._connection = await connect(
            self.url, open_timeout=self.timeout, close_timeout=CLOSE_TIMEOUT_S, compression=None,
            ping_interval=None,  # the node pings; this client answers
            **options,
        )
        try:
            self.opening = await self.receive()
            if self.opening == LOGIN_REQUIRED:  # fast-im's refusal frame; the close (4440) follows
                await self.receive()
                raise SocketClosed(None, "login required")
        except BaseException:
            await self.close()
            raise
        return self

    async def send(self, text: str) -> None:
        """Send a chat message; the node echoes it to every socket of the group, this one included."""
        await self._connection.send(text)

    async def receive(self, timeout: float | None = None) -> Any:
        """The next frame, decoded from JSON: a message, a recall event, or an error frame.

        Raises :class:`TimeoutError` when none comes within ``timeout`` (5 s by
        default), :class:`FastimError` for an error frame (``{"code", "msg"}``)
        and :class:`SocketClosed` once the node has closed the socket.
        """
        from websockets.exceptions import ConnectionClosed

        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                text = await self._connection.recv()
        except ConnectionClosed as closed:
            frame = closed.rcvd
            raise SocketClosed(frame.code if frame else None, frame.reason if frame else None) from None
        frame = json.loads(text)
        if isinstance(frame, dict) and set(frame) == {"code", "msg"}:
            raise FastimError(frame["code"], frame["msg"])
        return frame

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def _websockets_connect():
    try:
        from websockets.asyncio.client import connect
    except ImportError as exc:  # absent, or older than 13.0 (no asyncio API)
        raise ImportError(
            "fastim.testing's chat sockets need websockets>=13: pip install 'fastim[test]' or 'websockets>=13'"
        ) from exc
    return connect
