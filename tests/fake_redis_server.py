"""fakeredis behind a loopback socket: the broker's pub/sub connection speaks RESP, so it needs a server to dial."""

from __future__ import annotations

import asyncio
import threading

import fakeredis
from fakeredis import TcpFakeServer


class FakeRedisServer:
    """fakeredis's TCP server on a free loopback port, serving the data of ``server``.

    The backend's in-process ``FakeAsyncRedis(server=server)`` clients and whoever
    connects to :attr:`url` see the same keys and the same channels. fakeredis
    writes what it pushes (pub/sub messages) within 10 ms.
    """

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self._tcp = TcpFakeServer(("127.0.0.1", 0))
        self._tcp.fake_server = server
        self._thread = threading.Thread(target=self._tcp.serve_forever, name="fake-redis-tcp", daemon=True)
        self._thread.start()
        self.url = f"redis://127.0.0.1:{self._tcp.server_address[1]}/0"

    async def aclose(self) -> None:
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self._tcp.shutdown()  # its connections' threads see it within 10 ms; server_close() joins them
        self._tcp.server_close()
        self._thread.join(timeout=5)
