"""JWT connection tokens (PyJWT): HS256 with ``[auth] jwt_secret``, or RS256/ES256 with ``jwt_public_key_file``.

A token's ``sub`` must be the userId it is presented for and its ``exp`` is
required; ``aud`` and ``iss`` are checked when configured, with
``[auth] jwt_leeway`` seconds of clock skew. An optional ``groups`` claim (a
list of group ids) limits the chat groups the token opens.
"""

from __future__ import annotations

import math
import time

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.ids import is_valid_id
from fastim.domain.model import Grant, GrantKind

# Longer than any token an application mints (an RS256 JWT with a few hundred groups is ~8 KB);
# a longer one is refused before it is decoded.
MAX_TOKEN_LENGTH = 16 * 1024
MAX_GROUPS_CLAIM = 10_000
# RFC 7518 §3.2: an HS256 key must have at least as many bits as the hash.
MIN_SECRET_BYTES = 32


class JwtSettingsError(ValueError):
    """The configured key cannot verify anything; ``str()`` is one line for the operator."""


def load_public_key(path: str) -> tuple[object, list[str]]:
    """The PEM public key in ``path`` and the one algorithm it verifies (RS256 or ES256)."""
    try:
        with open(path, "rb") as file:
            key = load_pem_public_key(file.read())
    except OSError as exc:
        raise JwtSettingsError(f"cannot read [auth] jwt_public_key_file {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise JwtSettingsError(f"[auth] jwt_public_key_file {path} is not a PEM public key") from exc
    if isinstance(key, RSAPublicKey):
        return key, ["RS256"]
    if isinstance(key, EllipticCurvePublicKey):
        return key, ["ES256"]
    raise JwtSettingsError(f"[auth] jwt_public_key_file {path} holds neither an RSA nor an EC public key")


class JwtVerifier:
    """A :class:`fastim.domain.ports.GrantVerifier` for JWTs."""

    def __init__(
        self, secret: str = "", public_key_file: str = "", audience: str = "", issuer: str = "", leeway: float = 0.0
    ) -> None:
        if secret:
            if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
                raise JwtSettingsError(f"[auth] jwt_secret must be at least {MIN_SECRET_BYTES} bytes for HS256")
            self._key, self._algorithms = secret, ["HS256"]
        elif public_key_file:
            self._key, self._algorithms = load_public_key(public_key_file)
        else:
            raise JwtSettingsError("JWTs need [auth] jwt_secret or jwt_public_key_file")
        self._audience = audience or None
        self._issuer = issuer or None
        self._leeway = leeway
        self._options = {"require": ["exp", "sub"], "verify_aud": bool(audience)}
        if issuer:
            self._options["require"].append("iss")

    @property
    def algorithms(self) -> list[str]:
        return list(self._algorithms)

    def recognizes(self, token: str) -> bool:
        """A JWT is three base64url parts; fast-im's login tokens are 32 hex characters."""
        return token.count(".") == 2

    def verify(self, token: str, user_id: str | None) -> Grant:
        if len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationFailed("token too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"invalid JWT: {exc}") from None
        subject = claims.get("sub")
        if user_id is None and isinstance(subject, str) and is_valid_id(subject):
            user_id = subject  # a bearer token names its user itself
        if subject != user_id:
            raise AuthenticationFailed("the JWT's sub is another user")
        groups = claims.get("groups")
        if groups is not None:
            if (
                not isinstance(groups, list)
                or len(groups) > MAX_GROUPS_CLAIM
                or not all(isinstance(group, str) and is_valid_id(group) for group in groups)
            ):
                raise AuthenticationFailed("the JWT's groups claim must be a list of group ids")
            groups = frozenset(groups)
        expires_at = claims["exp"]
        if isinstance(expires_at, bool) or not isinstance(expires_at, (int, float)) or not math.isfinite(expires_at):
            raise AuthenticationFailed("the JWT's exp must be a number")
        lives_s = max(0.0, expires_at + self._leeway - time.time())
        return Grant(user_id, GrantKind.JWT, lives_s, groups, float(expires_at))


def make_verifier(
    secret: str, public_key_file: str, audience: str = "", issuer: str = "", leeway: float = 0.0
) -> JwtVerifier | None:
    """The node's JWT verifier, or None when neither ``[auth] jwt_secret`` nor ``jwt_public_key_file`` is set."""
    if not secret and not public_key_file:
        return None
    return JwtVerifier(secret, public_key_file, audience, issuer, leeway)
