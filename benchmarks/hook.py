"""``python -m benchmarks.hook``: what the publish hook costs a node per chat send.

One node on the server CPU; the load generator, Redis and a hook server that
answers ``{}`` (benchmarks.hook_server) on the other, as in ``benchmarks.run``.
Chat sockets, each alone in its group, send at a fixed aggregate rate, so each
message is delivered once: back to its sender, as the echo that says it was
stored. The node runs once without ``[hooks] publish_url`` and once with it;
the table gives the node's CPU per message and the send-to-echo latency of
both, and their difference: what the hook costs per message.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import uvloop

from benchmarks.cluster import LOOPBACK, POLL_S, START_TIMEOUT_S, Cluster, Pinning, _stop, free_port, raise_fd_limit
from benchmarks.loadgen import SocketSpec, Tally
from benchmarks.measure import Phases, Row, Target, measure, open_set
from benchmarks.run import git_head

SENDERS = 100
RATE = 1000.0  # msg/s in all: the hook server's Python share of the client CPU stays well under a core
FULL = Phases(warmup_s=2.0, window_s=10.0, drain_s=5.0)
QUICK = Phases(warmup_s=0.5, window_s=2.0, drain_s=2.0)


class HookServer:
    """``python -m benchmarks.hook_server`` on the client CPU, stopped by PID."""

    def __init__(self, prefix: list[str]) -> None:
        self.port = free_port()
        self.argv = [*prefix, sys.executable, "-m", "benchmarks.hook_server", str(self.port)]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/review"

    def __enter__(self) -> "HookServer":
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                _stop(self.process, 5.0)
                raise RuntimeError("the hook server did not start")
            time.sleep(POLL_S)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            _stop(self.process, 5.0)

    def _answers(self) -> bool:
        import urllib.request

        try:
            request = urllib.request.Request(self.url, data=b"{}", method="POST")
            with urllib.request.urlopen(request, timeout=1.0) as answer:
                return answer.status == 200
        except OSError:
            return False


async def sends_and_echoes(target: Target, label: str, rate: float, phases: Phases, senders: int) -> Row:
    tally = Tally()
    url = target.ws_urls[0]
    sockets = await open_set(target, [SocketSpec(url, f"hook{i}", f"u{i}") for i in range(senders)], tally)
    try:
        row = sockets.describe(Row("hook", 1, label))
        return await measure(target, sockets.clients, rate, tally, phases, row)
    finally:
        sockets.close()


def table(rows: list[Row]) -> str:
    lines = ["| node | msg/s | echoed / sent | node µs/msg | node cores | p50 ms | p99 ms | max ms | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row.load} | {row.rate_msg_s:g} | {row.received} / {row.expected} | "
                     f"{row.server_us_per_delivery:.1f} | {row.server_cores:.3f} | {row.p50_ms:.2f} | "
                     f"{row.p99_ms:.2f} | {row.max_ms:.2f} | {'; '.join(row.notes)} |")
    return "\n".join(lines)


def cost(without: Row, with_hook: Row) -> str:
    return (f"the hook costs {with_hook.server_us_per_delivery - without.server_us_per_delivery:+.1f} µs of node CPU "
            f"per message; send-to-echo p50 {with_hook.p50_ms - without.p50_ms:+.2f} ms, "
            f"p99 {with_hook.p99_ms - without.p99_ms:+.2f} ms")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=RATE, help=f"messages a second, all senders (default {RATE:g})")
    parser.add_argument("--senders", type=int, default=SENDERS, help=f"chat sockets (default {SENDERS})")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke test")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU of the node (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1,
                        help="CPU of the load generator, Redis and the hook server (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = Pinning.choose(args.server_cpu, args.client_cpu)
    pinning.pin_this_process()
    raise_fd_limit()
    phases = QUICK if args.quick else FULL
    if pinning.server_cpu is None:
        print("warning: fewer than two CPUs: nothing is pinned", file=sys.stderr)
    rows = []
    with Cluster(pinning) as cluster, HookServer(pinning.client_prefix()) as hook, \
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        commit = git_head()
        for label, url in (("without hook", ""), ("with hook", hook.url)):
            with cluster.nodes(1, {"FASTIM_HOOKS_PUBLISH_URL": url}) as nodes:
                target = Target(nodes.ws_urls, nodes.pids, cluster.redis.pid)
                row = runner.run(sends_and_echoes(target, label, args.rate, phases, args.senders))
                print(f"{label}: {row.server_us_per_delivery:.1f} µs/msg, p99 {row.p99_ms:.2f} ms",
                      file=sys.stderr, flush=True)
                rows.append(row)
    print(f"publish hook cost, commit {commit}, {args.senders} senders each alone in its group, "
          f"{phases.window_s:g} s window; node on CPU {pinning.server_cpu}, load generator + Redis + "
          f"hook server on CPU {pinning.client_cpu}\n")
    print(table(rows))
    print()
    print(cost(*rows))
    return 0 if all(row.loss == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
