"""Fixtures and helpers of the tests that run real nodes."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest

from tests.processes import ServeProcess
from tests.raw_ws import Peer


@pytest.fixture
def node_factory(fresh_redis, tmp_path):
    """``node_factory(FASTIM_IM_LOGIN_AUTH="1", ...)``: a serving node on the test's redis-server, stopped at the end.

    Keyword options of :class:`ServeProcess` (``script=``, ``open_files=``, ``args=``) pass through;
    every other keyword is an environment variable of the node.
    """
    started: list[ServeProcess] = []

    def start(*, wait: bool = True, **options: object) -> ServeProcess:
        passed = {key: options.pop(key) for key in ("script", "open_files", "args") if key in options}
        node = ServeProcess(
            tmp_path, name=f"node{len(started)}", backend="redis", redis_url=fresh_redis.url,
            environ={key: str(value) for key, value in options.items()}, **passed,
        )
        started.append(node)
        node.start()
        return node.wait_until_serving() if wait else node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def sockets(io_loop):
    """Every socket a test opens (append it here), closed at its end while the test's loop still runs."""
    opened: list = []
    yield opened

    async def close_all() -> None:
        for client in opened:
            client.close()
        await asyncio.sleep(0.05)  # the close frames leave before the loop is closed

    io_loop.run_sync(close_all)


def metrics_text(node: ServeProcess) -> str:
    with urllib.request.urlopen(node.base_url + "/metrics", timeout=5) as response:
        return response.read().decode()


def metric_value(node: ServeProcess, sample: str) -> float:
    """The value of one sample line of the node's /metrics, e.g. ``fastim_open_sockets{kind="chat"}``."""
    for line in metrics_text(node).splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    raise AssertionError(f"{sample} not in the node's metrics")


async def until(condition, timeout: float, interval: float = 0.05) -> None:
    """Wait for ``condition()`` (a plain callable) to come true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


async def send_tolerating_close(peer: Peer, data: bytes, piece: int = 65536) -> None:
    """Send ``data`` in pieces; a node that cut the connection ends the sending, not the test."""
    for start in range(0, len(data), piece):
        try:
            await peer.send(data[start:start + piece])
        except (ConnectionResetError, BrokenPipeError):
            return


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
