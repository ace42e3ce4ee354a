"""Serve fastim with logins checked against your own user store instead of the accept-all default.

Run it like ``fastim serve`` (same settings file, environment and defaults):

    python examples/user_store_auth.py

Only the Authenticator changes; everything else keeps the default wiring. It
shows the three things an authenticator that hashes passwords must do:

- hash off the event loop (a thread pool), so that a login never stalls the
  node's sockets, and bound the work queued there, so that a flood of logins
  gets "try again" answers instead of an ever longer queue;
- take as long for an unknown user as for a wrong password (a dummy hash), so
  that answer times do not tell which user ids exist;
- compare in constant time (``hmac.compare_digest``).

fastim adds the rest: failed logins are throttled per address and per user
(``[auth]`` settings), and every refusal is answered no sooner than a fixed
delay after the request arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from dependency_injector import providers

from fastim.cli import serve_with
from fastim.domain.errors import TooManyRequests

PBKDF2_ITERATIONS = 600_000  # OWASP's figure for PBKDF2-HMAC-SHA256 (2023)
# hashlib releases the GIL while it hashes: two threads keep two cores busy at most.
HASHING_THREADS = 2
# Logins waiting for a thread; past this the caller is told to come back (429), so a flood
# of logins costs the node a bounded amount of work and memory.
MAX_WAITING = 64


def password_hash(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), PBKDF2_ITERATIONS).hex()


class UserStoreAuthenticator:
    """Accepts a login only when the password matches the stored hash of that user."""

    def __init__(self, users: dict[str, tuple[str, str]]) -> None:
        self._users = users  # userId -> (salt, pbkdf2 hash); in production: your database
        self._pool = ThreadPoolExecutor(HASHING_THREADS, thread_name_prefix="password-hash")
        self._slots = asyncio.BoundedSemaphore(HASHING_THREADS + MAX_WAITING)
        # An unknown user is hashed against this, so that it costs what a wrong password costs.
        self._dummy = (os.urandom(8).hex(), password_hash(os.urandom(8).hex(), "dummy"))

    async def authenticate(self, user_id: str, password: str) -> bool:
        known = user_id in self._users
        salt, expected = self._users[user_id] if known else self._dummy
        if self._slots.locked():
            raise TooManyRequests("too many logins at once; try again in a moment", retry_after=1)
        async with self._slots:
            computed = await asyncio.get_running_loop().run_in_executor(self._pool, password_hash, password, salt)
        return hmac.compare_digest(computed, expected) and known


DEMO_USERS = {
    "1": ("salt-1", password_hash("123456", "salt-1")),
    "2": ("salt-2", password_hash("654321", "salt-2")),
}


def use_the_user_store(container) -> None:
    container.authenticator.override(providers.Singleton(UserStoreAuthenticator, DEMO_USERS))


if __name__ == "__main__":
    sys.exit(serve_with(use_the_user_store))
