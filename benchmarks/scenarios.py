"""Scenarios S1-S3 of issue 7: which sockets to open, what to send, how long; one Row per variant."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from benchmarks.loadgen import Tally
from benchmarks.measure import Phases, Row, Target, find_max, idle_cores, measure, open_set, round_robin

S1_SOCKETS = 1000
S2_GROUPS, S2_GROUP_SIZE = 250, 4
S3_SOCKETS = 5000
# Long enough for /proc's 10 ms CPU ticks to resolve a few thousandths of a core.
IDLE_SAMPLE_S = 3.0


@dataclass(frozen=True)
class Profile:
    """How long each phase lasts; ``QUICK`` is a smoke test, ``FULL`` the figures."""

    fixed: Phases  # each fixed-rate variant
    step: Phases  # each step of S1's "max" mode
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
    fixed=Phases(warmup_s=2.0, window_s=8.0, drain_s=5.0), step=Phases(warmup_s=1.0, window_s=3.0, drain_s=5.0),
    s1_rates=(5, 50),
    # Steps of sqrt(2) from 25 msg/s: 25k deliveries/s up to 1.6M/s in 13 steps.
    max_rates=_geometric(25, math.sqrt(2), 1600),
    # Issue 18's ladder: 8k, 16k and 32k deliveries/s from 1000 senders in groups of 4.
    s2_rates=(2, 4, 8), s3_sockets=S3_SOCKETS,
)
QUICK = Profile(
    fixed=Phases(warmup_s=0.5, window_s=1.5, drain_s=1.0), step=Phases(warmup_s=0.3, window_s=1.0, drain_s=1.0),
    s1_rates=(5, 50), max_rates=_geometric(50, 2, 1600), s2_rates=(2, 4), s3_sockets=S3_SOCKETS,
)


async def _s1(target: Target, profile: Profile, nodes: int, label: str, with_max: bool) -> list[Row]:
    tally = Tally()
    sockets = await open_set(target, round_robin(target.ws_urls, S1_SOCKETS, lambda i: "1"), tally)
    try:
        senders = sockets.clients[:1]
        rows = []
        for rate in profile.s1_rates:
            row = sockets.describe(Row("S1", nodes, f"{rate:g} msg/s{label}"))
            rows.append(await measure(target, senders, rate, tally, profile.fixed, row))
        if with_max:
            template = sockets.describe(Row("S1", nodes, "max"))
            rows.append(await find_max(target, senders, tally, profile.max_rates, profile.step, template))
        return rows
    finally:
        sockets.close()


async def s1_live_room(target: Target, profile: Profile, nodes: int) -> list[Row]:
    """1 group, 1000 sockets, 1 sender: fixed rates, then the highest rate that keeps up."""
    return await _s1(target, profile, nodes, "", with_max=True)


async def s1_uncoalesced(target: Target, profile: Profile, nodes: int) -> list[Row]:
    """S1's fixed rates on nodes whose coalescing window is off: what the window adds to a quiet room's p99."""
    return await _s1(target, profile, nodes, ", window off", with_max=False)


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
            rows.append(await measure(target, senders, per_socket * len(senders), tally, profile.fixed, row))
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
        if sockets.clients:
            per_open = (after.processes - before.processes) / len(sockets.clients) * 1e6
            row.notes.append(f"server CPU {per_open:,.0f} µs per open")
        idle = await idle_cores(target, IDLE_SAMPLE_S)
        row.notes.append(f"idle with all open: server {idle:.3f} cores")
        row.disconnects = tally.disconnects
        if tally.disconnects:
            row.notes.append(f"{tally.disconnects} sockets closed by the server while idle")
        return [row]
    finally:
        sockets.close()


@dataclass(frozen=True)
class Scenario:
    run: Callable[[Target, Profile, int], Awaitable[list[Row]]]
    node_settings: dict[str, str] = field(default_factory=dict)  # on top of cluster.NODE_SETTINGS


SCENARIOS = {
    "S1": Scenario(s1_live_room),
    "S1-off": Scenario(s1_uncoalesced, {"FASTIM_IM_COALESCING_WINDOW_MS": "0"}),
    "S2": Scenario(s2_small_rooms),
    "S3": Scenario(s3_idle),
}
