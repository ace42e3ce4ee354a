"""JWT connection tokens: what a token must hold to be accepted, for HS256, RS256 and ES256 keys."""

from __future__ import annotations

import hashlib
import hmac
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastim.domain.errors import AuthenticationFailed
from fastim.domain.model import GrantKind
from fastim.infrastructure.jwt_verifier import JwtSettingsError, JwtVerifier, make_verifier

SECRET = "a-secret-of-at-least-thirty-two-bytes!"


def mint(claims=None, key=SECRET, algorithm="HS256", **extra):
    payload = {"sub": "u1", "exp": int(time.time()) + 60, **(claims or {}), **extra}
    return jwt.encode(payload, key, algorithm=algorithm)


def test_a_valid_token_grants_its_user_until_exp():
    exp = int(time.time()) + 60
    grant = JwtVerifier(SECRET).verify(mint(exp=exp), "u1")
    assert grant.user_id == "u1" and grant.kind is GrantKind.JWT and grant.groups is None
    assert grant.expires_at == exp and 58 < grant.lives_s <= 60


@pytest.mark.parametrize("make_token", [
    lambda: mint(sub="u2"),  # another user's
    lambda: mint(exp=int(time.time()) - 1),  # expired
    lambda: mint(key="another-secret-of-thirty-two-bytes-long"),  # wrong key
    lambda: jwt.encode({"sub": "u1"}, SECRET, algorithm="HS256"),  # no exp
    lambda: jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),  # no sub
    lambda: mint(nbf=int(time.time()) + 30),  # not yet valid
    lambda: mint(groups="g1"),  # groups must be a list
    lambda: mint(groups=["g1", 5]),
    lambda: mint(groups=["bad group"]),
    lambda: mint(exp="tomorrow"),
    lambda: "a.b.c",
    lambda: "x" * 20000 + ".a.b",
])
def test_refused_tokens(make_token):
    with pytest.raises(AuthenticationFailed):
        JwtVerifier(SECRET).verify(make_token(), "u1")


def test_an_unsigned_token_is_refused():
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(f'{{"sub":"u1","exp":{int(time.time()) + 60}}}'.encode()).decode()
    with pytest.raises(AuthenticationFailed):
        JwtVerifier(SECRET).verify(f"{header}.{body}.", "u1")


def test_the_groups_claim_limits_the_groups():
    grant = JwtVerifier(SECRET).verify(mint(groups=["g1", "g2"]), "u1")
    assert grant.allows("g1") and grant.allows("g2") and not grant.allows("g3")


def test_audience_and_issuer_are_checked_when_configured():
    verifier = JwtVerifier(SECRET, audience="chat", issuer="https://app.example")
    assert verifier.verify(mint(aud="chat", iss="https://app.example"), "u1")
    for token in (mint(aud="chat"), mint(iss="https://app.example"), mint(aud="other", iss="https://app.example"),
                  mint(aud="chat", iss="https://evil.example")):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(token, "u1")


def test_leeway_admits_a_token_just_past_exp():
    token = mint(exp=int(time.time()) - 5)
    with pytest.raises(AuthenticationFailed):
        JwtVerifier(SECRET).verify(token, "u1")
    grant = JwtVerifier(SECRET, leeway=30).verify(token, "u1")
    assert 20 < grant.lives_s <= 25


def _pem(private_key, path):
    path.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


@pytest.mark.parametrize("make_key, algorithm", [
    (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
])
def test_public_keys_verify_their_algorithm_only(tmp_path, make_key, algorithm):
    private_key = make_key()
    path = _pem(private_key, tmp_path / "key.pem")
    verifier = JwtVerifier(public_key_file=path)
    assert verifier.algorithms == [algorithm]
    assert verifier.verify(mint(key=private_key, algorithm=algorithm), "u1").user_id == "u1"
    # An HS256 token signed with the public key's text must not pass (algorithm confusion).
    with pytest.raises(AuthenticationFailed):
        public_text = open(path, "rb").read()
        header = jwt.utils.base64url_encode(b'{"alg":"HS256","typ":"JWT"}')
        body = jwt.utils.base64url_encode(f'{{"sub":"u1","exp":{int(time.time()) + 60}}}'.encode())
        signature = jwt.utils.base64url_encode(hmac.new(public_text, header + b"." + body, hashlib.sha256).digest())
        verifier.verify((header + b"." + body + b"." + signature).decode(), "u1")
    with pytest.raises(AuthenticationFailed):
        verifier.verify(mint(), "u1")  # HS256 with a secret


def test_bad_keys_stop_the_node_with_one_line(tmp_path):
    with pytest.raises(JwtSettingsError, match="at least 32 bytes"):
        JwtVerifier("short")
    not_pem = tmp_path / "key.pem"
    not_pem.write_text("hello")
    with pytest.raises(JwtSettingsError, match="not a PEM public key"):
        JwtVerifier(public_key_file=str(not_pem))
    with pytest.raises(JwtSettingsError, match="cannot read"):
        JwtVerifier(public_key_file=str(tmp_path / "missing.pem"))
    assert make_verifier("", "") is None


def test_only_three_part_tokens_are_taken_for_jwts():
    verifier = JwtVerifier(SECRET)
    assert verifier.recognizes(mint())
    assert not verifier.recognizes("0123456789abcdef0123456789abcdef")
    assert verifier.verify(mint(sub="u7"), None).user_id == "u7"  # a bearer token names its user
    for unnamed in ("not.a.jwt", mint(sub="bad id"), mint(sub=7)):
        with pytest.raises(AuthenticationFailed):
            verifier.verify(unnamed, None)
