"""Serve fastim with logins checked against your own user store instead of the accept-all default.

Run it like ``fastim serve`` (same settings file, environment and defaults):

    python examples/user_store_auth.py

Only the Authenticator changes; everything else keeps the default wiring.
"""

from __future__ import annotations

import hashlib
import hmac
import sys

from dependency_injector import providers

from fastim.container import build_container
from fastim.logs import configure_logging
from fastim.server import StartupError, run
from fastim.settings import SettingsError, load_settings


def password_hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 100_000).hex()


class UserStoreAuthenticator:
    """Accepts a login only when the password matches the stored hash of that user."""

    def __init__(self, users: dict[str, tuple[str, str]]) -> None:
        self._users = users  # userId -> (salt, pbkdf2 hash); in production: your database

    async def authenticate(self, user_id: str, password: str) -> bool:
        stored = self._users.get(user_id)
        if stored is None:
            return False
        salt, expected = stored
        return hmac.compare_digest(password_hash(password, salt), expected)


DEMO_USERS = {
    "1": ("salt-1", password_hash("123456", "salt-1")),
    "2": ("salt-2", password_hash("654321", "salt-2")),
}


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fastim: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_format, settings.server.log_level)
    container = build_container(settings)
    container.authenticator.override(providers.Singleton(UserStoreAuthenticator, DEMO_USERS))
    try:
        return run(settings, container)
    except StartupError as exc:
        print(f"fastim: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
