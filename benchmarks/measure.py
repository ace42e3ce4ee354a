"""Measuring one load: open a set of sockets, send at a rate for a window, and turn what came back into a Row."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

from benchmarks import procstats
from benchmarks.loadgen import (
    ChatClient,
    Incidents,
    Opened,
    Pacer,
    SocketSpec,
    Tally,
    close_all,
    latency_summary,
    open_sockets,
)

MESSAGE_BYTES = 64  # issue 7's message size; the marker takes 32 of them
# issue 7's pass mark for the "max" steps.
MAX_P99_MS = 250.0
# Handshakes in flight at once: a crowd, not a stampede.
OPEN_CONCURRENCY = 200
OPEN_TIMEOUT_S = 10.0
# A few sockets opened before the RSS baseline, so lazy imports and first-use caches
# of the server are not charged to the sockets measured.
WARM_SOCKETS = 20
# Lets the server finish the last opens' work (and the allocator settle) before RSS is read.
SETTLE_S = 1.0
# Share of the load generator's CPU (plus Redis, which shares it) above which it may be
# the bottleneck rather than the server.
CLIENT_BUSY_CORES = 0.85
# A sender that wakes this late has a busy loop: its messages went out in a burst.
PACER_LAG_NOTE_MS = 20.0


@dataclass(frozen=True)
class Phases:
    """One measurement: send for warm-up + window, count the window's messages, wait at most drain for them."""

    warmup_s: float
    window_s: float
    drain_s: float


@dataclass
class Row:
    """One line of the table: a scenario variant on a number of nodes."""

    scenario: str
    nodes: int
    load: str
    commit: str = ""  # the server's git commit ("+dirty": with uncommitted changes)
    sockets: int = 0
    open_failures: int = 0
    opens_per_s: float | None = None
    rss_kb_per_socket: float | None = None
    rate_msg_s: float | None = None
    expected: int | None = None
    received: int | None = None
    loss: int | None = None
    delivered_per_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_us_per_delivery: float | None = None
    server_us_per_inbound: float | None = None  # the same CPU per message the clients sent
    server_cores: float | None = None
    loadgen_us_per_delivery: float | None = None
    loadgen_cores: float | None = None
    redis_cores: float | None = None
    error_frames: int = 0
    disconnects: int = 0
    notes: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)  # the "max" mode's every step, for --json

    @property
    def passed(self) -> bool:
        return self.loss == 0 and self.p99_ms is not None and self.p99_ms < MAX_P99_MS

    @property
    def client_busy(self) -> bool:
        """The load generator's CPU (shared with Redis) was nearly full: the server may have had more to give."""
        return (self.loadgen_cores or 0) + (self.redis_cores or 0) > CLIENT_BUSY_CORES


@dataclass(frozen=True)
class Target:
    """The processes being measured: the fastim nodes' PIDs and their URLs, and Redis."""

    ws_urls: list[str]
    server_pids: list[int]
    redis_pid: int


@dataclass
class SocketSet:
    """The sockets of one scenario, with what opening them cost."""

    opened: Opened
    warm: Opened
    rss_kb_per_socket: float | None
    cpu: tuple[procstats.CpuSample, procstats.CpuSample]  # servers and load generator, around the opens

    @property
    def clients(self) -> list[ChatClient]:
        return self.opened.clients

    def close(self) -> None:
        close_all(self.opened.clients)
        close_all(self.warm.clients)

    def describe(self, row: Row) -> Row:
        row.sockets = len(self.clients)
        row.open_failures = self.opened.failures
        row.opens_per_s = self.opened.per_second
        row.rss_kb_per_socket = self.rss_kb_per_socket
        if self.opened.retries:
            row.notes.append(f"{self.opened.retries} opens retried")
        if self.opened.first_error:
            row.notes.append(f"open failed: {self.opened.first_error}")
        return row


async def open_set(target: Target, specs: list[SocketSpec], tally: Tally) -> SocketSet:
    """Warm the nodes with a few sockets, then open ``specs`` and charge the RSS growth to them."""
    warm_specs = [SocketSpec(url, "warm", f"w{i}") for i, url in enumerate(target.ws_urls * WARM_SOCKETS)]
    warm = await open_sockets(warm_specs, tally, OPEN_CONCURRENCY, OPEN_TIMEOUT_S)
    await asyncio.sleep(SETTLE_S)
    rss_before = procstats.total_rss_kb(target.server_pids)
    cpu_before = procstats.sample_cpu(target.server_pids)
    opened = await open_sockets(specs, tally, OPEN_CONCURRENCY, OPEN_TIMEOUT_S)
    cpu_after = procstats.sample_cpu(target.server_pids)
    await asyncio.sleep(SETTLE_S)
    growth = procstats.total_rss_kb(target.server_pids) - rss_before
    per_socket = growth / len(opened.clients) if opened.clients else None
    return SocketSet(opened, warm, per_socket, (cpu_before, cpu_after))


def round_robin(urls: list[str], count: int, group_of) -> list[SocketSpec]:
    """Socket i goes to node i mod n, in group ``group_of(i)``, as user ``u{i}``."""
    return [SocketSpec(urls[i % len(urls)], group_of(i), f"u{i}") for i in range(count)]


async def measure(target: Target, senders: list[ChatClient], rate: float, tally: Tally, phases: Phases,
                  row: Row) -> Row:
    """Send at ``rate`` for warm-up + window; count the window's deliveries until drained or timed out.

    CPU per delivery counts from the window's opening until the last delivery
    is in (or the drain times out), so all the work of the window's messages is
    inside it; cores are read over the sending window alone, so a drain spent
    waiting for lost messages does not dilute them.
    """
    pacer = Pacer(senders, rate, MESSAGE_BYTES, tally)
    sending = asyncio.ensure_future(pacer.run(phases.warmup_s + phases.window_s))
    try:
        await asyncio.sleep(phases.warmup_s)
        before = procstats.sample_cpu(target.server_pids)
        redis_before = procstats.cpu_seconds(target.redis_pid)
        incidents_before = tally.incidents()
        tally.open_window()
        await sending
    finally:
        sending.cancel()
    sent = procstats.sample_cpu(target.server_pids)
    redis_cpu = procstats.cpu_seconds(target.redis_pid) - redis_before
    drained = await tally.drained(phases.drain_s)
    after = procstats.sample_cpu(target.server_pids)
    _fill_deliveries(row, rate, tally, (before, sent, after), redis_cpu)
    _note_incidents(row, tally.incidents(since=incidents_before))
    if not drained:
        row.notes.append("not drained in time")
    lag_ms = (pacer.max_behind - 1) / rate * 1000
    if lag_ms > PACER_LAG_NOTE_MS:
        row.notes.append(f"sender ran up to {lag_ms:.0f} ms late")
    if row.client_busy:
        row.notes.append("client CPU busy: may be load-generator bound")
    return row


def _fill_deliveries(row: Row, rate: float, tally: Tally, samples: tuple[procstats.CpuSample, ...],
                     redis_cpu: float) -> None:
    """``samples``: CPU when the window opened, when sending stopped, when the drain ended."""
    before, sent, after = samples
    received = tally.received
    row.rate_msg_s = rate
    row.expected, row.received = tally.expected, received
    row.loss = max(0, tally.expected - received)
    sending_s = sent.wall - before.wall
    # Over the sending window, or longer when the last deliveries came in after it.
    row.delivered_per_s = received / max(sending_s, tally.receiving_s)
    for key, value in latency_summary(tally.latencies_ns).items():
        setattr(row, key, value)
    row.server_cores = (sent.processes - before.processes) / sending_s
    row.loadgen_cores = (sent.own - before.own) / sending_s
    row.redis_cores = redis_cpu / sending_s
    if received:
        row.server_us_per_delivery = (after.processes - before.processes) / received * 1e6
        row.loadgen_us_per_delivery = (after.own - before.own) / received * 1e6
    if tally.sent:
        row.server_us_per_inbound = (after.processes - before.processes) / tally.sent * 1e6


def _note_incidents(row: Row, incidents: Incidents) -> None:
    row.disconnects += incidents.disconnects
    row.error_frames += incidents.error_frames
    if incidents.example_error:
        row.notes.append(f"e.g. {incidents.example_error.decode(errors='replace')[:80]}")
    for reason, count in incidents.closes.most_common(2):
        row.notes.append(f"{count} closed with {reason}")
    if incidents.unexpected:
        row.notes.append(f"{incidents.unexpected} unrecognised frames")


async def find_max(target: Target, senders: list[ChatClient], tally: Tally, rates: tuple[float, ...],
                   phases: Phases, template: Row) -> Row:
    """Raise the rate step by step until a step loses a delivery or its p99 passes 250 ms.

    The row is the last passing step; the failing one is named in its notes,
    and every step goes to ``steps`` for the JSON output.
    """
    best: Row | None = None
    steps: list[dict] = []
    client_bound = False
    for rate in rates:
        step = await measure(target, senders, rate, tally, phases,
                             replace(template, notes=list(template.notes), steps=[]))
        steps.append({k: v for k, v in vars(step).items() if k != "steps"})
        client_bound = step.client_busy
        if not step.passed:
            reason = f"loss {step.loss}" if step.loss else f"p99 {step.p99_ms:.0f} ms"
            chosen = best or step
            chosen.notes.append(f"{rate:g} msg/s failed ({reason}, {step.delivered_per_s:,.0f}/s)")
            break
        best = step
    else:
        chosen = best
        chosen.notes.append("every step passed: raise max_rates")
    chosen.load = f"max: {chosen.rate_msg_s:g} msg/s" if chosen.passed else "max: none passed"
    if client_bound:
        # The last step ran out of client CPU: the server's own limit is at least this.
        chosen.load = chosen.load.replace("max: ", "max ≥ ") + " (load-generator bound)"
    chosen.steps = steps
    return chosen


async def idle_cores(target: Target, seconds: float) -> float:
    """The servers' CPU share while nothing is sent: timers, pings, polling."""
    before = procstats.sample_cpu(target.server_pids)
    await asyncio.sleep(seconds)
    after = procstats.sample_cpu(target.server_pids)
    return (after.processes - before.processes) / (after.wall - before.wall)
