"""``python -m benchmarks.autobahn``: the Autobahn|Testsuite fuzzing client against the node's WebSocket reader.

Two echo servers are started, each in a process of its own: fastim's
(Tornado's handshake, then fastim's :class:`~fastim.interfaces.ws.transport.Transport`,
with limits raised so that the suite's 16 MiB messages and 65,536-fragment
messages fit) and Tornado's own ``WebSocketHandler``, the reference. The
suite (``wstest -m fuzzingclient``, Python 2.7) runs every case but the
compression ones (12.*, 13.*: no extension is offered) against fastim's, and
the 9.* (limits and performance) cases against both; the script prints the
verdicts and the 9.* durations side by side, and exits 1 when a case FAILED,
a 6.4.* case was not strict, or 9.* took fastim more than twice Tornado's time.

The suite is installed on first use into a virtualenv of the Python 2.7 that
pyenv provides (``--python2``), under ``--cache`` (``.autobahn/`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".autobahn"
DEFAULT_PYTHON2 = Path.home() / ".pyenv" / "versions" / "2.7.18" / "bin" / "python2.7"
SUITE_PACKAGE = "autobahntestsuite==25.10.1"
EXCLUDED = ["12.*", "13.*"]  # permessage-deflate: neither server is asked to compress
# The suite's largest message is 16 MiB; its most fragmented, 4 MiB in 64-byte frames.
ECHO_MAX_MESSAGE = 32 * 1024 * 1024
ECHO_MAX_UNSENT = 64 * 1024 * 1024
ECHO_MAX_FRAGMENTS = 1 << 20
START_TIMEOUT_S = 15.0
SUITE_TIMEOUT_S = 1800
MAX_RATIO_9 = 2.0


# -- the echo servers (run as `python -m benchmarks.autobahn serve IMPL PORT`) ---------------------


def serve(impl: str, port: int) -> None:
    import tornado.web
    import tornado.websocket

    from fastim.interfaces.http.gate import CorsPolicy
    from fastim.interfaces.ws.frames import text_frame
    from fastim.interfaces.ws.transport import Transport, TransportLimits
    from fastim.interfaces.ws.upgrade import UpgradeHandler

    class Echo:
        """A listener that sends every message back as it came (text as text, binary as binary)."""

        def __init__(self, transport: Transport) -> None:
            self.transport = transport
            transport.start(self)

        async def open(self, query: dict[str, str]) -> None:
            return None

        def on_text(self, text: str) -> None:
            self.transport.write(text_frame(text.encode("utf-8")))

        def on_binary(self, data: bytes) -> None:
            self.transport.write(binary_frame(data))

        def on_backlog_full(self) -> None:
            self.transport.close(1008, "backlog full")

        def on_closed(self) -> None:
            return None

    class TornadoEcho(tornado.websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        def on_message(self, message: str | bytes) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

    limits = TransportLimits(
        ECHO_MAX_UNSENT, ECHO_MAX_MESSAGE, max_fragments=ECHO_MAX_FRAGMENTS,
        control_frames_per_s=1000.0, control_frame_burst=1000,
    )
    if impl == "fastim":
        route = (r"/", UpgradeHandler, {"cors": CorsPolicy(("*",)), "limits": limits, "socket_factory": Echo})
        app = tornado.web.Application([route])
    else:
        app = tornado.web.Application([(r"/", TornadoEcho)], websocket_max_message_size=ECHO_MAX_MESSAGE)

    async def main() -> None:
        app.listen(port, address="127.0.0.1", max_buffer_size=ECHO_MAX_UNSENT)
        await asyncio.Event().wait()

    asyncio.run(main())


def binary_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((0x82, size))
    elif size <= 0xFFFF:
        header = bytes((0x82, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x82, 127)) + size.to_bytes(8, "big")
    return header + payload


# -- the run -------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_suite(python2: Path, cache: Path) -> Path:
    """The ``wstest`` of a virtualenv under ``cache``, created and filled on first use."""
    venv = cache / "venv"
    wstest = venv / "bin" / "wstest"
    if wstest.exists():
        return wstest
    if not python2.exists():
        raise SystemExit(f"autobahn: no Python 2.7 at {python2}; pass --python2 (pyenv install 2.7.18)")
    cache.mkdir(parents=True, exist_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([str(python2), "-m", "pip", "install", "-q", "virtualenv<20.22"], check=True, **quiet)
    subprocess.run([str(python2), "-m", "virtualenv", "-q", str(venv)], check=True, **quiet)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", SUITE_PACKAGE], check=True, **quiet)
    return wstest


class EchoServer:
    def __init__(self, impl: str) -> None:
        self.impl = impl
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "EchoServer":
        environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.autobahn", "serve", self.impl, str(self.port)],
            cwd=REPO_ROOT, env=environ,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise SystemExit(f"autobahn: the {self.impl} echo server did not start")
                time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_suite(wstest: Path, server: EchoServer, cases: list[str], workdir: Path) -> dict[str, dict]:
    """Run ``cases`` against ``server``; the report's verdicts and durations, by case id."""
    reports = workdir / f"reports-{server.impl}"
    spec = {
        "outdir": str(reports),
        "servers": [{"agent": server.impl, "url": f"ws://127.0.0.1:{server.port}/"}],
        "cases": cases,
        "exclude-cases": EXCLUDED,
        "exclude-agent-cases": {},
    }
    spec_path = workdir / f"spec-{server.impl}.json"
    spec_path.write_text(json.dumps(spec))
    with server:
        subprocess.run(
            [str(wstest), "-m", "fuzzingclient", "-s", str(spec_path)],
            cwd=workdir, check=True, timeout=SUITE_TIMEOUT_S, stdout=subprocess.DEVNULL,
        )
    index = json.loads((reports / "index.json").read_text())
    return index[server.impl]


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def summarize(fastim: dict[str, dict], tornado: dict[str, dict]) -> tuple[str, list[str]]:
    """The Markdown summary and the list of problems (empty when the run passes)."""
    problems = []
    counts: dict[str, int] = {}
    for case_id, result in fastim.items():
        counts[result["behavior"]] = counts.get(result["behavior"], 0) + 1
        if result["behavior"] == "FAILED":
            problems.append(f"case {case_id} FAILED")
        if case_id.startswith("6.4.") and result["behavior"] != "OK":
            problems.append(f"case {case_id} is {result['behavior']}, not strict")
    verdicts = ", ".join(f"{count} {behavior}" for behavior, count in sorted(counts.items()))
    lines = [
        f"fastim's reader, {len(fastim)} cases (12.* and 13.* excluded): {verdicts}.",
        "",
        "| 9.* case | fastim ms | Tornado ms | ratio |",
        "|---|---|---|---|",
    ]
    total_fastim = total_tornado = 0
    for case_id in sorted((c for c in fastim if c.startswith("9.")), key=case_key):
        ours, theirs = fastim[case_id]["duration"], tornado.get(case_id, {}).get("duration")
        total_fastim += ours
        if theirs is None:
            lines.append(f"| {case_id} | {ours} | – | – |")
            continue
        total_tornado += theirs
        ratio = ours / theirs if theirs else float("inf")
        lines.append(f"| {case_id} | {ours} | {theirs} | {ratio:.2f} |")
    if total_tornado:
        ratio = total_fastim / total_tornado
        lines.append(f"| all 9.* | {total_fastim} | {total_tornado} | {ratio:.2f} |")
        if ratio > MAX_RATIO_9:
            problems.append(f"9.* took {ratio:.2f}x Tornado's time (at most {MAX_RATIO_9:g}x)")
    return "\n".join(lines), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.autobahn", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser("serve", help="run one echo server (used by the run itself)")
    serve_parser.add_argument("impl", choices=["fastim", "tornado"])
    serve_parser.add_argument("port", type=int)
    parser.add_argument("--python2", type=Path, default=DEFAULT_PYTHON2, help=f"default {DEFAULT_PYTHON2}")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the suite is installed")
    parser.add_argument("--cases", default="*", help="comma-separated case ids or patterns (default: all)")
    parser.add_argument("--json", type=Path, help="also save both reports' verdicts and durations")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip Tornado's run and the timing check: conformance only (what the tests run)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.impl, args.port)
        return 0
    wstest = ensure_suite(args.python2, args.cache)
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="fastim-autobahn-"))
    try:
        fastim = run_suite(wstest, EchoServer("fastim"), cases, workdir)
        nine = [] if args.no_reference else [case for case in cases if case == "*" or case.startswith("9")]
        tornado = run_suite(wstest, EchoServer("tornado"), ["9.*"] if "*" in nine else nine, workdir) if nine else {}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary, problems = summarize(fastim, tornado)
    print(summary)
    if args.json is not None:
        args.json.write_text(json.dumps({"fastim": fastim, "tornado": tornado}, indent=1))
    for problem in problems:
        print(f"autobahn: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
