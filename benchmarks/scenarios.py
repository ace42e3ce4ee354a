"""Scenarios S1-S3 of issue 7: which sockets to open, what to send, and one result row per variant."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field, replace

from benchmarks import procstats
from benchmarks.loadgen import (
    ChatClient,
    Opened,
    Pacer,
    SocketSpec,
    Tally,
    close_all,
    latency_summary,
    open_sockets,
)

MESSAGE_BYTES = 64  # issue 7's message size; the marker takes 32 of them
S1_SOCKETS = 1000
S2_GROUPS, S2_GROUP_SIZE = 250, 4
S3_SOCKETS = 5000
# issue 7's pass mark for the "max" steps.
MAX_P99_MS = 250.0
# Handshakes in flight at once, as the brief asks: a crowd, not a stampede.
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
class Profile:
    """How long each phase lasts; ``QUICK`` is a smoke test, ``FULL`` the figures."""

    warmup_s: float
    window_s: float
    drain_s: float
    step_warmup_s: float
    step_window_s: float
    s1_rates: tuple[float, ...]
    max_rates: tuple[float, ...]
    s2_rates: tuple[float, ...]
    s3_sockets: int


def _geometric(start: float, factor: float, stop: float) -> tuple[float, ...]:
    rates, rate = [], start
    while rate <= stop * 1.0001:
        rates.append(round(rate))
        rate *= factor
    return tuple(rates)


FULL = Profile(
    warmup_s=2.0, window_s=8.0, drain_s=5.0, step_warmup_s=1.0, step_window_s=3.0,
    s1_rates=(5, 50),
    # Steps of sqrt(2) from 25 msg/s: 25k deliveries/s up to 1.6M/s in 13 steps.
    max_rates=_geometric(25, math.sqrt(2), 1600),
    s2_rates=(2, 4), s3_sockets=S3_SOCKETS,
)
QUICK = Profile(
    warmup_s=0.5, window_s=1.5, drain_s=2.0, step_warmup_s=0.3, step_window_s=1.0,
    s1_rates=(5, 50), max_rates=_geometric(50, 2, 1600), s2_rates=(2, 4), s3_sockets=S3_SOCKETS,
)


@dataclass
class Row:
    """One line of the table: a scenario variant on a number of nodes."""

    scenario: str
    nodes: int
    load: str
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


async def measure(target: Target, senders: list[ChatClient], rate: float, tally: Tally,
                  warmup_s: float, window_s: float, drain_s: float, row: Row) -> Row:
    """Send at ``rate`` for warm-up + window; count the window's deliveries until drained or timed out.

    CPU is sampled from the window's opening to the last delivery (or the drain
    timeout), so the work of the window's messages is inside it.
    """
    pacer = Pacer(senders, rate, MESSAGE_BYTES, tally)
    sending = asyncio.ensure_future(pacer.run(warmup_s + window_s))
    try:
        await asyncio.sleep(warmup_s)
        before = procstats.sample_cpu(target.server_pids)
        redis_before = procstats.cpu_seconds(target.redis_pid)
        disconnects_before, errors_before = tally.disconnects, len(tally.errors)
        closes_before = Counter(tally.close_reasons)
        tally.open_window()
        await sending
    finally:
        sending.cancel()
    drained = await tally.drained(drain_s)
    after = procstats.sample_cpu(target.server_pids)
    redis_cpu = procstats.cpu_seconds(target.redis_pid) - redis_before
    row = _fill(row, rate, tally, before, after, redis_cpu, drained, pacer,
                tally.disconnects - disconnects_before, len(tally.errors) - errors_before)
    for reason, count in (tally.close_reasons - closes_before).most_common(2):
        row.notes.append(f"{count} closed with {reason}")
    return row


def _fill(row: Row, rate: float, tally: Tally, before: procstats.CpuSample, after: procstats.CpuSample,
          redis_cpu: float, drained: bool, pacer: Pacer, disconnects: int, errors: int) -> Row:
    wall = after.wall - before.wall
    received = tally.received
    row.rate_msg_s = rate
    row.expected, row.received = tally.expected, received
    row.loss = max(0, tally.expected - received)
    row.delivered_per_s = received / wall
    for key, value in latency_summary(tally.latencies_ns).items():
        setattr(row, key, value)
    server_cpu, own_cpu = after.processes - before.processes, after.own - before.own
    row.server_cores, row.loadgen_cores, row.redis_cores = server_cpu / wall, own_cpu / wall, redis_cpu / wall
    if received:
        row.server_us_per_delivery = server_cpu / received * 1e6
        row.loadgen_us_per_delivery = own_cpu / received * 1e6
    row.disconnects += disconnects
    row.error_frames += errors
    if not drained:
        row.notes.append("not drained in time")
    lag_ms = (pacer.max_behind - 1) / rate * 1000
    if lag_ms > PACER_LAG_NOTE_MS:
        row.notes.append(f"sender ran up to {lag_ms:.0f} ms late")
    if row.loadgen_cores + row.redis_cores > CLIENT_BUSY_CORES:
        row.notes.append("client CPU busy: may be load-generator bound")
    return row


async def find_max(target: Target, senders: list[ChatClient], tally: Tally, profile: Profile,
                   template: Row) -> Row:
    """Raise the rate step by step until a step loses a delivery or its p99 passes 250 ms.

    The row is the last passing step; the failing one is named in its notes,
    and every step goes to ``steps`` for the JSON output.
    """
    best: Row | None = None
    steps: list[dict] = []
    for rate in profile.max_rates:
        step = await measure(target, senders, rate, tally, profile.step_warmup_s, profile.step_window_s,
                             profile.drain_s, replace(template, notes=list(template.notes), steps=[]))
        steps.append({k: v for k, v in vars(step).items() if k != "steps"})
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
    chosen.steps = steps
    return chosen


async def s1_live_room(target: Target, profile: Profile, nodes: int) -> list[Row]:
    """1 group, 1000 sockets, 1 sender: fixed rates, then the highest rate that keeps up."""
    tally = Tally()
    sockets = await open_set(target, round_robin(target.ws_urls, S1_SOCKETS, lambda i: "1"), tally)
    try:
        senders = sockets.clients[:1]
        rows = []
        for rate in profile.s1_rates:
            row = sockets.describe(Row("S1", nodes, f"{rate:g} msg/s"))
            rows.append(await measure(target, senders, rate, tally, profile.warmup_s, profile.window_s,
                                      profile.drain_s, row))
        rows.append(await find_max(target, senders, tally, profile, sockets.describe(Row("S1", nodes, "max"))))
        return rows
    finally:
        sockets.close()


async def s2_small_rooms(target: Target, profile: Profile, nodes: int) -> list[Row]:
    """250 groups x 4 sockets, every socket a sender at 2 (then 4) msg/s."""
    tally = Tally()
    count = S2_GROUPS * S2_GROUP_SIZE
    sockets = await open_set(target, round_robin(target.ws_urls, count, lambda i: str(i // S2_GROUP_SIZE + 1)),
                             tally)
    try:
        # One member of every group, then the next member of every group...: consecutive
        # sends go to different rooms, so each room's messages are evenly spaced.
        senders = sorted(sockets.clients, key=lambda c: int(c.group_id))
        senders = [c for k in range(S2_GROUP_SIZE) for c in senders[k::S2_GROUP_SIZE]]
        rows = []
        for per_socket in profile.s2_rates:
            row = sockets.describe(Row("S2", nodes, f"{per_socket:g} msg/s/socket"))
            rows.append(await measure(target, senders, per_socket * len(senders), tally, profile.warmup_s,
                                      profile.window_s, profile.drain_s, row))
        return rows
    finally:
        sockets.close()


async def s3_idle(target: Target, profile: Profile, nodes: int) -> list[Row]:
    """5,000 idle sockets in one group: what a socket costs in memory, and how fast they open."""
    tally = Tally()
    sockets = await open_set(target, round_robin(target.ws_urls, profile.s3_sockets, lambda i: "1"), tally)
    try:
        row = sockets.describe(Row("S3", nodes, f"{profile.s3_sockets} idle"))
        # While the sockets opened: the share of a core a handshake rate of opens_per_s costs.
        before, after = sockets.cpu
        row.server_cores = (after.processes - before.processes) / (after.wall - before.wall)
        row.loadgen_cores = (after.own - before.own) / (after.wall - before.wall)
        row.disconnects = tally.disconnects
        if tally.disconnects:
            row.notes.append(f"{tally.disconnects} sockets closed by the server while idle")
        return [row]
    finally:
        sockets.close()


SCENARIOS = {"S1": s1_live_room, "S2": s2_small_rooms, "S3": s3_idle}
