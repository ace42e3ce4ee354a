"""``fastim serve --workers N``: processes sharing one port on one Redis, supervised and stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.interfaces.ws_client import Client
from tests.processes import ServeProcess

pytestmark = pytest.mark.redis

SOCKETS = 20


def workers_of(parent_pid: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent_pid:
                children.add(int(entry))
    return children


@pytest.fixture
def node(fresh_redis, tmp_path):
    process = ServeProcess(tmp_path, backend="redis", redis_url=fresh_redis.url, args=["--workers", "2"]).start()
    yield process.wait_until_serving()
    process.stop()


@pytest.mark.gen_test(timeout=60)
async def test_two_workers_share_the_port_and_every_socket_gets_every_message(node):
    assert len(workers_of(node.pid)) == 2
    clients = [await Client.connect(node.ws_url, f"/group/chat/g/u{i}/any") for i in range(SOCKETS)]
    for client in clients:
        await client.json()
    http = AsyncHTTPClient(force_instance=True)
    sockets_by_worker = {}
    for _ in range(40):  # each scrape is a new connection, which the kernel gives to either worker
        body = (await http.fetch(node.base_url + "/metrics", headers={"Connection": "close"})).body.decode()
        pid = next(line.split('"')[1] for line in body.splitlines() if line.startswith("fastim_node{"))
        chat = next(line for line in body.splitlines() if line.startswith('fastim_open_sockets{kind="chat"}'))
        sockets_by_worker[pid] = float(chat.split()[-1])
    http.close()
    assert set(map(int, sockets_by_worker)) == workers_of(node.pid)  # both workers answered
    assert sum(sockets_by_worker.values()) == SOCKETS and 0 not in sockets_by_worker.values(), sockets_by_worker
    await clients[0].send("across workers")
    for client in clients:
        assert (await client.json())["info"] == "across workers"


@pytest.mark.gen_test(timeout=60)
async def test_a_dead_worker_is_replaced_and_sigterm_stops_all_with_exit_0(node):
    first = workers_of(node.pid)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        now = workers_of(node.pid)
        if len(now) == 2 and victim not in now:
            break
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.1)
    assert "exited unexpectedly" in node.stderr
    client = await Client.connect(node.ws_url, "/group/chat/g/u/any")
    await client.json()
    node.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.process.wait, 15) == 0
    assert (await client.closed(timeout=5))[0] == 1001
    assert workers_of(node.pid) == set()


def test_several_workers_on_the_memory_backend_are_refused(tmp_path):
    process = ServeProcess(tmp_path, args=["--workers", "2"]).start()
    try:
        assert process.process.wait(timeout=15) == 2
        lines = [line for line in process.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "workers" in lines[0] and "redis" in lines[0]
    finally:
        process.stop()
