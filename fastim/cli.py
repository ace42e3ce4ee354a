"""The ``fastim`` command: parse arguments, load settings, serve; map failures to exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from fastim import __version__
from fastim.logs import configure_logging
from fastim.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # the container imports Tornado; `fastim --help` should not
    from fastim.container import Container

# The conventional status for a usage or configuration error (argparse uses it too).
EXIT_USAGE = 2
# What a shell reports for a process ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED = 130

# serve flag -> (section, key) of the setting it overrides
SERVE_FLAGS = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "workers": ("server", "workers"),
    "backend": ("storage", "backend"),
    "storage": ("storage", "backend"),
    "broker": ("broker", "backend"),
    "database_url": ("storage", "database_url"),
    "redis_url": ("storage", "redis_url"),
    "redis_cluster": ("storage", "redis_cluster"),
    "redis_sentinel": ("storage", "redis_sentinels"),
    "redis_sentinel_master": ("storage", "redis_sentinel_master"),
    "redis_wait_replicas": ("storage", "redis_wait_replicas"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastim",
        description="fastim: a distributed group-chat server, wire-compatible with fast-im.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="start a node",
        description="Start a node. Precedence: flag > FASTIM_<SECTION>_<KEY> > settings file > defaults.",
    )
    serve.add_argument(
        "--config", metavar="PATH",
        help="settings file (default: ./settings.ini when it exists, else built-in defaults)",
    )
    # Values stay strings here: the settings schema validates them like every
    # other source, so a bad flag gets the same one-line error.
    serve.add_argument("--host", help="address to listen on ([server] host)")
    serve.add_argument("--port", help="port to listen on ([server] port)")
    serve.add_argument("--workers", metavar="N", help="processes sharing the port, each a full node ([server] workers)")
    serve.add_argument(
        "--backend", metavar="memory|redis",
        help="storage and broker backend at once ([storage] backend; the broker follows)",
    )
    serve.add_argument(
        "--storage", metavar="memory|redis|sqlite|postgres", help="where messages, groups and tokens live "
        "([storage] backend)",
    )
    serve.add_argument(
        "--broker", metavar="memory|redis",
        help="how nodes announce events to each other ([broker] backend; default: redis with redis storage, "
        "else memory)",
    )
    serve.add_argument(
        "--database-url", metavar="URL",
        help="sqlite:///PATH or postgresql://USER@HOST/DB for --storage sqlite|postgres ([storage] database_url)",
    )
    serve.add_argument("--redis-url", metavar="URL", help="Redis to use with --backend redis ([storage] redis_url)")
    serve.add_argument(
        "--redis-cluster", metavar="HOST:PORT[,...]",
        help="a Redis Cluster, by some of its nodes: sharded storage and pub/sub ([storage] redis_cluster)",
    )
    serve.add_argument(
        "--redis-sentinel", metavar="HOST:PORT[,...]",
        help="the sentinels that name the Redis master and fail it over ([storage] redis_sentinels)",
    )
    serve.add_argument(
        "--redis-sentinel-master", metavar="NAME", help="the master's name at the sentinels ([storage] redis_sentinel_master)"
    )
    serve.add_argument(
        "--redis-wait-replicas", metavar="N",
        help="answer a send once N replicas confirmed it (WAIT); 0: at once ([storage] redis_wait_replicas)",
    )
    _add_client_commands(commands)
    status = commands.add_parser(
        "status", help="the nodes at a glance",
        description="Per node: ready or not, open sockets by kind, groups followed, messages and deliveries per "
        "second, slow-consumer drops and broker health, read from each node's /metrics and /readyz. Exit status: "
        "0 when every node is up and ready, 1 otherwise.",
    )
    status.add_argument(
        "--url", action="append", metavar="URL[,URL...]",
        help=f"a node's base URL; repeat it or separate with commas for several (default: {DEFAULT_URL})",
    )
    status.add_argument("--interval", type=float, default=1.0, metavar="S",
                        help="seconds between the two reads the rates come from (default: 1)")
    return parser


# The node a client command talks to when --url is not given: `fastim serve`'s default address.
DEFAULT_URL = "http://127.0.0.1:9000"
CLIENT_COMMANDS = ("chat", "tail", "send")


def _add_client_commands(commands: argparse._SubParsersAction) -> None:
    """``fastim chat|tail|send``: the terminal client (fastim/client/terminal.py)."""
    credentials = (
        "Log in with --password, or give a --token (a login token or a JWT); with neither, the token is '-', "
        "which nodes with login_auth = 0 accept."
    )
    chat = commands.add_parser(
        "chat", help="chat in a group from the terminal",
        description="Chat in GROUP as USER: lines typed are sent, incoming messages shown with their time. "
        f"Ctrl-D or Ctrl-C leaves. {credentials}",
    )
    tail = commands.add_parser(
        "tail", help="print a group's events as JSON lines",
        description="Print every event of GROUP (the newest messages first) as one JSON object per line, "
        f"resuming across reconnects, until interrupted. {credentials}",
    )
    send = commands.add_parser(
        "send", help="send one message",
        description="Send TEXT to GROUP as USER and print its id once the node stored it. Exit status: 0 stored, "
        f"1 refused (the node's reason on stderr), 2 usage error, 3 node unreachable. {credentials}",
    )
    for command in (chat, tail, send):
        command.add_argument("--url", default=DEFAULT_URL, help=f"the node's base URL (default: {DEFAULT_URL})")
        command.add_argument("group", metavar="GROUP")
        if command is tail:
            command.add_argument("--user", default="fastim-tail", help="the user to read as (default: fastim-tail)")
        else:
            command.add_argument("user", metavar="USER")
        if command is send:
            command.add_argument("text", metavar="TEXT")
        login = command.add_mutually_exclusive_group()
        login.add_argument("--password", help="log in with this password first")
        login.add_argument("--token", help="a login token or a JWT the application minted")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command == "serve":
        return _serve(args)
    if args.command == "status":
        return _status(args)
    if args.command in CLIENT_COMMANDS:
        from fastim.client.terminal import run  # the SDK imports websockets; `fastim serve` does not need it

        return run(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _status(args: argparse.Namespace) -> int:
    import asyncio

    from fastim.status import cluster_status, healthy, render

    urls = [url.strip() for given in (args.url or [DEFAULT_URL]) for url in given.split(",") if url.strip()]
    if not urls or not all(url.startswith(("http://", "https://")) for url in urls):
        return _fail("status: each --url must be a node's http:// or https:// base URL")
    if not 0.1 <= args.interval <= 60:
        return _fail("status: --interval must be from 0.1 to 60 seconds")
    statuses = asyncio.run(cluster_status(urls, args.interval))
    print(render(statuses))
    return 0 if healthy(statuses) else 1


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        setting: getattr(args, flag)
        for flag, setting in SERVE_FLAGS.items()
        if getattr(args, flag) is not None
    }
    if args.backend is not None and args.broker is None:
        overrides["broker", "backend"] = args.backend  # --backend sets both, as it always did
    return serve_with(config=args.config, overrides=overrides)


def serve_with(
    customize: Callable[[Container], None] | None = None,
    *,
    config: str | None = None,
    overrides: Mapping[tuple[str, str], str] | None = None,
) -> int:
    """Serve as ``fastim serve`` does, with the container changed by ``customize`` first; the exit status.

    Settings come from ``config`` (else ``./settings.ini``), the environment and
    ``overrides``; a bad setting or a failed start prints one line and gives 2.
    ``customize(container)`` overrides providers (an Authenticator, a
    JoinPolicy, a repository); with ``--workers`` each worker applies it to its own container.
    """
    try:
        settings = load_settings(config, os.environ, overrides or {})
    except SettingsError as exc:
        return _fail(str(exc))
    configure_logging(settings.server.log_format, settings.server.log_level)
    # Imported here so that `fastim --help` and a settings error need neither
    # Tornado nor the container.
    from fastim.container import build_container
    from fastim.server import StartupError, run
    from fastim.workers import run_workers

    def make_container(settings: Settings) -> Container:
        container = build_container(settings)
        if customize is not None:
            customize(container)
        return container

    try:
        if settings.server.workers > 1:
            return run_workers(settings, make_container)
        return run(settings, make_container(settings))
    except StartupError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    print(f"fastim: {message}", file=sys.stderr)
    return EXIT_USAGE
