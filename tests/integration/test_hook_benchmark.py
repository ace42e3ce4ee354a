"""benchmarks/hook.py runs from its one command and compares a node without and with the hook: a smoke test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.processes import REPO_ROOT, child_environ

RUN_TIMEOUT_S = 120  # two nodes, a hook server and Redis start; two 2-second windows


@pytest.mark.redis
def test_the_quick_run_prints_both_rows_and_the_cost(redis_server):
    """``redis_server`` only gates the test like every Redis test; the benchmark starts its own."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.hook", "--quick", "--rate", "200", "--senders", "20"],
        cwd=REPO_ROOT, env=child_environ(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith(("| without hook |", "| with hook |"))]
    assert len(rows) == 2, run.stdout
    for row in rows:
        echoed, sent = row.split("|")[3].split("/")
        assert int(echoed) == int(sent) > 0, row  # every send came back as its echo, hook or not
    assert "the hook costs" in run.stdout and "µs of node CPU per message" in run.stdout
