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

``--memory`` measures instead (about a minute): a node's RSS growth per idle
chat socket (2,000 sockets in groups of 10) and Redis's ``used_memory``
growth per stored message (100,000 messages of 100 bytes in one group, then
in 1,000 groups of 100), on one Redis and one node, with ``history_max = 0``.

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
SETTINGS = {
    # Over the per-socket rate limit's default of 10 msg/s: the "max" steps go past it.
    "FASTIM_IM_RATE_LIMIT": "10000",
    "FASTIM_IM_RATE_BURST": "10000",
}
# --memory
IDLE_SOCKETS, IDLE_GROUP_SIZE = 2000, 10
FILL_MESSAGES, FILL_BYTES = 100_000, 100
FILL_RATE = 8000.0  # messages/s into one node while filling
FILL_SMALL_GROUPS = 1000


@dataclass(frozen=True)
class Profile:
    fixed: Phases
    step: Phases
    fixed_rates: tuple[float, ...]  # messages per second per socket
    max_rates: tuple[float, ...]


def _geometric(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(round(start * factor ** k, 2) for k in range(count))


FULL = Profile(fixed=Phases(warmup_s=2.0, window_s=8.0, drain_s=5.0),
               step=Phases(warmup_s=1.0, window_s=4.0, drain_s=4.0),
               fixed_rates=(1.0, 2.0), max_rates=_geometric(2.0, math.sqrt(2), 8))
QUICK = Profile(fixed=Phases(warmup_s=0.5, window_s=2.0, drain_s=2.0),
                step=Phases(warmup_s=0.5, window_s=1.5, drain_s=2.0),
                fixed_rates=(1.0,), max_rates=_geometric(2.0, 2.0, 5))


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
        self.procs = procs

    def node_args(self) -> list[str]:
        return ["--redis-cluster", ",".join(self.topology.startup_nodes)]

    def describe(self) -> str:
        return f"Redis Cluster, {SHARDS} masters x {self.replicas} replicas"

    def stop(self) -> None:
        self.topology.cleanup()


def make_node(redis_args: list[str], workdir: Path, prefix: list[str], name: str,
              settings: dict[str, str]) -> NodeProcess:
    """A NodeProcess whose Redis is given by ``redis_args`` (``--redis-url URL`` or ``--redis-cluster ...``)."""
    node = NodeProcess("redis://unused", workdir, prefix, name, settings)
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
    drained: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.loss == 0 and self.drained and self.p99_ms < MAX_P99_MS

    @property
    def client_busy(self) -> bool:
        return self.loadgen_cores + sum(self.redis_cores.values()) > CLIENT_BUSY_CORES


async def run_step(step: Step, senders: list[ChatClient], node_pids: list[int], procs: list[RedisProc],
                   tally: Tally, phases: Phases) -> Step:
    """Send at ``step.per_socket`` msg/s from every sender for warm-up + window; count the window's deliveries."""
    rate = step.per_socket * len(senders)
    pacer = Pacer(senders, rate, MESSAGE_BYTES, tally)
    sending = asyncio.ensure_future(pacer.run(phases.warmup_s + phases.window_s))
    try:
        await asyncio.sleep(phases.warmup_s)
        redis0 = sample_redis(procs)
        nodes0 = [procstats.cpu_seconds(pid) for pid in node_pids]
        own0, wall0 = procstats.own_cpu_seconds(), time.monotonic()
        incidents0 = tally.incidents()
        sent0 = pacer.sent
        tally.open_window()
        await sending
    finally:
        sending.cancel()
    wall1, own1 = time.monotonic(), procstats.own_cpu_seconds()
    nodes1 = [procstats.cpu_seconds(pid) for pid in node_pids]
    redis1 = sample_redis(procs)
    sent1 = pacer.sent
    step.drained = await tally.drained(phases.drain_s)
    nodes2 = [procstats.cpu_seconds(pid) for pid in node_pids]
    redis2 = sample_redis(procs)

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
    step.redis_cores = {label: (redis1.cpu[label] - redis0.cpu[label]) / sending_s for label in redis0.cpu}
    for label, after in redis2.calls.items():
        calls = {c: after[c] - redis0.calls[label][c] for c in COUNTED}
        step.redis_calls[label] = calls
        scripts = calls["evalsha"] + calls["eval"]
        if scripts:
            step.redis_us_per_message[label] = (redis2.cpu[label] - redis0.cpu[label]) / scripts * 1e6
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
    max_pass: Step | None = None
    max_fail: Step | None = None


def _log_lines(node: NodeProcess) -> list[str]:
    try:
        return node.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


async def _measure_config(topology, nodes: Nodes, profile: Profile) -> tuple[list[Step], list[str], Step | None,
                                                                                Step | None]:
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
        senders = sorted(sockets.clients, key=lambda c: int(c.group_id))
        senders = [c for k in range(GROUP_SIZE) for c in senders[k::GROUP_SIZE]]
        steps: list[Step] = []
        for per_socket in profile.fixed_rates:
            step = await run_step(Step(topology.name, f"{per_socket:g} msg/s/socket", per_socket), senders,
                                  nodes.pids, topology.procs, tally, profile.fixed)
            print(_progress(step), file=sys.stderr, flush=True)
            steps.append(step)
        best = failed = None
        for per_socket in profile.max_rates:
            step = await run_step(Step(topology.name, f"max step {per_socket:g} msg/s/socket", per_socket), senders,
                                  nodes.pids, topology.procs, tally, profile.step)
            print(_progress(step), file=sys.stderr, flush=True)
            if not step.passed:
                failed = step
                break
            best = step
            await asyncio.sleep(0.5)
        if best is not None:
            best.load = f"max: {best.per_socket:g} msg/s/socket (last passing step)"
            if failed is None:
                best.notes.append("every step passed")
        if failed is not None:
            failed.load = f"{failed.per_socket:g} msg/s/socket (first failing step)"
        return steps, census, best, failed
    finally:
        sockets.close()


def measure_config(topology, pinning: Pinning, workdir: Path, profile: Profile,
                   runner: asyncio.Runner) -> ConfigResult:
    topology.start()
    try:
        for proc in topology.procs:
            if pinning.client_cpu is not None:
                os.sched_setaffinity(proc.pid, {pinning.client_cpu})
        node_list = [make_node(topology.node_args(), workdir, pinning.server_prefix(), f"{topology.name}-node{i}",
                               SETTINGS) for i in range(NODES)]
        with Nodes(node_list) as nodes:
            steps, census, best, failed = runner.run(_measure_config(topology, nodes, profile))
        logs = {node.name: _log_lines(node) for node in node_list}
        return ConfigResult(topology.name, topology.describe(), steps, census, logs, best, failed)
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
              "Redis µs/msg per master", "group msgs per master (EVALSHA)", "SPUBLISH per master",
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
                _per_proc(s.redis_us_per_message, 1),
                " / ".join(f"{k} {v['evalsha'] + v['eval']:,}" for k, v in calls.items()),
                " / ".join(f"{k} {v['spublish']:,}" for k, v in calls.items()),
                " / ".join(f"{k} {v['publish']:,}" for k, v in calls.items()),
                "; ".join(s.notes),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- --memory ------------------------------------------------------------------------------------


async def _memory(nodes: Nodes, redis_port: int) -> dict:
    figures: dict = {}
    client = _client(redis_port)
    tally = Tally()
    target = Target(nodes.ws_urls, nodes.pids, 0)
    used0 = int(client.info("memory")["used_memory"])
    specs = [SocketSpec(nodes.ws_urls[0], f"idle{i // IDLE_GROUP_SIZE}", f"u{i}") for i in range(IDLE_SOCKETS)]
    idle = await open_set(target, specs, tally)
    figures["idle_sockets"] = len(idle.clients)
    figures["node_rss_kb_per_idle_socket"] = idle.rss_kb_per_socket
    figures["node_rss_kb_with_idle_sockets"] = procstats.total_rss_kb(nodes.pids)
    # Each open joins its group: ugs:{user} gets the group (warm sockets included, 20 of them).
    figures["redis_bytes_per_joined_socket"] = (int(client.info("memory")["used_memory"]) - used0) / (
        len(idle.clients) + len(idle.warm.clients))
    idle.close()
    await asyncio.sleep(1.0)

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
            await fill_tally.drained(10.0)
            await asyncio.sleep(0.5)
            after = int(client.info("memory")["used_memory"])
            lengths = sum(client.llen(f"gml:{spec.group_id}") for spec in specs)
            figures[f"fill_{groups}_stored"] = lengths
            figures[f"fill_{groups}_sent"] = pacer.sent
            figures[f"fill_{groups}_received"] = fill_tally.received
            sample = client.lindex(f"gml:{specs[0].group_id}", -1)
            figures["stored_element_bytes"] = len(sample.encode())
            figures["stored_element_example"] = sample[:160]
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


def memory_main(pinning: Pinning, workdir: Path) -> dict:
    topology = SingleRedis(workdir, pinning.client_prefix())
    topology.start()
    try:
        settings = {**SETTINGS, "FASTIM_IM_HISTORY_MAX": "0"}
        node = make_node(topology.node_args(), workdir, pinning.server_prefix(), "memory-node0", settings)
        with Nodes([node]) as nodes, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            figures = runner.run(_memory(nodes, topology.process.port))
        figures["node_log_lines"] = _log_lines(node)[-20:]
        return figures
    finally:
        topology.stop()


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sharding", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows, fewer steps: about a minute and a half")
    parser.add_argument("--replicas", type=int, default=0, choices=[0, 1], help="replicas per cluster master (0)")
    parser.add_argument("--only", choices=["redis", "cluster"], help="measure one configuration only")
    parser.add_argument("--memory", action="store_true", help="measure memory per idle socket and per stored message")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save every figure")
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
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_head(),
            "python": platform.python_version(), "server_cpu": pinning.server_cpu, "client_cpu": pinning.client_cpu,
            "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()}
    try:
        if args.memory:
            figures = memory_main(pinning, workdir)
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
                results.append(measure_config(make(), pinning, workdir, profile, runner))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - started, 1)
    print(f"fastim sharding benchmark, {'quick' if args.quick else 'full'} profile, commit {meta['commit']}, "
          f"{meta['redis']}; {NODES} nodes on CPU {pinning.server_cpu}, load generator + Redis on CPU "
          f"{pinning.client_cpu}; {GROUPS} groups x {GROUP_SIZE} sockets, {MESSAGE_BYTES}-byte messages; "
          f"{meta['seconds']} s\n")
    for result in results:
        print(f"{result.config}: {result.description}")
        for line in result.census:
            print(f"- {line}")
        for name, lines in result.node_logs.items():
            print(f"- {name} stderr: {len(lines)} lines" + (f", last: {lines[-1][:200]}" if lines else ""))
        print()
    print(table(results))
    if args.json:
        data = {"meta": meta, "results": [
            {"config": r.config, "description": r.description, "census": r.census, "node_logs": r.node_logs,
             "steps": [asdict(s) for s in r.steps], "max_pass": asdict(r.max_pass) if r.max_pass else None,
             "max_fail": asdict(r.max_fail) if r.max_fail else None} for r in results]}
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
