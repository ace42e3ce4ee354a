"""The benchmark runs from its one command and measures a real room: a smoke test, not a speed target."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.processes import REPO_ROOT, child_environ

# The quick S1-off scenario opens 1000 sockets and sends for a few seconds; a loaded CI box may be slow.
RUN_TIMEOUT_S = 120


@pytest.mark.redis
def test_one_quick_scenario_prints_its_table_and_loses_nothing(redis_server, tmp_path):
    """``redis_server`` only gates the test like every Redis test; the benchmark starts its own."""
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--scenario", "S1-off", "--nodes", "1", "--quick",
         "--json", str(results)],
        cwd=REPO_ROOT, env=child_environ(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| S1 | 1 | 5 msg/s, window off | 1000 |" in run.stdout
    rows = json.loads(results.read_text())["rows"]
    assert [row["load"] for row in rows] == ["5 msg/s, window off", "50 msg/s, window off"]
    for row in rows:
        assert row["sockets"] == 1000 and row["open_failures"] == 0
        assert row["expected"] > 0 and row["loss"] == 0, row
        assert row["server_us_per_delivery"] > 0 and row["p99_ms"] > 0
        # S1: each message one sender sends reaches the room's 1000 sockets
        assert row["server_us_per_inbound"] > 100 * row["server_us_per_delivery"], row
