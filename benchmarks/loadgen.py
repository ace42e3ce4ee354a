"""The load generator: fastim chat sockets on picows, a paced sender, and delivery accounting by marker.

It has to stay cheap next to a fast server on the other core, so no received
frame is JSON-decoded: every sent message's ``info`` starts with a fixed-width
marker ``@<send ns, 19 digits>:<seq, 10 digits>:``, which the receiver finds
with ``bytes.find`` on the raw payload; one ``int()`` of 19 digits gives the
latency. The sequence id keeps every message distinct, since the server tells
messages apart by their content (author, text, timestamp).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from dataclasses import dataclass

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

# The server wraps info in {"groupId":..,"userId":..,"info":"<info>","ts":..}; this is where it starts.
MARKER = b'"info":"@'
SEND_NS_AT = len(MARKER)  # 19 digits of monotonic_ns at send
SEND_NS_END = SEND_NS_AT + 19
HEADER_CHARS = len("@") + 19 + 1 + 10 + 1
SNAPSHOT_PREFIX = b'{"list":'
ERROR_PREFIX = b'{"code":'
# Until a window opens nothing counts: no real send time is this late.
NEVER_NS = 1 << 62
POLL_S = 0.01
MIN_TICK_S = 0.001
# A refused open is tried again this many times in all, after a pause that grows by
# RETRY_PAUSE_S each time: a client reconnecting after "1013 try again later".
OPEN_ATTEMPTS = 5
RETRY_PAUSE_S = 0.1
monotonic_ns = time.monotonic_ns


def make_info(send_ns: int, seq: int, size: int) -> bytes:
    """A message of ``size`` bytes (at least the marker's 32) that carries its send time and sequence id."""
    header = f"@{send_ns:019d}:{seq:010d}:"
    return (header + "x" * (size - HEADER_CHARS)).encode("ascii")


@dataclass(frozen=True)
class Incidents:
    """What went wrong: sockets the server closed, refused frames (with one example), frames not understood."""

    disconnects: int
    error_frames: int
    unexpected: int
    closes: Counter[str]  # close frames the server sent, by "code reason"
    example_error: bytes | None = None


class Tally:
    """What the sockets received of the messages sent since the window opened.

    ``sent`` counts such messages and ``expected`` grows by the group's socket
    count for each; every frame of such a message adds its latency (receive
    minus send, ns).
    """

    def __init__(self) -> None:
        self.since_ns = NEVER_NS
        self.last_ns = NEVER_NS  # when the window's latest delivery arrived
        self.sent = 0
        self.expected = 0
        self.latencies_ns = array("q")
        self.errors: list[bytes] = []
        self.unexpected = 0
        self.disconnects = 0
        self.close_reasons: Counter[str] = Counter()  # close frames the server sent: code and reason

    @property
    def received(self) -> int:
        return len(self.latencies_ns)

    @property
    def receiving_s(self) -> float:
        """From the window's opening to its latest delivery."""
        return (self.last_ns - self.since_ns) / 1e9

    def open_window(self) -> None:
        """Count from now on; forget what came before."""
        self.since_ns = self.last_ns = monotonic_ns()
        self.sent = 0
        self.expected = 0
        self.latencies_ns = array("q")

    def incidents(self, since: Incidents | None = None) -> Incidents:
        """Everything so far, or only what happened after ``since`` (an earlier result of this method)."""
        now = Incidents(self.disconnects, len(self.errors), self.unexpected, Counter(self.close_reasons))
        if since is None:
            return now
        new_errors = self.errors[since.error_frames:]
        return Incidents(now.disconnects - since.disconnects, len(new_errors), now.unexpected - since.unexpected,
                         now.closes - since.closes, new_errors[0] if new_errors else None)

    async def drained(self, timeout_s: float) -> bool:
        """Wait until every expected delivery arrived, or ``timeout_s`` passed; True when all did."""
        deadline = time.monotonic() + timeout_s
        while self.received < self.expected:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True


class ChatClient(WSListener):
    """One chat socket: ready once the snapshot arrives, then tallies every marked frame."""

    def __init__(self, tally: Tally, group_id: str) -> None:
        super().__init__()
        self.tally = tally
        self.group_id = group_id
        self.group_size = 0  # sockets, on every node, that receive what this one sends; set once all are open
        self.transport: WSTransport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.closing = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The hot path: one find, one int, one clock read, one append.
        payload = frame.get_payload_as_bytes()
        at = payload.find(MARKER)
        if at >= 0:
            sent_ns = int(payload[at + SEND_NS_AT:at + SEND_NS_END])
            tally = self.tally
            if sent_ns >= tally.since_ns:
                now = tally.last_ns = monotonic_ns()
                tally.latencies_ns.append(now - sent_ns)
            return
        self._other_frame(transport, frame, payload)

    def _other_frame(self, transport: WSTransport, frame: WSFrame, payload: bytes) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            code = frame.get_close_code()
            self.tally.close_reasons[f"{int(code)} {frame.get_close_reason() or ''}".rstrip()] += 1
            transport.send_close(code, frame.get_close_message())
            transport.disconnect()
        elif not self.ready.done() and payload.startswith(SNAPSHOT_PREFIX):
            self.ready.set_result(None)
        elif payload.startswith(ERROR_PREFIX):
            self.tally.errors.append(payload)  # 429, 503, ...: the server refused a frame
        else:
            self.tally.unexpected += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            # A refused open: open_sockets retries or reports it; it is no lost socket.
            self.ready.set_exception(ConnectionError("closed before the snapshot"))
        elif not self.closing:
            self.tally.disconnects += 1

    def send(self, info: bytes) -> None:
        self.transport.send(WSMsgType.TEXT, info)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.disconnect(graceful=False)


@dataclass(frozen=True)
class SocketSpec:
    """Where one socket connects: ``{node}/group/chat/{group_id}/{user_id}/{token}``."""

    node_url: str
    group_id: str
    user_id: str

    @property
    def url(self) -> str:
        # login_auth is 0 on the benchmark nodes: any non-empty token is accepted.
        return f"{self.node_url}/group/chat/{self.group_id}/{self.user_id}/bench"


@dataclass
class Opened:
    """The sockets that opened, and what it took: failures after every retry, retries, wall time."""

    clients: list[ChatClient]
    failures: int
    first_error: str | None
    seconds: float
    retries: int

    @property
    def per_second(self) -> float:
        return len(self.clients) / self.seconds if self.seconds > 0 else 0.0


async def open_sockets(specs: list[SocketSpec], tally: Tally, concurrency: int, timeout_s: float) -> Opened:
    """Open every socket, at most ``concurrency`` handshakes at a time; each counts once its snapshot is in.

    Bounded concurrency is what a crowd of reconnecting clients looks like, and
    keeps the accept backlog of the server from overflowing into SYN retries
    that would measure the kernel's retry timer rather than the server. A socket
    the server refuses (e.g. 1013 "try again later") is retried a few times, as
    a real client would; ``Opened.retries`` says how often that happened.
    """
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    retries = 0

    async def attempt(spec: SocketSpec) -> ChatClient:
        client: ChatClient | None = None
        try:
            _, client = await ws_connect(lambda: ChatClient(tally, spec.group_id), spec.url,
                                         websocket_handshake_timeout=timeout_s)
            await asyncio.wait_for(client.ready, timeout_s)
            return client
        except BaseException:
            if client is not None:
                client.close()
            raise

    async def open_one(spec: SocketSpec) -> ChatClient | None:
        nonlocal retries
        async with gate:
            for tries in range(OPEN_ATTEMPTS):
                try:
                    return await attempt(spec)
                except Exception as exc:  # OSError, timeouts, picows' handshake errors, a refusal
                    if tries + 1 == OPEN_ATTEMPTS:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        return None
                    retries += 1
                    await asyncio.sleep(RETRY_PAUSE_S * (tries + 1))
        return None

    started = time.monotonic()
    results = await asyncio.gather(*(open_one(spec) for spec in specs))
    seconds = time.monotonic() - started
    clients = [client for client in results if client is not None]
    sizes = Counter(client.group_id for client in clients)
    for client in clients:
        client.group_size = sizes[client.group_id]
    return Opened(clients, len(errors), errors[0] if errors else None, seconds, retries)


def close_all(clients: list[ChatClient]) -> None:
    for client in clients:
        client.close()


class Pacer:
    """Sends at an exact aggregate rate, round-robin over ``senders``, paced by the loop's timer.

    Message k is due at ``start + k / rate``. Each wake-up sends every message
    now due, so a late timer (or a busy loop) is caught up at once and the
    number sent after t seconds is always ``floor(t * rate) + 1``.
    """

    def __init__(self, senders: list[ChatClient], rate: float, size: int, tally: Tally) -> None:
        self.senders = senders
        self.rate = rate
        self.size = size
        self.tally = tally
        self.sent = 0
        self.max_behind = 0  # the most messages one wake-up had to catch up: > 1 means the timer lagged

    async def run(self, seconds: float) -> None:
        senders, rate, size, tally = self.senders, self.rate, self.size, self.tally
        total = int(seconds * rate)
        start = time.monotonic()
        while self.sent < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            self.max_behind = max(self.max_behind, due - self.sent)
            while self.sent < due:
                client = senders[self.sent % len(senders)]
                send_ns = monotonic_ns()
                client.send(make_info(send_ns, self.sent, size))
                if send_ns >= tally.since_ns:
                    tally.sent += 1
                    tally.expected += client.group_size
                self.sent += 1
            # Never less than one tick: the loop's timers have 1 ms resolution, and a shorter
            # sleep wakes before anything is due and spins.
            await asyncio.sleep(max(MIN_TICK_S, start + self.sent / rate - time.monotonic()))


def percentile_ms(sorted_ns: array | list[int], fraction: float) -> float:
    """The nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = min(len(sorted_ns) - 1, max(0, int(round(fraction * len(sorted_ns))) - 1))
    return sorted_ns[rank] / 1e6


def latency_summary(latencies_ns: array) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {
        "p50_ms": percentile_ms(ordered, 0.50),
        "p90_ms": percentile_ms(ordered, 0.90),
        "p99_ms": percentile_ms(ordered, 0.99),
        "max_ms": ordered[-1] / 1e6 if ordered else float("nan"),
    }

