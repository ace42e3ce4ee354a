"""Where a node's own Redis connections go and how they open: the URL's address or Sentinel's answer, TLS, AUTH.

The pipelined commands and the pub/sub connection speak RESP on asyncio
protocols of their own; both open their connections here, so that
``redis://``, ``rediss://`` (with the URL's TLS options), ``unix://``,
credentials and Sentinel's master mean the same thing on each.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.connection import Connection, SSLConnection, parse_url

# Where to connect, asked again before every connection: Sentinel's answer for a failover-managed master.
Address = Callable[[], Awaitable[tuple[str, int]]]

P = TypeVar("P", bound=asyncio.Protocol)


class Endpoint:
    """A Redis as a URL names it; ``address``, when given, says where it is instead of the URL's host and port."""

    def __init__(self, url: str, *, address: Address | None = None) -> None:
        self._options = parse_url(url)
        self._address = address

    @classmethod
    def at(cls, host: str, port: int) -> Endpoint:
        """A Redis at ``host`` and ``port``, plain TCP, no password: a cluster's node, as CLUSTER SLOTS names it."""

        async def address() -> tuple[str, int]:
            return host, port

        return cls("redis://", address=address)

    @property
    def database(self) -> int:
        return int(self._options.get("db") or 0)

    def login(self) -> list[tuple[Any, ...]]:
        """The AUTH a new connection sends before anything else, as the URL asks (none without a password)."""
        password, username = self._options.get("password"), self._options.get("username")
        if not password:
            return []
        return [("AUTH", username, password) if username else ("AUTH", password)]

    async def open(self, protocol_factory: Callable[[], P]) -> P:
        """A connected ``protocol_factory()``; raises ``OSError`` (and ``ssl.SSLError``) as the socket does."""
        loop = asyncio.get_running_loop()
        options = self._options
        if self._address is not None:
            host, port = await self._address()
            _, protocol = await loop.create_connection(protocol_factory, host, port, ssl=self.tls_context())
        elif "path" in options:
            _, protocol = await loop.create_unix_connection(protocol_factory, options["path"])
        else:
            _, protocol = await loop.create_connection(
                protocol_factory, options.get("host", "localhost"), options.get("port", 6379),
                ssl=self.tls_context(),
            )
        return protocol

    def tls_context(self) -> ssl.SSLContext | None:
        options = self._options
        if not issubclass(options.get("connection_class", Connection), SSLConnection):  # rediss://
            return None
        # The URL's TLS options that redis-py's own connections honour: CA, client certificate, verification.
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        if options.get("ssl_certfile"):
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
        if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
