"""``python -m benchmarks.sharding [--quick]``: many small groups across two nodes, on one Redis, then on a Redis Cluster.

One run measures the same load twice, each time on fresh processes:

1. ``redis``: two fastim nodes on one ``redis-server`` (``--redis-url``);
2. ``cluster``: two fastim nodes on a Redis Cluster of 3 masters and, by
   default, no replicas (``--redis-cluster``; ``--replicas 1`` adds a replica
   per master, whose CPU, replication included, is then reported too).

The load is S2 of ``benchmarks.run`` made larger: 500 groups of 4 sockets,
socket ``i`` in group ``i // 4 + 1`` on node ``i % 2``, so every group has two
members on each node and every message crosses nodes (the sender's node runs
the append script, which publishes; both nodes receive the event by pub/sub
and write it to their two members). Every socket sends at a fixed rate
(round-robin over the groups, so each room's messages are evenly spaced);
each message is due to 4 sockets, the sender's own included. Fixed rates
first, then "max": the rate per socket rises step by step until a step loses
a delivery, is not drained in time, or its p99 reaches 200 ms.

Per step the table gives: messages and deliveries offered per second (those
sent in the window, times the group's 4 sockets), deliveries received per
second, loss, p50/p99 (receive time minus send time), the CPU of each fastim
node and of each Redis process read from ``/proc`` over the sending window,
and per Redis master the calls of EVALSHA (every message is one append
script), SPUBLISH and PUBLISH from ``INFO commandstats`` between the window's
opening and the end of its drain, with the master's CPU per message it
stored over the same span. Once the sockets are open, every master is asked
which group channels it carries (``PUBSUB SHARDCHANNELS`` / ``SHARDNUMSUB``
for sharded pub/sub, ``PUBSUB CHANNELS`` / ``NUMSUB`` for classic) and
whether it owns their slots.

Pinning, as in ``benchmarks.run``: both fastim nodes run on CPU 0 (``taskset
-c 0``), so the nodes' figures are those of one server core shared by two
processes; the load generator (this process) and every Redis process share
CPU 1 (this process pins itself before starting Redis, and the servers it
starts inherit the affinity). Separating the nodes from the client keeps the
load generator's work out of the nodes' core, so a step's saturation is the
nodes' own. The price: the 1 or 3 (or 6) Redis processes share one core with
the client, so a cluster's wall-clock throughput here says nothing about
what 3 shards on 3 machines would do. What carries over is per-shard CPU per
message and how messages and channels split over the shards; with 2 cores,
expect the nodes' core to saturate long before Redis does.

``--memory`` measures instead (about a minute and a half): a node's RSS
growth per idle chat socket (2,000 sockets: all in one group, in groups of
10, each in a group of its own; a fresh node each time) and Redis's
``used_memory`` growth per joined socket and per stored message (100,000
messages of 100 bytes in one group, then in 1,000 groups of 100), on one
Redis and one node, with ``history_max = 0``.

``--fanout`` measures Redis alone (under two minutes): the CPU of one
``PUBLISH`` (one redis-server) and one ``SPUBLISH`` (the master of a 3-master
cluster) of a 200-byte message as the subscriber connections of its channel
(the nodes that serve the group) go from 1 to 32, at 2,000 and 10,000
messages a second, sent in 1 ms batches as a node's pipeline does.

``--checkout DIR`` runs the nodes from the fastim package in ``DIR`` (e.g. an
exported commit, to compare builds); ``--only redis|cluster`` measures one
configuration; ``--json FILE`` saves every figure.

The machine may be shared: before each step the run waits (30 s at most)
until the processes that are not its own use under 0.08 cores, and a step
during which they used more than 0.15 cores is measured once more; the
table's notes name such processes when they remain. A full run takes about
2.5 minutes (plus any such waits), ``--quick`` under a minute.

Every process is started here, on loopback, and stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import uvloop

from benchmarks import procstats
from benchmarks.cluster import LOOPBACK, NodeProcess, Nodes, Pinning, RedisProcess, raise_fd_limit
from benchmarks.loadgen import ChatClient, Pacer, SocketSpec, Tally, latency_summary
from benchmarks.measure import MESSAGE_BYTES, Phases, Target, open_set, round_robin
from benchmarks.run import git_head
from tests.redis_topologies import RedisClusterProcesses

GROUPS, GROUP_SIZE = 500, 4
NODES = 2
SHARDS = 3
MAX_P99_MS = 200.0
# CPU 1 (load generator + Redis) busier than this: the step may be bound by the client, not the nodes.
CLIENT_BUSY_CORES = 0.85
# This is a shared 2-core machine: before each step, wait (QUIET_WAIT_S at most) until the processes
# not ours use under QUIET_CORES over QUIET_SAMPLE_S; a step during which they used more than
# DISTURBED_CORES is measured again, DISTURBED_RETRIES times at most.
QUIET_CORES, QUIET_SAMPLE_S, QUIET_WAIT_S = 0.08, 1.0, 30.0
DISTURBED_CORES, DISTURBED_RETRIES = 0.15, 1
SETTINGS = {
    # Over the per-socket rate limit's default of 10 msg/s: the "max" steps go past it.
    "FASTIM_IM_RATE_LIMIT": "10000",
    "FASTIM_IM_RATE_BURST": "10000",
}
# --memory
IDLE_SOCKETS = 2000
IDLE_GROUP_SIZES = (IDLE_SOCKETS, 10, 1)  # one group of all; groups of 10; a group each
FILL_MESSAGES, FILL_BYTES = 100_000, 100
FILL_RATE = 8000.0  # messages/s into one node while filling
FILL_SMALL_GROUPS = 1000
FILL_WAIT_S = 60.0


@dataclass(frozen=True)
class Profile:
    fixed: Phases
    step: Phases
    fixed_rates: tuple[float, ...]  # messages per second per socket
    max_rates: tuple[float, ...]


def _geometric(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(round(start * factor ** k, 2) for k in range(count))


# 1 msg/s per socket is 2,000 messages and 8,000 deliveries a second; the "max" steps rise by
# sqrt(2) from there (2 nodes sharing one core saturate at a few msg/s per socket).
FULL = Profile(fixed=Phases(warmup_s=2.0, window_s=10.0, drain_s=5.0),
               step=Phases(warmup_s=1.0, window_s=5.0, drain_s=4.0),
               fixed_rates=(0.5, 1.0), max_rates=_geometric(1.0, math.sqrt(2), 8))
QUICK = Profile(fixed=Phases(warmup_s=0.5, window_s=2.0, drain_s=2.0),
                step=Phases(warmup_s=0.5, window_s=2.0, drain_s=2.0),
                fixed_rates=(1.0,), max_rates=_geometric(1.0, 2.0, 4))
# Nodes and Redis left alone with every socket open, before the first step: their fixed cost.
IDLE_S = 4.0


# -- Redis topologies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisProc:
    label: str  # "redis", "s0".."s2", "s0r" (replica of s0)
    port: int
    pid: int
    master: bool


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=LOOPBACK, port=port, socket_timeout=5, decode_responses=True)


def _pid_of(port: int) -> int:
    return int(_client(port).info("server")["process_id"])


class SingleRedis:
    name = "redis"

    def __init__(self, workdir: Path, prefix: list[str]) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = RedisProcess(binary, workdir, prefix)
        self.procs: list[RedisProc] = []

    def start(self) -> None:
        self.process.start()
        self.procs = [RedisProc("redis", self.process.port, self.process.pid, True)]

    def node_args(self) -> list[str]:
        return ["--redis-url", self.process.url]

    def describe(self) -> str:
        return "1 redis-server"

    def stop(self) -> None:
        self.process.stop()


class ClusterRedis:
    name = "cluster"

    def __init__(self, replicas: int) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.topology = RedisClusterProcesses(binary, masters=SHARDS, replicas_per_master=replicas)
        self.replicas = replicas
        self.procs: list[RedisProc] = []

    def start(self) -> None:
        self.topology.start()
        masters = [port for _, port in self.topology.masters()]
        label = {port: f"s{i}" for i, port in enumerate(masters)}
        procs = [RedisProc(label[port], port, _pid_of(port), True) for port in masters]
        for port in self.topology.ports:
            if port not in label:
                role = _client(port).execute_command("ROLE")  # ['slave', host, master port, state, offset]
                procs.append(RedisProc(label.get(int(role[2]), "?") + "r", port, _pid_of(port), False))
        self.procs = sorted(procs, key=lambda p: (not p.master, p.label))

    def node_args(self) -> list[str]:
        return ["--redis-cluster", ",".join(self.topology.startup_nodes)]

    def describe(self) -> str:
        return f"Redis Cluster, {SHARDS} masters x {self.replicas} replicas"

    def stop(self) -> None:
        self.topology.cleanup()


def make_node(redis_args: list[str], workdir: Path, prefix: list[str], name: str,
              settings: dict[str, str], checkout: Path | None = None) -> NodeProcess:
    """A NodeProcess whose Redis is given by ``redis_args`` (``--redis-url URL`` or ``--redis-cluster ...``).

    ``checkout``: run the fastim package found there instead of this one (another build to compare).
    """
    node = NodeProcess("redis://unused", workdir, prefix, name, settings, **({"checkout": checkout} if checkout else {}))
    at = node.argv.index("--redis-url")
    node.argv[at:at + 2] = redis_args
    return node


# -- what the Redis processes did ----------------------------------------------------------------


COUNTED = ("evalsha", "eval", "spublish", "publish")


@dataclass(frozen=True)
class RedisSample:
    cpu: dict[str, float]  # label -> CPU seconds
    calls: dict[str, dict[str, int]]  # label -> command -> calls (masters only)


def sample_redis(procs: list[RedisProc]) -> RedisSample:
    cpu = {p.label: procstats.cpu_seconds(p.pid) for p in procs}
    calls = {}
    for p in procs:
        if p.master:
            stats = _client(p.port).info("commandstats")
            calls[p.label] = {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in COUNTED}
    return RedisSample(cpu, calls)


def channel_census(procs: list[RedisProc], cluster: bool) -> list[str]:
    """Per master: group channels it carries (sharded and classic), subscribers each, and slots it owns."""
    lines = []
    owned: dict[str, set[int]] = {}
    if cluster:
        # CLUSTER SLOTS: [[start, end, [host, port, id], ...replicas], ...]
        for start, end, master, *_ in _client(procs[0].port).execute_command("CLUSTER", "SLOTS"):
            for p in procs:
                if p.master and int(master[1]) == p.port:
                    owned.setdefault(p.label, set()).update(range(int(start), int(end) + 1))
    from fastim.infrastructure.redis.cluster import slot_of

    for p in procs:
        if not p.master:
            continue
        client = _client(p.port)
        sharded = client.execute_command("PUBSUB", "SHARDCHANNELS", "mq:*") if cluster else []
        classic = client.execute_command("PUBSUB", "CHANNELS", "mq:*")
        subscribers = []
        if sharded:
            reply = client.execute_command("PUBSUB", "SHARDNUMSUB", *sharded)
            subscribers = [int(n) for n in reply[1::2]]
        elif classic:
            reply = client.execute_command("PUBSUB", "NUMSUB", *classic)
            subscribers = [int(n) for n in reply[1::2]]
        own = sum(1 for ch in sharded if slot_of(ch) in owned.get(p.label, ())) if cluster else None
        clients = int(client.info("clients")["connected_clients"]) - 1  # less this one
        counts = {n: subscribers.count(n) for n in sorted(set(subscribers))}
        text = (f"{p.label} (port {p.port}): {len(sharded)} sharded group channels"
                + (f" ({own} in slots it owns)" if cluster else "")
                + f", {len(classic)} classic group channels; subscribers per channel {counts or '-'};"
                + f" {clients} client connections"
                + (f"; {len(owned.get(p.label, ()))} slots" if cluster else ""))
        lines.append(text)
    return lines


def cpu_jiffies() -> dict[str, tuple[int, int, int]]:
    """Per CPU of the machine (/proc/stat): jiffies in processes (user, nice, system), steal, all.

    Interrupt time is left out of "in processes": with IRQ time accounting it is charged to no
    process, so it would show up as someone else's load.
    """
    found = {}
    with open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
                found[name] = (user + nice + system, steal,
                               user + nice + system + idle + iowait + irq + softirq + steal)
    return found


def all_processes_cpu() -> dict[int, tuple[str, float]]:
    """Every process of the machine: (command name, CPU seconds so far)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    text = stat.read()
            except OSError:
                continue
            name = text[text.index(b"(") + 1:text.rindex(b")")].decode(errors="replace")
            fields = text[text.rindex(b")") + 2:].split()
            found[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / procstats.CLOCK_TICKS)
    return found


def foreign_top(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], ours: set[int],
                seconds: float) -> list[str]:
    """The processes not ours that used the most CPU between two snapshots, as "name pid: cores"."""
    used = [(after[pid][1] - before.get(pid, (None, 0.0))[1], pid, after[pid][0]) for pid in after if pid not in ours]
    return [f"{name} {pid}: {cpu / seconds:.2f}" for cpu, pid, name in sorted(used, reverse=True)[:2]
            if cpu / seconds >= 0.05]


async def wait_quiet(ours: set[int]) -> float:
    """Wait (QUIET_WAIT_S at most) until the machine's other processes use under QUIET_CORES; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < QUIET_WAIT_S:
        before, at = all_processes_cpu(), time.monotonic()
        await asyncio.sleep(QUIET_SAMPLE_S)
        after = all_processes_cpu()
        span = time.monotonic() - at
        foreign = sum(cpu - before.get(pid, (None, 0.0))[1] for pid, (_, cpu) in after.items() if pid not in ours)
        if foreign / span < QUIET_CORES:
            break
    return time.monotonic() - started


# -- one step ------------------------------------------------------------------------------------


@dataclass
class Step:
    config: str
    load: str
    per_socket: float
    sockets: int = 0
    offered_msg_s: float = 0.0
    offered_deliveries_s: float = 0.0
    delivered_s: float = 0.0
    expected: int = 0
    received: int = 0
    loss: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    node_cores: list[float] = field(default_factory=list)
    node_us_per_delivery: float = math.nan
    loadgen_cores: float = 0.0
    redis_cores: dict[str, float] = field(default_factory=dict)
    redis_calls: dict[str, dict[str, int]] = field(default_factory=dict)  # masters: window + drain
    redis_us_per_message: dict[str, float] = field(default_factory=dict)  # masters: CPU / EVALSHA
    # The same less what the process spends idle (sockets open, nothing sent) over the same span.
    redis_marginal_us_per_message: dict[str, float] = field(default_factory=dict)
    drained: bool = True
    # Over the sending window: each CPU's busy share (all processes of the machine), its VM steal, and
    # what the machine ran beside this benchmark's processes (someone else's load disturbs the figures).
    cpu_busy: dict[str, float] = field(default_factory=dict)
    cpu_steal: dict[str, float] = field(default_factory=dict)
    foreign_cores: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.loss == 0 and self.drained and self.p99_ms < MAX_P99_MS

    @property
    def client_busy(self) -> bool:
        return self.loadgen_cores + sum(self.redis_cores.values()) > CLIENT_BUSY_CORES


async def run_step(step: Step, senders: list[ChatClient], node_pids: list[int], procs: list[RedisProc],
                   tally: Tally, phases: Phases, idle_redis: dict[str, float]) -> Step:
    """Send at ``step.per_socket`` msg/s from every sender for warm-up + window; count the window's deliveries."""
    rate = step.per_socket * len(senders)
    pacer = Pacer(senders, rate, MESSAGE_BYTES, tally)
    sending = asyncio.ensure_future(pacer.run(phases.warmup_s + phases.window_s))
    try:
        await asyncio.sleep(phases.warmup_s)
        redis0 = sample_redis(procs)
        nodes0 = [procstats.cpu_seconds(pid) for pid in node_pids]
        own0, wall0 = procstats.own_cpu_seconds(), time.monotonic()
        jiffies0, everyone0 = cpu_jiffies(), all_processes_cpu()
        incidents0 = tally.incidents()
        sent0 = pacer.sent
        tally.open_window()
        await sending
    finally:
        sending.cancel()
    wall1, own1 = time.monotonic(), procstats.own_cpu_seconds()
    jiffies1, everyone1 = cpu_jiffies(), all_processes_cpu()
    nodes1 = [procstats.cpu_seconds(pid) for pid in node_pids]
    redis1 = sample_redis(procs)
    sent1 = pacer.sent
    step.drained = await tally.drained(phases.drain_s)
    nodes2 = [procstats.cpu_seconds(pid) for pid in node_pids]
    redis2 = sample_redis(procs)
    wall2 = time.monotonic()

    sending_s = wall1 - wall0
    step.sockets = len(senders)
    step.offered_msg_s = (sent1 - sent0) / sending_s
    step.expected, step.received = tally.expected, tally.received
    step.offered_deliveries_s = tally.expected / sending_s
    step.loss = max(0, tally.expected - tally.received)
    step.delivered_s = tally.received / max(sending_s, tally.receiving_s)
    summary = latency_summary(tally.latencies_ns)
    step.p50_ms, step.p99_ms, step.max_ms = summary["p50_ms"], summary["p99_ms"], summary["max_ms"]
    step.node_cores = [(b - a) / sending_s for a, b in zip(nodes0, nodes1)]
    if tally.received:
        step.node_us_per_delivery = (sum(nodes2) - sum(nodes0)) / tally.received * 1e6
    step.loadgen_cores = (own1 - own0) / sending_s
    for cpu, (busy, steal, total) in jiffies1.items():
        spent = max(1, total - jiffies0[cpu][2])
        step.cpu_busy[cpu] = (busy - jiffies0[cpu][0]) / spent
        step.cpu_steal[cpu] = (steal - jiffies0[cpu][1]) / spent
    step.redis_cores = {label: (redis1.cpu[label] - redis0.cpu[label]) / sending_s for label in redis0.cpu}
    for label, after in redis2.calls.items():
        calls = {c: after[c] - redis0.calls[label][c] for c in COUNTED}
        step.redis_calls[label] = calls
        scripts = calls["evalsha"] + calls["eval"]
        if scripts:
            used = redis2.cpu[label] - redis0.cpu[label]
            step.redis_us_per_message[label] = used / scripts * 1e6
            idle = idle_redis.get(label, 0.0) * (wall2 - wall0)
            step.redis_marginal_us_per_message[label] = max(0.0, used - idle) / scripts * 1e6
    ours = sum(step.node_cores) + step.loadgen_cores + sum(step.redis_cores.values())
    step.foreign_cores = max(0.0, sum(step.cpu_busy.values()) - ours)
    if step.foreign_cores > 0.1:
        ours_pids = {os.getpid(), *node_pids, *(p.pid for p in procs)}
        top = foreign_top(everyone0, everyone1, ours_pids, sending_s)
        step.notes.append(f"other processes used {step.foreign_cores:.2f} cores" + (f" ({', '.join(top)})" if top else ""))
    if max(step.cpu_steal.values(), default=0) > 0.05:
        step.notes.append("VM steal " + "/".join(f"{v:.2f}" for v in step.cpu_steal.values()))
    incidents = tally.incidents(since=incidents0)
    if incidents.disconnects:
        step.notes.append(f"{incidents.disconnects} sockets closed by the server")
    if incidents.error_frames:
        example = (incidents.example_error or b"").decode(errors="replace")[:60]
        step.notes.append(f"{incidents.error_frames} error frames, e.g. {example}")
    for reason, count in incidents.closes.most_common(2):
        step.notes.append(f"{count} closed with {reason}")
    if not step.drained:
        step.notes.append("not drained in time")
    lag_ms = (pacer.max_behind - 1) / rate * 1000
    if lag_ms > 20:
        step.notes.append(f"sender ran up to {lag_ms:.0f} ms late")
    if step.client_busy:
        step.notes.append("CPU 1 (client + Redis) busy")
    return step


def _progress(step: Step) -> str:
    nodes = " + ".join(f"{c:.2f}" for c in step.node_cores)
    redis_ = " ".join(f"{k} {v:.3f}" for k, v in step.redis_cores.items())
    return (f"{step.config} {step.load}: {step.delivered_s:,.0f}/s delivered of {step.offered_deliveries_s:,.0f}/s, "
            f"loss {step.loss}, p50 {step.p50_ms:.1f} p99 {step.p99_ms:.1f} ms, nodes {nodes} cores, "
            f"loadgen {step.loadgen_cores:.2f}, redis {redis_} {'; '.join(step.notes)}")


# -- one configuration ---------------------------------------------------------------------------


@dataclass
class ConfigResult:
    config: str
    description: str
    steps: list[Step]
    census: list[str]
    node_logs: dict[str, list[str]]
    idle_nodes: list[float]
    idle_redis: dict[str, float]
    sockets: int
    open_failures: int
    rss_kb_per_socket: float | None
    max_pass: Step | None = None
    max_fail: Step | None = None


def _log_lines(node: NodeProcess) -> list[str]:
    try:
        return node.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


async def _idle(node_pids: list[int], procs: list[RedisProc], seconds: float) -> tuple[list[float], dict[str, float]]:
    """Cores each node and each Redis process spends with every socket open and nothing sent."""
    nodes0, redis0, wall0 = [procstats.cpu_seconds(p) for p in node_pids], sample_redis(procs), time.monotonic()
    await asyncio.sleep(seconds)
    nodes1, redis1, wall1 = [procstats.cpu_seconds(p) for p in node_pids], sample_redis(procs), time.monotonic()
    span = wall1 - wall0
    return [(b - a) / span for a, b in zip(nodes0, nodes1)], {k: (redis1.cpu[k] - v) / span for k, v in redis0.cpu.items()}


async def _measure_config(topology, nodes: Nodes, profile: Profile, checkout_note: str) -> ConfigResult:
    tally = Tally()
    target = Target(nodes.ws_urls, nodes.pids, topology.procs[0].pid)
    specs = round_robin(nodes.ws_urls, GROUPS * GROUP_SIZE, lambda i: str(i // GROUP_SIZE + 1))
    sockets = await open_set(target, specs, tally)
    try:
        if sockets.opened.failures:
            print(f"warning: {sockets.opened.failures} sockets did not open: {sockets.opened.first_error}",
                  file=sys.stderr)
        await asyncio.sleep(2.5)  # subscriptions confirmed; a probe round on every shard
        census = channel_census(topology.procs, topology.name == "cluster")
        for line in census:
            print(f"  {topology.name} {line}", file=sys.stderr, flush=True)
        idle_nodes, idle_redis = await _idle(nodes.pids, topology.procs, IDLE_S)
        print(f"  {topology.name} idle: nodes {idle_nodes}, redis {idle_redis}", file=sys.stderr, flush=True)
        senders = sorted(sockets.clients, key=lambda c: int(c.group_id))
        senders = [c for k in range(GROUP_SIZE) for c in senders[k::GROUP_SIZE]]
        result = ConfigResult(topology.name, topology.describe() + checkout_note, [], census, {}, idle_nodes,
                              idle_redis, len(sockets.clients), sockets.opened.failures, sockets.rss_kb_per_socket)
        ours = {os.getpid(), *nodes.pids, *(p.pid for p in topology.procs)}

        async def measured(load: str, per_socket: float, phases: Phases) -> Step:
            # A step that other processes of the machine disturbed is measured once more, after a wait
            # for them to calm down; the figures kept are the second attempt's, whatever they are.
            for attempt in range(1 + DISTURBED_RETRIES):
                waited = await wait_quiet(ours)
                step = await run_step(Step(topology.name, load, per_socket), senders, nodes.pids, topology.procs,
                                      tally, phases, idle_redis)
                if waited >= QUIET_WAIT_S:
                    step.notes.append(f"the machine was busy for {waited:.0f} s before the step")
                print(_progress(step), file=sys.stderr, flush=True)
                if step.foreign_cores <= DISTURBED_CORES:
                    break
                if attempt < DISTURBED_RETRIES:
                    await asyncio.sleep(profile.fixed.drain_s)  # what the disturbed step left in flight
            if attempt:
                step.notes.append("measured again: a first attempt was disturbed by other processes")
            return step

        for per_socket in profile.fixed_rates:
            result.steps.append(await measured(f"{per_socket:g} msg/s/socket", per_socket, profile.fixed))
        for per_socket in profile.max_rates:
            step = await measured(f"max step {per_socket:g} msg/s/socket", per_socket, profile.step)
            if not step.passed:
                result.max_fail = step
                break
            result.max_pass = step
            await asyncio.sleep(0.5)
        if result.max_pass is not None:
            result.max_pass.load = f"max: {result.max_pass.per_socket:g} msg/s/socket (last passing step)"
            if result.max_fail is None:
                result.max_pass.notes.append("every step passed")
        if result.max_fail is not None:
            result.max_fail.load = f"{result.max_fail.per_socket:g} msg/s/socket (first failing step)"
        return result
    finally:
        sockets.close()


def measure_config(topology, pinning: Pinning, workdir: Path, profile: Profile, runner: asyncio.Runner,
                   checkout: Path | None) -> ConfigResult:
    topology.start()
    try:
        for proc in topology.procs:
            if pinning.client_cpu is not None:
                os.sched_setaffinity(proc.pid, {pinning.client_cpu})
        node_list = [make_node(topology.node_args(), workdir, pinning.server_prefix(), f"{topology.name}-node{i}",
                               SETTINGS, checkout) for i in range(NODES)]
        note = f", nodes from {checkout}" if checkout else ""
        with Nodes(node_list) as nodes:
            result = runner.run(_measure_config(topology, nodes, profile, note))
        result.node_logs = {node.name: _log_lines(node) for node in node_list}
        return result
    finally:
        topology.stop()


# -- the table -----------------------------------------------------------------------------------


def _f(value: float, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _per_proc(values: dict[str, float], digits: int) -> str:
    return " / ".join(f"{k} {v:.{digits}f}" for k, v in values.items()) or "–"


def table(results: list[ConfigResult]) -> str:
    header = ["config", "load", "msg/s offered", "deliveries/s offered", "delivered/s", "loss", "p50 ms", "p99 ms",
              "node0 / node1 cores", "nodes µs/delivery", "loadgen cores", "Redis cores per process",
              "Redis µs/msg per master (less idle)", "group msgs per master (EVALSHA)", "SPUBLISH per master",
              "PUBLISH per master", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        rows = [*result.steps, *(s for s in (result.max_pass, result.max_fail) if s is not None)]
        for s in rows:
            calls = s.redis_calls
            cells = [
                s.config, s.load, _f(s.offered_msg_s), _f(s.offered_deliveries_s), _f(s.delivered_s), _f(s.loss),
                _f(s.p50_ms, 1), _f(s.p99_ms, 1), " / ".join(f"{c:.2f}" for c in s.node_cores),
                _f(s.node_us_per_delivery, 1), f"{s.loadgen_cores:.2f}", _per_proc(s.redis_cores, 3),
                " / ".join(f"{k} {v:.1f} ({s.redis_marginal_us_per_message.get(k, math.nan):.1f})"
                           for k, v in s.redis_us_per_message.items()) or "–",
                " / ".join(f"{k} {v['evalsha'] + v['eval']:,}" for k, v in calls.items()),
                " / ".join(f"{k} {v['spublish']:,}" for k, v in calls.items()),
                " / ".join(f"{k} {v['publish']:,}" for k, v in calls.items()),
                "; ".join(s.notes),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- --memory ------------------------------------------------------------------------------------


async def _idle_memory(nodes: Nodes, redis_port: int, group_size: int) -> dict:
    """IDLE_SOCKETS idle chat sockets on one node, ``group_size`` to a group: RSS and Redis growth per socket."""
    client = _client(redis_port)
    target = Target(nodes.ws_urls, nodes.pids, 0)
    used0 = int(client.info("memory")["used_memory"])
    specs = [SocketSpec(nodes.ws_urls[0], f"idle{i // group_size}", f"u{i}") for i in range(IDLE_SOCKETS)]
    idle = await open_set(target, specs, Tally())
    try:
        # Each open joins its group: ugs:{user} gets the group (the 20 warm sockets' users too).
        used = int(client.info("memory")["used_memory"]) - used0
        return {"group_size": group_size, "sockets": len(idle.clients), "open_failures": idle.opened.failures,
                "node_rss_kb_per_socket": idle.rss_kb_per_socket,
                "node_rss_kb_total": procstats.total_rss_kb(nodes.pids),
                "redis_bytes_per_joined_socket": used / (len(idle.clients) + len(idle.warm.clients))}
    finally:
        idle.close()


async def _fill_memory(nodes: Nodes, redis_port: int) -> dict:
    figures: dict = {}
    client = _client(redis_port)
    target = Target(nodes.ws_urls, nodes.pids, 0)

    async def fill(groups: int) -> float:
        """FILL_MESSAGES of FILL_BYTES sent round-robin from one socket per group; used_memory growth per message."""
        fill_tally = Tally()
        specs = [SocketSpec(nodes.ws_urls[0], f"fill{groups}-{g}", f"f{groups}-{g}") for g in range(groups)]
        opened = await open_set(target, specs, fill_tally)
        try:
            await asyncio.sleep(0.5)
            before = int(client.info("memory")["used_memory"])
            pacer = Pacer(opened.clients, FILL_RATE, FILL_BYTES, fill_tally)
            fill_tally.open_window()
            await pacer.run(FILL_MESSAGES / FILL_RATE)
            # A socket's messages are stored one after the other (each waits for the one before):
            # one socket falls behind 8,000 msg/s, so wait until every message is in (60 s at most).
            deadline = time.monotonic() + FILL_WAIT_S
            while time.monotonic() < deadline:
                if sum(client.llen(f"gml:{spec.group_id}") for spec in specs) >= pacer.sent:
                    break
                await asyncio.sleep(0.5)
            await fill_tally.drained(5.0)
            await asyncio.sleep(0.5)
            after = int(client.info("memory")["used_memory"])
            lengths = sum(client.llen(f"gml:{spec.group_id}") for spec in specs)
            figures[f"fill_{groups}_sent"] = pacer.sent
            figures[f"fill_{groups}_stored"] = lengths
            figures[f"fill_{groups}_received"] = fill_tally.received
            figures[f"fill_{groups}_error_frames"] = len(fill_tally.errors)
            figures[f"fill_{groups}_keys_of_a_group"] = {
                key: client.memory_usage(key) for key in client.scan_iter(match=f"*{specs[0].group_id}", count=1000)}
            sample = client.lindex(f"gml:{specs[0].group_id}", -1)
            figures["stored_element_bytes"] = len(sample.encode())
            figures["stored_element_example"] = sample[:240]
            return (after - before) / lengths
        finally:
            opened.close()

    figures["redis_bytes_per_message_one_group"] = await fill(1)
    figures["redis_bytes_per_message_groups_of_100"] = await fill(FILL_SMALL_GROUPS)
    info = client.info("memory")
    figures["redis_used_memory"] = int(info["used_memory"])
    figures["redis_used_memory_rss"] = int(info["used_memory_rss"])
    figures["redis_mem_fragmentation_ratio"] = float(info["mem_fragmentation_ratio"])
    figures["redis_keys"] = client.dbsize()
    return figures


def memory_main(pinning: Pinning, workdir: Path, checkout: Path | None) -> dict:
    """Each measurement on a fresh node (so no socket reuses memory another one freed), on one Redis."""
    topology = SingleRedis(workdir, pinning.client_prefix())
    topology.start()
    figures: dict = {"idle": [], "node_log_lines": []}
    settings = {**SETTINGS, "FASTIM_IM_HISTORY_MAX": "0"}
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for run, group_size in enumerate(IDLE_GROUP_SIZES):
                topology.process.flush()
                node = make_node(topology.node_args(), workdir, pinning.server_prefix(), f"memory-idle{run}",
                                 settings, checkout)
                with Nodes([node]) as nodes:
                    figures["idle"].append(runner.run(_idle_memory(nodes, topology.process.port, group_size)))
                print(f"idle sockets: {figures['idle'][-1]}", file=sys.stderr, flush=True)
                figures["node_log_lines"] += _log_lines(node)[2:]
            topology.process.flush()
            node = make_node(topology.node_args(), workdir, pinning.server_prefix(), "memory-fill", settings, checkout)
            with Nodes([node]) as nodes:
                figures.update(runner.run(_fill_memory(nodes, topology.process.port)))
            figures["node_log_lines"] += _log_lines(node)[2:]
        return figures
    finally:
        topology.stop()


# -- --fanout -----------------------------------------------------------------------------------


FANOUT_SUBSCRIBERS = (1, 2, 4, 8, 16, 32)
FANOUT_RATES = (2000.0, 10000.0)  # messages/s
FANOUT_WINDOW_S = 4.0
FANOUT_PAYLOAD = 200  # bytes: a stored message's size (see --memory)


async def _fanout_step(port: int, pid: int, subscribers: int, rate: float, command: str) -> dict:
    """``subscribers`` connections subscribed to one channel (nodes); PUBLISH/SPUBLISH at ``rate``: Redis CPU per message."""
    channel = "mq:{fanout}"
    kind = "SSUBSCRIBE" if command == "SPUBLISH" else "SUBSCRIBE"
    received = [0] * subscribers
    readers, writers = [], []

    async def read(index: int, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            received[index] += data.count(b"$" + str(FANOUT_PAYLOAD).encode())

    for index in range(subscribers):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(f"*2\r\n${len(kind)}\r\n{kind}\r\n${len(channel)}\r\n{channel}\r\n".encode())
        await reader.readuntil(channel.encode() + b"\r\n:1\r\n")
        writers.append(writer)
        readers.append(asyncio.ensure_future(read(index, reader)))
    pub_reader, pub_writer = await asyncio.open_connection(LOOPBACK, port)
    payload = b"x" * FANOUT_PAYLOAD
    one = (f"*3\r\n${len(command)}\r\n{command}\r\n${len(channel)}\r\n{channel}\r\n${FANOUT_PAYLOAD}\r\n".encode()
           + payload + b"\r\n")

    async def drain_replies() -> None:
        while await pub_reader.read(1 << 16):
            pass

    replies = asyncio.ensure_future(drain_replies())
    try:
        cpu0, wall0, sent = procstats.cpu_seconds(pid), time.monotonic(), 0
        total = int(rate * FANOUT_WINDOW_S)
        while sent < total and time.monotonic() - wall0 < FANOUT_WINDOW_S * 3:
            due = min(total, int((time.monotonic() - wall0) * rate) + 1)
            if due > sent:
                pub_writer.write(one * (due - sent))  # what was due this tick, in one write: a node's pipeline
                sent = due
            await asyncio.sleep(0.001)
        deadline = time.monotonic() + 5.0
        while min(received) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        cpu = procstats.cpu_seconds(pid) - cpu0
        return {"command": command, "subscribers": subscribers, "rate": rate, "sent": sent,
                "received_min": min(received), "redis_us_per_message": cpu / sent * 1e6,
                "redis_us_per_message_per_subscriber": cpu / sent / subscribers * 1e6}
    finally:
        replies.cancel()
        for task in readers:
            task.cancel()
        for writer in [*writers, pub_writer]:
            writer.close()


def fanout_main(pinning: Pinning, workdir: Path) -> list[dict]:
    """Redis CPU per published message as the subscribers of its channel (nodes) grow: one Redis, one channel.

    This process (publisher and subscribers) moves to the server CPU, which no node uses in this mode,
    so that Redis has the client CPU to itself.
    """
    if pinning.server_cpu is not None:
        os.sched_setaffinity(0, {pinning.server_cpu})
    results = []
    for command in ("PUBLISH", "SPUBLISH"):
        topology = SingleRedis(workdir, pinning.client_prefix()) if command == "PUBLISH" else ClusterRedis(0)
        topology.start()
        try:
            proc = topology.procs[0] if command == "PUBLISH" else next(
                p for p in topology.procs if p.master and _owns(p, "mq:{fanout}"))
            if pinning.client_cpu is not None:
                for p in topology.procs:
                    os.sched_setaffinity(p.pid, {pinning.client_cpu})
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                for rate in FANOUT_RATES:
                    for subscribers in FANOUT_SUBSCRIBERS:
                        row = runner.run(_fanout_step(proc.port, proc.pid, subscribers, rate, command))
                        print(row, file=sys.stderr, flush=True)
                        results.append(row)
        finally:
            topology.stop()
    return results


def _owns(proc: RedisProc, channel: str) -> bool:
    from fastim.infrastructure.redis.cluster import slot_of

    slot = slot_of(channel)
    for start, end, master, *_ in _client(proc.port).execute_command("CLUSTER", "SLOTS"):
        if int(start) <= slot <= int(end):
            return int(master[1]) == proc.port
    return False


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharding", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer steps: about a minute")
    parser.add_argument("--replicas", type=int, default=0, choices=[0, 1], help="replicas per cluster master (0)")
    parser.add_argument("--only", choices=["redis", "cluster"], help="measure one configuration only")
    parser.add_argument("--memory", action="store_true", help="measure memory per idle socket and per stored message")
    parser.add_argument("--fanout", action="store_true",
                        help="measure Redis CPU per PUBLISH / SPUBLISH as the subscribers of a channel grow")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save every figure")
    parser.add_argument("--checkout", type=Path, metavar="DIR",
                        help="run the nodes from the fastim package in DIR (another build to compare)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = Pinning.choose(args.server_cpu, args.client_cpu)
    pinning.pin_this_process()  # before any Redis starts: they inherit CPU 1
    raise_fd_limit()
    if pinning.server_cpu is None:
        print("warning: fewer than two CPUs: nothing is pinned", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="fastim-sharding-"))
    started = time.monotonic()
    commit = git_head() if args.checkout is None else f"nodes from {args.checkout}, repository at {git_head()}"
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": commit,
            "python": platform.python_version(), "server_cpu": pinning.server_cpu, "client_cpu": pinning.client_cpu,
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()}
    try:
        if args.fanout:
            rows = fanout_main(pinning, workdir)
            meta["seconds"] = round(time.monotonic() - started, 1)
            print("| command | subscribers | msg/s | sent | received (least) | Redis µs/msg | µs/msg/subscriber |")
            print("|---|---|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['command']} | {r['subscribers']} | {r['rate']:,.0f} | {r['sent']:,} | {r['received_min']:,} "
                      f"| {r['redis_us_per_message']:.1f} | {r['redis_us_per_message_per_subscriber']:.1f} |")
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "fanout": rows}, indent=2) + "\n")
            return 0
        if args.memory:
            figures = memory_main(pinning, workdir, args.checkout)
            meta["seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps({"meta": meta, "memory": figures}, indent=2))
            if args.json:
                args.json.write_text(json.dumps({"meta": meta, "memory": figures}, indent=2) + "\n")
            return 0
        profile = QUICK if args.quick else FULL
        topologies = []
        if args.only in (None, "redis"):
            topologies.append(lambda: SingleRedis(workdir, pinning.client_prefix()))
        if args.only in (None, "cluster"):
            topologies.append(lambda: ClusterRedis(args.replicas))
        results = []
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for make in topologies:
                results.append(measure_config(make(), pinning, workdir, profile, runner, args.checkout))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    print(f"fastim sharding benchmark, {'quick' if args.quick else 'full'} profile, commit {meta['commit']}, "
          f"{meta['redis']}; {NODES} nodes on CPU {pinning.server_cpu}, load generator + Redis on CPU "
          f"{pinning.client_cpu}; {GROUPS} groups x {GROUP_SIZE} sockets, {MESSAGE_BYTES}-byte messages; "
          f"{meta['seconds']} s\n")
    for result in results:
        print(f"{result.config}: {result.description}; {result.sockets} sockets open"
              + (f" ({result.open_failures} failed)" if result.open_failures else "")
              + f", node RSS {result.rss_kb_per_socket or 0:.1f} KB/socket; idle: nodes "
              + " / ".join(f"{c:.3f}" for c in result.idle_nodes) + " cores, Redis "
              + _per_proc(result.idle_redis, 3) + " cores")
        for line in result.census:
            print(f"- {line}")
        for name, lines in result.node_logs.items():
            # Every node says at start that logins are open (login_auth = 0): only the rest is news.
            news = [line for line in lines if "logins are open" not in line]
            print(f"- {name} stderr: {len(lines)} lines, {len(news)} besides the start-up warnings"
                  + "".join(f"\n  - {line[:200]}" for line in news[:3])
                  + (f"\n  - ... and {len(news) - 3} more" if len(news) > 3 else ""))
        print()
    print(table(results))
    if args.json:
        data = {"meta": meta, "results": [
            {**{k: v for k, v in asdict(r).items() if k not in ("steps", "max_pass", "max_fail")},
             "steps": [asdict(s) for s in r.steps], "max_pass": asdict(r.max_pass) if r.max_pass else None,
             "max_fail": asdict(r.max_fail) if r.max_fail else None} for r in results]}
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
