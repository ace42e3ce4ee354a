"""``python -m benchmarks.hostile``: what one hostile client can make a node spend, in figures.

Issue 12's findings, each played against a fresh node on a private
redis-server (node on the server CPU, attacker and Redis on the other), with
what the node spent: CPU seconds, resident memory, log bytes, what a
bystander saw. ``--checkout PATH`` runs the nodes from another checkout (say
the build before the fixes) to print its figures beside; a scenario that
takes longer than ``--budget`` seconds is stopped and shown as such.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.cluster import REPO_ROOT, Cluster, NodeProcess, Pinning, raise_fd_limit
from benchmarks.procstats import cpu_seconds, rss_kb

# The attacker's tools: raw frames and a raw handshake, as in the tests.
MASK = b"\x37\xfa\x21\x3d"
ZERO_MASK = b"\0\0\0\0"


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = MASK) -> bytes:
    from tornado.util import _websocket_mask

    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size <= 0xFFFF:
        header = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + mask + (_websocket_mask(mask, payload) if payload else b"")


TEXT, CONTINUATION, PING = 0x1, 0x0, 0x9


@dataclass
class Row:
    finding: str
    attack: str
    cpu_s: float | None = None
    rss_mb: float | None = None
    log_kb: float | None = None
    outcome: str = ""


class Raw:
    """A raw socket to the node: handshake, send, read whatever comes, with deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    @classmethod
    async def open(cls, port: int, path: str) -> "Raw":
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        raw = cls(sock)
        if path:
            await raw.send(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await raw.read_until(b"\r\n\r\n")
        return raw

    async def send(self, data: bytes, piece: int = 1 << 20) -> bool:
        """False once the node cut the connection."""
        loop = asyncio.get_running_loop()
        for at in range(0, len(data), piece):
            try:
                await loop.sock_sendall(self.sock, data[at:at + piece])
            except OSError:
                return False
        return True

    async def read_until(self, marker: bytes, timeout: float = 10.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while marker not in self.received:
            try:
                chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), max(0.01, deadline - loop.time()))
            except (asyncio.TimeoutError, OSError):
                return False
            if not chunk:
                return False
            self.received += chunk
        return True

    def close(self) -> None:
        self.sock.close()


class Bystander:
    """A chat socket that sends a message every 50 ms and times each echo: what other users feel."""

    def __init__(self) -> None:
        self.round_trips: list[float] = []
        self.waiting_since: float | None = None  # an echo is awaited since then
        self._task: asyncio.Task | None = None

    async def start(self, port: int, path: str) -> None:
        from tornado.websocket import websocket_connect

        self.connection = await websocket_connect(f"ws://127.0.0.1:{port}{path}")
        await self.connection.read_message()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            self.waiting_since = time.perf_counter()
            await self.connection.write_message("ping")
            if await self.connection.read_message() is None:
                return
            self.round_trips.append(time.perf_counter() - self.waiting_since)
            self.waiting_since = None
            await asyncio.sleep(0.05)

    async def stop(self) -> str:
        waited = 0.0 if self.waiting_since is None else time.perf_counter() - self.waiting_since
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.connection.close()
        return f"bystander's slowest echo {max([waited, *self.round_trips]) * 1000:,.0f} ms"


# -- the scenarios ---------------------------------------------------------------------------------


async def fragment_flood_refused(node: NodeProcess, redis_url: str) -> Row:
    row = Row("1", "200,000 empty continuation frames (1.2 MB) after a refused login")
    bystander = Bystander()
    token = login(node, "bystander")
    await bystander.start(node.port, f"/group/chat/1/bystander/{token}")
    attacker = await Raw.open(node.port, "/group/chat/1/attacker/not-a-token")
    await attacker.read_until(b"440")
    before = cpu_seconds(node.pid)
    flood = frame(TEXT, b"", fin=False) + frame(CONTINUATION, b"", fin=False) * 200_000
    await attacker.send(flood)
    row.cpu_s = await spent(node, before)
    row.outcome = await bystander.stop()
    attacker.close()
    return row


async def fragment_flood_open(node: NodeProcess, redis_url: str) -> Row:
    row = Row("1", "100,000 one-byte fragments of one message on an open chat socket")
    bystander = Bystander()
    await bystander.start(node.port, "/group/chat/1/bystander/any")
    attacker = await Raw.open(node.port, "/group/chat/1/attacker/any")
    before = cpu_seconds(node.pid)
    await attacker.send(frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"a", fin=False) * 100_000)
    row.cpu_s = await spent(node, before)
    await attacker.read_until(b"\x88", timeout=1)
    code = close_code(attacker.received)
    row.outcome = (f"closed {code}; " if code else "not closed; ") + await bystander.stop()
    attacker.close()
    return row


async def huge_frame(node: NodeProcess, redis_url: str) -> Row:
    row = Row("2", "one 16 MiB text frame (max_message_bytes = 4 MiB, so a 413 answer)")
    attacker = await Raw.open(node.port, "/group/chat/1/big/any")
    before = cpu_seconds(node.pid)
    await attacker.send(frame(TEXT, b"a" * (16 << 20), mask=ZERO_MASK))
    answered = await attacker.read_until(b'"code":413', timeout=60)
    row.cpu_s = await spent(node, before)
    row.outcome = "413 answer" if answered else "no answer within 60 s"
    attacker.close()
    return row


async def ping_flood(node: NodeProcess, redis_url: str) -> Row:
    row = Row("3", "200,000 pings (26 MB) from a client that never reads")
    attacker = await Raw.open(node.port, "/group/chat/1/pinger/any")
    rss_before, peak = rss_kb(node.pid), 0
    before = cpu_seconds(node.pid)
    ping = frame(PING, b"x" * 125)
    for _ in range(20):
        if not await attacker.send(ping * 10_000):
            break
        peak = max(peak, rss_kb(node.pid))
    row.cpu_s = await spent(node, before)
    peak = max(peak, rss_kb(node.pid))
    row.rss_mb = (peak - rss_before) / 1024
    await attacker.read_until(b"\x88", timeout=3)
    await asyncio.sleep(0.2)
    await attacker.read_until(b"\xff-never", timeout=0.5)  # whatever else is there
    code = close_code(attacker.received)
    row.outcome = f"closed {code}" if code else "still open, answering every ping"
    attacker.close()
    return row


async def descriptors(node: NodeProcess, redis_url: str) -> Row:
    row = Row("4", "400 idle connections to a node under prlimit --nofile=256, held 5 s")
    log_before = node.stderr_path.stat().st_size
    clients = []
    for _ in range(400):
        sock = socket.socket()
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port)), 1)
            clients.append(sock)
        except (OSError, asyncio.TimeoutError):
            sock.close()
    before = cpu_seconds(node.pid)
    await asyncio.sleep(5)
    row.cpu_s = cpu_seconds(node.pid) - before
    row.log_kb = (node.stderr_path.stat().st_size - log_before) / 1024
    for sock in clients:
        sock.close()
    left = time.monotonic()
    while not healthy(node) and time.monotonic() - left < 30:
        await asyncio.sleep(0.01)
    row.outcome = f"{row.cpu_s / 5:.0%} of a core; /healthz again {time.monotonic() - left:.2f} s after they left"
    return row


async def history(node: NodeProcess, redis_url: str) -> Row:
    row = Row("8", "listMessage 0..-1 of a group of 100,000 messages")
    fill(redis_url, "big", 100_000)
    token = login(node, "reader")
    usec_before = script_usec(redis_url)
    before = cpu_seconds(node.pid)
    answer = post(node, "/group/listMessage", {"groupId": "big", "startPage": "0", "endPage": "-1"}, "reader", token)
    row.cpu_s = cpu_seconds(node.pid) - before
    row.outcome = f"{len(answer) / 1e6:.2f} MB answer; Redis busy {(script_usec(redis_url) - usec_before) / 1000:.1f} ms"
    return row


async def anchor_search(node: NodeProcess, redis_url: str) -> Row:
    row = Row("8", "listOldMessage for an anchor 100,000 messages deep, count = 100,000")
    messages = fill(redis_url, "big", 100_000)
    token = login(node, "reader")
    usec_before = script_usec(redis_url)
    before = cpu_seconds(node.pid)
    anchor = messages[50_000]
    fields = {"groupId": "big", "userId": anchor[0], "ts": str(anchor[1]), "count": "100000"}
    answer = post(node, "/group/listOldMessage", fields, "reader", token)
    row.cpu_s = cpu_seconds(node.pid) - before
    row.outcome = f"{len(answer) / 1e6:.2f} MB answer; Redis busy {(script_usec(redis_url) - usec_before) / 1000:.1f} ms"
    return row


async def group_list(node: NodeProcess, redis_url: str) -> Row:
    row = Row("9", "a group-list socket of a user in 50,000 groups")
    client = redis.Redis.from_url(redis_url)
    client.sadd("ugs:many", *(f"g{i}" for i in range(50_000)))
    client.close()
    from tornado.websocket import websocket_connect

    rss_before = rss_kb(node.pid)
    before = cpu_seconds(node.pid)
    started = time.monotonic()
    connection = await websocket_connect(f"ws://127.0.0.1:{node.port}/group/list/many/any", max_message_size=1 << 26)
    first = await connection.read_message()
    opened = time.monotonic() - started
    row.cpu_s = cpu_seconds(node.pid) - before
    row.rss_mb = (rss_kb(node.pid) - rss_before) / 1024
    row.outcome = f"first push after {opened:.1f} s ({len(first or '') / 1e6:.1f} MB)"
    connection.close()
    return row


async def bodies(node: NodeProcess, redis_url: str) -> Row:
    row = Row("10", "8 logins with a 100 MB body each, sent in full")
    rss_before, peak = rss_kb(node.pid), 0
    before = cpu_seconds(node.pid)

    async def send_one() -> bytes:
        raw = await Raw.open(node.port, "")
        head = b"POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        await raw.send(head + b"Content-Length: %d\r\n\r\n" % (100 << 20))
        await raw.send(b"a" * (100 << 20))
        await raw.read_until(b"}", timeout=10)
        raw.close()
        return raw.received[:12]

    sending = asyncio.ensure_future(asyncio.gather(*(send_one() for _ in range(8))))
    while not sending.done():
        peak = max(peak, rss_kb(node.pid))
        await asyncio.sleep(0.05)
    answers = sending.result()
    row.cpu_s = cpu_seconds(node.pid) - before
    row.rss_mb = (peak - rss_before) / 1024
    row.outcome = ", ".join(sorted({answer.decode(errors="replace").strip() or "no answer" for answer in answers}))
    return row


SCENARIOS: dict[str, tuple[Callable[[NodeProcess, str], Awaitable[Row]], dict[str, str], bool]] = {
    # name: (scenario, node settings, under prlimit --nofile=256)
    "fragments-refused": (fragment_flood_refused, {"FASTIM_IM_LOGIN_AUTH": "1"}, False),
    "fragments-open": (fragment_flood_open, {}, False),
    "huge-frame": (huge_frame, {"FASTIM_IM_MAX_MESSAGE_BYTES": str(4 << 20)}, False),
    "ping-flood": (ping_flood, {"FASTIM_IM_MAX_PENDING_BYTES": "1048576"}, False),
    "descriptors": (descriptors, {}, True),
    "history": (history, {}, False),
    "anchor": (anchor_search, {}, False),
    "group-list": (group_list, {}, False),
    "bodies": (bodies, {}, False),
}


# -- helpers -------------------------------------------------------------------------------------


async def spent(node: NodeProcess, before: float, quiet_s: float = 0.5) -> float:
    """CPU seconds the node spent since ``before``, read once it has gone quiet (the attack's work done)."""
    last = cpu_seconds(node.pid)
    while True:
        await asyncio.sleep(quiet_s)
        now = cpu_seconds(node.pid)
        if now - last < 0.05 * quiet_s:
            return now - before
        last = now


def close_code(received: bytes) -> int | None:
    """The code of the close frame among the server frames in ``received`` (after the 101 answer), if any."""
    data = received.partition(b"\r\n\r\n")[2]
    at = 0
    while at + 2 <= len(data):
        opcode, size, head = data[at] & 0x0F, data[at + 1] & 0x7F, at + 2
        if size == 126:
            size, head = int.from_bytes(data[at + 2:at + 4], "big"), at + 4
        elif size == 127:
            size, head = int.from_bytes(data[at + 2:at + 10], "big"), at + 10
        if opcode == 0x8 and head + 2 <= len(data):
            return int.from_bytes(data[head:head + 2], "big")
        at = head + size
    return None


def healthy(node: NodeProcess) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}/healthz", timeout=0.5) as answer:
            return answer.status == 200
    except OSError:
        return False


def post(node: NodeProcess, path: str, fields: dict[str, str], user: str | None = None, token: str | None = None) -> bytes:
    from urllib.parse import urlencode

    headers = {"userId": user, "token": token} if user else {}
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=urlencode(fields).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read()


def login(node: NodeProcess, user: str) -> str:
    return json.loads(post(node, "/user/login", {"userId": user, "password": "x"}))["msg"]


def fill(redis_url: str, group: str, count: int) -> list[tuple[str, int]]:
    client = redis.Redis.from_url(redis_url)
    stamps = [(str(i % 7), 1_700_000_000_000 + i) for i in range(count)]
    items = [json.dumps({"groupId": group, "userId": u, "info": "x" * 200, "ts": ts}) for u, ts in stamps]
    for at in range(0, count, 10_000):
        client.rpush(f"gml:{group}", *items[at:at + 10_000])
    client.close()
    return stamps


def script_usec(redis_url: str) -> int:
    """Microseconds Redis spent in scripts and list reads so far."""
    client = redis.Redis.from_url(redis_url)
    stats = client.info("commandstats")
    client.close()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in ("evalsha", "eval", "lrange"))


async def run_one(cluster: Cluster, name: str, checkout: Path, budget_s: float) -> Row:
    scenario, settings, limited = SCENARIOS[name]
    cluster.redis.flush()
    prefix = cluster.pinning.server_prefix() + (["prlimit", "--nofile=256:256", "--"] if limited else [])
    node = NodeProcess(cluster.redis.url, cluster.workdir, prefix, name, settings, checkout)
    node.start()
    try:
        node.wait_until_serving()
        try:
            return await asyncio.wait_for(scenario(node, cluster.redis.url), budget_s)
        except asyncio.TimeoutError:
            return Row("", name, outcome=f"stopped after {budget_s:g} s")
    finally:
        node.stop()


def table(rows: list[Row], before: list[Row] | None) -> str:
    header = "| finding | attack | node CPU s | node RSS growth MB | log KB | outcome |"
    if before:
        header += " before: CPU s | before: RSS MB | before: log KB | before: outcome |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for index, row in enumerate(rows):
        cells = [row.finding, row.attack, _figure(row.cpu_s, 2), _figure(row.rss_mb, 1), _figure(row.log_kb, 1), row.outcome]
        if before:
            old = before[index]
            cells += [_figure(old.cpu_s, 2), _figure(old.rss_mb, 1), _figure(old.log_kb, 1), old.outcome]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--checkout", type=Path, help="also run every scenario against the fastim of this checkout")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds a scenario may take (default 60)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    raise_fd_limit()
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    pinning = Pinning.choose(args.server_cpu, args.client_cpu)
    pinning.pin_this_process()
    with Cluster(pinning) as cluster:
        rows = [asyncio.run(run_one(cluster, name, REPO_ROOT, args.budget)) for name in names]
        before = None
        if args.checkout is not None:
            before = [asyncio.run(run_one(cluster, name, args.checkout.resolve(), args.budget)) for name in names]
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"fastim {commit}" + (f", before: {args.checkout}" if args.checkout else ""))
    print(table(rows, before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
