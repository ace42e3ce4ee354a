"""The Autobahn|Testsuite fuzzing client against the node's WebSocket reader: every case OK or INFORMATIONAL.

``python -m benchmarks.autobahn`` runs it (and times the 9.* cases against
Tornado's own WebSocketHandler); this test runs its conformance part. The
suite needs Python 2.7 (pyenv's); without it the test is skipped, unless
FASTIM_REQUIRE_AUTOBAHN is set (as CI sets it): then it fails.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.autobahn import DEFAULT_PYTHON2
from tests.processes import REPO_ROOT


def test_the_reader_passes_the_autobahn_testsuite():
    if not DEFAULT_PYTHON2.exists():
        reason = f"no Python 2.7 at {DEFAULT_PYTHON2} for the Autobahn|Testsuite"
        if os.environ.get("FASTIM_REQUIRE_AUTOBAHN", "") not in ("", "0"):
            pytest.fail(f"{reason} and FASTIM_REQUIRE_AUTOBAHN is set")
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.autobahn", "--no-reference"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED" not in result.stdout and "NON-STRICT" not in result.stdout
    assert "cases (12.* and 13.* excluded)" in result.stdout
