"""A legacy Tornado application that serves fastim under ``/im``, its own users logging in to the chat.

    python examples/embed_tornado.py --port 8888

    curl http://127.0.0.1:8888/                                   # legacy app
    curl -X POST http://127.0.0.1:8888/im/user/login -d userId=alice -d password=wonderland
    python -m websockets ws://127.0.0.1:8888/im/group/chat/1/alice/<token from the login>

The application keeps its own event loop, its own ``Application`` settings
(XSRF cookies included: fastim's API authenticates by headers) and its own
``HTTPServer``; fastim brings its URL rules, and the application calls its
start and stop hooks. Logins under ``/im`` are checked against the
application's own users, and chat sockets need the token they give
(``[im] login_auth = 1``). fastim's other settings come from
``FASTIM_<SECTION>_<KEY>`` variables (e.g. ``FASTIM_STORAGE_BACKEND=redis``).
SIGTERM or SIGINT stops it gracefully (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import secrets
import signal
import sys

import tornado.web

from fastim.embed import mount
from fastim.server import StartupError
from fastim.settings import load_settings

logger = logging.getLogger("legacy")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The host's own connections get this long to finish once fastim has stopped.
CLOSE_CONNECTIONS_S = 5.0


class LegacyUsers:
    """The application's own user store, reused by fastim as its Authenticator."""

    def __init__(self, passwords: dict[str, str]) -> None:
        self._passwords = passwords  # userId -> password; in production: the application's database

    async def authenticate(self, user_id: str, password: str) -> bool:
        expected = self._passwords.get(user_id, "")
        return hmac.compare_digest(expected.encode(), password.encode()) and user_id in self._passwords


USERS = {"alice": "wonderland", "bob": "builder"}


class HomeHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.write("legacy app")


async def serve(host: str, port: int) -> int:
    settings = load_settings(os.devnull, os.environ, {("im", "login_auth"): "1"})
    im = mount("/im", settings=settings, authenticator=LegacyUsers(USERS))
    app = tornado.web.Application(
        [(r"/", HomeHandler), *im.rules],
        xsrf_cookies=True,  # the legacy app's own forms; fastim's API is not affected
        cookie_secret=secrets.token_hex(32),
    )
    await im.start()  # a Redis backend that does not answer raises StartupError
    try:
        server = app.listen(port, address=host)
    except OSError:
        await im.stop()
        raise
    logger.info("legacy app on http://%s:%d, fastim under /im", host, port)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    logger.info("stopping")
    server.stop()  # no new connections
    await im.stop()  # fastim's sockets closed with 1001, its requests finished, its storage released
    try:
        async with asyncio.timeout(CLOSE_CONNECTIONS_S):
            await server.close_all_connections()
    except TimeoutError:
        logger.warning("some connections were still open after %g s", CLOSE_CONNECTIONS_S)
    logger.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(args.host, args.port))
    except StartupError as exc:
        print(f"embed_tornado: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
