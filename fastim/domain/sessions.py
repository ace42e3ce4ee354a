"""The Sessions service: login, tokens and the socket authentication rule."""

from __future__ import annotations

import secrets

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.ports import Authenticator, TokenRepository

TOKEN_BYTES = 16  # 32 lowercase hex characters, the shape of fast-im's UUID-without-dashes tokens


def new_token() -> str:
    return secrets.token_hex(TOKEN_BYTES)


class Sessions:
    def __init__(
        self,
        tokens: TokenRepository,
        authenticator: Authenticator,
        *,
        token_ttl: int,
        login_auth: bool,
    ) -> None:
        self._tokens = tokens
        self._authenticator = authenticator
        self._token_ttl = token_ttl
        self._login_auth = login_auth

    async def login(self, user_id: str, password: str) -> str:
        """A fresh token for the user, replacing any earlier one."""
        if not await self._authenticator.authenticate(user_id, password):
            raise AuthenticationFailed(f"login refused for user {user_id}")
        token = new_token()
        await self._tokens.issue(user_id, token, self._token_ttl)
        return token

    async def check(self, user_id: str, token: str) -> bool:
        """True when ``token`` is the user's token; each success renews its TTL."""
        if not user_id or not token:
            return False
        return await self._tokens.check_and_renew(user_id, token, self._token_ttl)

    async def authorize_socket(self, user_id: str, token: str) -> None:
        """The WebSocket rule: with ``login_auth`` the token must match, else anything goes."""
        if self._login_auth and not await self.check(user_id, token):
            raise AuthenticationFailed(f"invalid token for user {user_id}")
