"""The Sessions service: login, logout, tokens and the socket authentication rule."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from fastim.domain.errors import AuthenticationFailed, LoginsOff, StorageUnavailable
from fastim.domain.ids import is_valid_id
from fastim.domain.model import Grant, GrantKind, SessionsChanged, UserDisconnected
from fastim.domain.ports import Authenticator, Broker, GrantVerifier, TokenRepository
from fastim.domain.throttle import LoginThrottle, NoThrottle

logger = logging.getLogger(__name__)

TOKEN_BYTES = 16  # 32 lowercase hex characters, the shape of fast-im's UUID-without-dashes tokens
# Tokens of other programs may differ in shape; none needs more than this, so a longer header is
# refused before it costs a storage call.
TOKEN_MAX_LENGTH = 128
# A refused login is answered no sooner than this after it arrived, whatever the authenticator
# took: an unknown user and a wrong password look the same from outside, and guessing is slower.
FAILED_LOGIN_FLOOR_S = 0.25


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


class Sessions:
    def __init__(
        self,
        tokens: TokenRepository,
        authenticator: Authenticator,
        broker: Broker | None = None,
        *,
        token_ttl: int,
        login_auth: bool,
        throttle: LoginThrottle | NoThrottle | None = None,
        failed_login_floor_s: float = FAILED_LOGIN_FLOOR_S,
        verifier: GrantVerifier | None = None,
        password_logins: bool = True,
    ) -> None:
        self._tokens = tokens
        self._authenticator = authenticator
        self._broker = broker  # tells every node when a user's token changes
        self._token_ttl = token_ttl
        self._login_auth = login_auth
        self._throttle = throttle or NoThrottle()
        self._failed_login_floor_s = failed_login_floor_s
        self._verifier = verifier  # JWTs the application minted, beside fast-im's login tokens
        self._password_logins = password_logins

    @property
    def login_auth(self) -> bool:
        """Whether sockets need a token: ``[im] login_auth``, or always once JWTs are configured."""
        return self._login_auth or self._verifier is not None

    @property
    def takes_jwts(self) -> bool:
        return self._verifier is not None

    @property
    def password_logins(self) -> bool:
        return self._password_logins

    async def login(self, user_id: str, password: str, source: str = "") -> str:
        """A fresh token for the user, replacing any earlier one (whose sockets are then closed).

        ``source`` is the client's address, for the per-address throttle.
        """
        if not self._password_logins:
            raise LoginsOff("password logins are off on this server; connect with a token from the application")
        self._throttle.check(user_id, source)
        started = time.monotonic()
        if not await self._authenticator.authenticate(user_id, password):
            self._throttle.failed(user_id, source)
            await asyncio.sleep(max(0.0, started + self._failed_login_floor_s - time.monotonic()))
            raise AuthenticationFailed(f"login refused for user {user_id}")
        token = new_token()
        await self._tokens.issue(user_id, token, self._token_ttl)
        await self._announce(user_id)
        return token

    async def logout(self, user_id: str, token: str) -> None:
        """End the login ``token`` of the user; every socket opened with it is closed."""
        await self._tokens.revoke(user_id, token)
        await self._announce(user_id)

    async def check(self, user_id: str, token: str) -> bool:
        """True when ``token`` is the user's token; each success renews its TTL."""
        if not is_valid_id(user_id) or not token or len(token) > TOKEN_MAX_LENGTH:
            return False
        return await self._tokens.check_and_renew(user_id, token, self._token_ttl)

    async def authorize_socket(self, user_id: str, token: str) -> Grant | None:
        """The WebSocket rule: with ``login_auth`` (or JWTs) the token must be valid, else anything goes.

        Returns what the checked token grants, or ``None`` when no token was checked.
        """
        if not self.login_auth:
            return None
        return await self.grant(user_id, token)

    async def grant(self, user_id: str, token: str) -> Grant:
        """What ``token`` (a JWT, or fast-im's login token, renewed) grants ``user_id``; AuthenticationFailed if nothing."""
        if self._verifier is not None and self._verifier.recognizes(token):
            if not is_valid_id(user_id):
                raise AuthenticationFailed("invalid userId")
            return self._verifier.verify(token, user_id)
        if not await self.check(user_id, token):
            raise AuthenticationFailed(f"invalid token for user {user_id}")
        return Grant(user_id, GrantKind.LOGIN, float(self._token_ttl))

    def bearer(self, token: str, user_id: str | None) -> Grant:
        """What a bearer JWT grants the user its ``sub`` names (which must be ``user_id`` when one is given)."""
        if self._verifier is None or not self._verifier.recognizes(token):
            raise AuthenticationFailed("the bearer token is not a JWT")
        return self._verifier.verify(token, user_id)

    def refresh(self, grant: Grant, token: str) -> Grant:
        """A socket opened with a JWT presents a fresh one: what it grants the same user."""
        if self._verifier is None or grant.kind is not GrantKind.JWT or not self._verifier.recognizes(token):
            raise AuthenticationFailed("only a socket opened with a JWT takes a new one")
        return self._verifier.verify(token, grant.user_id)

    async def disconnect(self, user_id: str) -> bool:
        """The application ends the user's presence: its login token is revoked and every node closes its sockets.

        Whether the user had a login token. JWTs are not revoked: they end at their ``exp``.
        """
        revoked = await self._tokens.revoke_all(user_id)
        if self._broker is not None:
            await self._broker.notify(UserDisconnected(user_id))
        return revoked

    async def remaining(self, user_id: str, token: str) -> float | None:
        """Seconds ``token`` still lives, or ``None`` when it is no longer the user's token."""
        return await self._tokens.remaining(user_id, token)

    async def _announce(self, user_id: str) -> None:
        if self._broker is None:
            return
        try:
            await self._broker.notify(SessionsChanged(user_id))
        except StorageUnavailable as exc:
            # The token itself changed; sockets opened with the old one find out at their next check.
            logger.warning("could not tell the nodes that user %s's token changed: %s", user_id, exc)
