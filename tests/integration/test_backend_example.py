"""README's "Integrating with your backend": examples/backend_integration.py works as written against a real node."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import REPO_ROOT, ServeProcess, child_environ

# The values README's example starts the node with.
ENVIRON = {"FASTIM_API_KEY": "an-api-key-of-16-chars-or-more",
           "FASTIM_AUTH_JWT_SECRET": "a-jwt-secret-of-at-least-32-bytes-long"}


def test_the_example_mints_a_jwt_publishes_and_reads_presence(tmp_path):
    with ServeProcess(tmp_path, name="backend", environ=ENVIRON) as node:
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / "examples" / "backend_integration.py"), node.base_url],
            env=child_environ(ENVIRON), capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "alice opened lobby: 0 messages"
        assert lines[1].startswith("published seq 1 id ")
        assert lines[2] == "alice got: welcome!"
        assert lines[3] == "online in lobby: [{'userId': 'alice', 'sockets': 1}]"
        assert lines[4].startswith("lobby: {'groupId': 'lobby', 'total': 1, 'seq': 1, ")
        assert lines[4].endswith("'online': 1}")
