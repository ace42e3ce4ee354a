"""The authentication gate of the HTTP API and the CORS policy, both configured in one place."""

from __future__ import annotations

from collections.abc import Iterable

from fastim.domain.model import Grant
from fastim.domain.sessions import Sessions

BEARER = "bearer "


class AuthGate:
    """Every path outside ``open_paths`` needs headers ``userId`` and ``token`` of a live login.

    With JWTs configured, ``Authorization: Bearer <jwt>`` does instead: the caller is
    the JWT's ``sub`` (a ``userId`` header, if sent too, must be the same user).
    """

    def __init__(self, sessions: Sessions, open_paths: Iterable[str]) -> None:
        self._sessions = sessions
        self._open_paths = frozenset(open_paths)

    @property
    def open_paths(self) -> frozenset[str]:
        return self._open_paths

    def is_open(self, path: str) -> bool:
        return path in self._open_paths

    async def admit(
        self, path: str, user_id: str | None, token: str | None, authorization: str | None = None
    ) -> Grant | None:
        """What the request's credentials grant; None on an open path. Raises AuthenticationFailed."""
        if self.is_open(path):
            return None
        # Without JWTs configured a bearer header is someone else's (a proxy's): the headers decide.
        if self._sessions.takes_jwts and authorization and authorization[: len(BEARER)].lower() == BEARER:
            jwt = authorization[len(BEARER):].strip()
            return self._sessions.bearer(jwt, user_id or None)
        return await self._sessions.grant(user_id or "", token or "")


class CorsPolicy:
    """fast-im's ``@CrossOrigin``, with the allowed origins a setting (``*`` = any)."""

    ALLOWED_HEADERS = "userId, token, Authorization, Content-Type, X-Request-Id"
    ALLOWED_METHODS = "POST, GET, OPTIONS"
    MAX_AGE_S = "600"  # browsers re-check the preflight every ten minutes

    def __init__(self, allowed_origins: Iterable[str] = ("*",)) -> None:
        origins = frozenset(allowed_origins)
        self._any = "*" in origins
        self._origins = origins

    def allows(self, origin: str | None) -> bool:
        return origin is None or self._any or origin in self._origins

    def headers(self, origin: str | None) -> dict[str, str]:
        """Response headers for a request from ``origin``; none for a refused or same-origin one."""
        if not origin or not self.allows(origin):
            return {}
        return {
            "Access-Control-Allow-Origin": "*" if self._any else origin,
            "Access-Control-Allow-Headers": self.ALLOWED_HEADERS,
            "Access-Control-Allow-Methods": self.ALLOWED_METHODS,
            "Access-Control-Expose-Headers": "X-Request-Id",
            "Access-Control-Max-Age": self.MAX_AGE_S,
            "Vary": "Origin",
        }
