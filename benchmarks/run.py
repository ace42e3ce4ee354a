"""``python -m benchmarks.run``: start Redis and fastim nodes, run the scenarios, print one table.

The load generator (this process) and Redis run on one CPU, the fastim nodes
on the other, so the server's figures are those of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import subprocess
import sys
from pathlib import Path

import uvloop

from benchmarks import report
from benchmarks.cluster import REPO_ROOT, Cluster, Pinning, raise_fd_limit
from benchmarks.measure import Row, Target
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Profile

# S3's sockets plus the load generator's own files and a margin; each end of a
# loopback connection is one fd in its own process.
FDS_NEEDED = 5000 + 500


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--nodes", choices=["1", "2", "both"], default="both",
                        help="fastim nodes on the one Redis (both: every scenario with 1, then with 2)")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke test of about a minute")
    parser.add_argument("--storage", choices=["redis", "memory", "sqlite", "postgres"], default="redis",
                        help="the nodes' storage (memory and sqlite: one node); events between nodes stay on Redis")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save every figure (and each max step)")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU of the fastim nodes (default 0)")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU of the load generator and Redis (default 1)")
    return parser.parse_args(argv)


def git_head() -> str:
    """The commit the nodes run, marked "+dirty" when fastim/ has uncommitted changes.

    Read each time nodes start: the server may change between scenarios of one
    run while someone works on it, and each row should say what it measured.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "fastim") else "")


def run_all(scenarios: list[str], node_counts: list[int], profile: Profile, pinning: Pinning,
            storage: str = "redis") -> list[Row]:
    rows: list[Row] = []
    with Cluster(pinning) as cluster, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        for name in scenarios:
            for count in node_counts:
                commit = git_head()
                scenario = SCENARIOS[name]
                with cluster.nodes(count, scenario.node_settings, storage) as nodes:
                    target = Target(nodes.ws_urls, nodes.pids, cluster.redis.pid)
                    for row in runner.run(scenario.run(target, profile, count)):
                        row.commit = commit
                        print(report.progress(row), file=sys.stderr, flush=True)
                        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pinning = Pinning.choose(args.server_cpu, args.client_cpu)
    pinning.pin_this_process()
    fds = raise_fd_limit()
    if fds < FDS_NEEDED:
        print(f"warning: only {fds} open files allowed; S3 needs about {FDS_NEEDED}", file=sys.stderr)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    node_counts = [1, 2] if args.nodes == "both" else [int(args.nodes)]
    profile = QUICK if args.quick else FULL
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "server_cpu": pinning.server_cpu, "client_cpu": pinning.client_cpu,
        "profile": "quick" if args.quick else "full",
    }
    if pinning.server_cpu is None:
        print("warning: fewer than two CPUs: nothing is pinned, server and client share the CPUs", file=sys.stderr)
    started = datetime.datetime.now()
    rows = run_all(scenarios, node_counts, profile, pinning, args.storage)
    meta["seconds"] = round((datetime.datetime.now() - started).total_seconds(), 1)
    meta["commits"] = sorted({row.commit for row in rows})
    print(f"fastim benchmark, {meta['profile']} profile, commit {', '.join(meta['commits'])}, "
          f"server on CPU {pinning.server_cpu}, load generator + Redis on CPU {pinning.client_cpu}, "
          f"{meta['seconds']} s\n")
    print(report.markdown(rows))
    if args.json:
        report.write_json(args.json, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
