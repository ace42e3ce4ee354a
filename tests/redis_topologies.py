"""Throw-away Redis topologies (a Redis Cluster, a Sentinel-watched master/replica pair) for failover tests.

Every process is a ``redis-server`` started by this test run, on free loopback ports, in a temporary
directory of its own, and is stopped by PID. Each process writes its log to ``redis.log`` in its
directory; ``logs()`` returns their tails for the message of a failing test. Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
POLL_S = 0.05
SLOTS = 16384
LOG_NAME = "redis.log"
# A replica's full sync starts at once, not after the default 5 s of waiting for more replicas to share it.
FAST_SYNC = ["--repl-diskless-sync-delay", "0"]


def distinct_free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, all different: each is held until all are chosen."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def find_cli(binary: str) -> str | None:
    """The ``redis-cli`` next to ``binary``, else the one on PATH."""
    sibling = Path(binary).with_name("redis-cli")
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    return shutil.which("redis-cli")


def _client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A client that fails fast: no retries (redis-py 8 retries 10 times by default), short timeouts."""
    return redis.Redis(
        host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0), decode_responses=True,
    )


def _command(port: int, *args: object, timeout: float = 1.0):
    """One command on the node at ``port``; the reply is raw (no redis-py parsing of CLUSTER NODES and the like)."""
    client = _client(port, timeout)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _info_fields(text: str) -> dict[str, str]:
    """``key:value`` lines of an INFO-like reply (CLUSTER INFO) as a dict."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class _Processes:
    """The redis-server processes of one topology: started, killed, restarted and stopped by PID."""

    def __init__(self, binary: str, prefix: str) -> None:
        self.binary = binary
        self._root = tempfile.mkdtemp(prefix=prefix)
        self._args: dict[int, list[str]] = {}
        self._dirs: dict[int, str] = {}
        self._labels: dict[int, str] = {}
        self._procs: dict[int, subprocess.Popen] = {}

    # -- processes ----------------------------------------------------------------------------------

    def _new_dir(self, label: str) -> str:
        path = os.path.join(self._root, label)
        os.makedirs(path, exist_ok=True)
        return path

    def _launch(self, port: int) -> None:
        with open(os.path.join(self._dirs[port], LOG_NAME), "ab") as log:
            self._procs[port] = subprocess.Popen(
                self._args[port], cwd=self._dirs[port], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

    def _wait_for_ping(self, port: int, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if _command(port, "PING"):
                    return
            except redis.RedisError:
                pass
            process = self._procs.get(port)
            if process is None or process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self._labels[port]} did not start on port {port}\n{self.logs()}")
            time.sleep(POLL_S)

    def alive(self, port: int) -> bool:
        """Whether the process this topology started on ``port`` is running."""
        process = self._procs.get(port)
        return process is not None and process.poll() is None

    def _live(self, ports) -> list[int]:
        return [port for port in ports if self.alive(port)]

    def _kill(self, port: int) -> None:
        """SIGKILL the process on ``port`` and reap it: no shutdown, no last words to its peers."""
        process = self._procs[port]
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM every process (all at once), SIGKILL those still running after 5 s."""
        running = [process for process in self._procs.values() if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        """Stop every process and remove the temporary directories."""
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def logs(self, lines: int = 30) -> str:
        """The last ``lines`` lines of each process's log, one titled section per process."""
        sections = []
        for port, label in self._labels.items():
            path = os.path.join(self._dirs[port], LOG_NAME)
            try:
                with open(path, "rb") as log:
                    tail = log.read().decode(errors="replace").splitlines()[-lines:]
            except OSError as error:
                tail = [f"(no log: {error})"]
            state = "running" if self.alive(port) else "not running"
            sections.append(f"== {label} {HOST}:{port} ({state}) ==\n" + "\n".join(tail))
        return "\n".join(sections)

    def _fail(self, message: str) -> RuntimeError:
        return RuntimeError(f"{message}\n{self.logs()}")

    def _wait(self, condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise self._fail(f"{message} in {timeout} s")
            time.sleep(POLL_S)

    def role(self, port: int) -> list:
        """The ROLE reply of the node on ``port``."""
        return _command(port, "ROLE")

    def flush(self) -> None:
        """FLUSHALL on every live master (then WAIT, bounded, for its connected replicas)."""
        for port in self._live(self._data_ports()):
            role = _command(port, "ROLE")
            if role[0] == "master":
                _command(port, "FLUSHALL", timeout=5)
                if role[2]:
                    _command(port, "WAIT", len(role[2]), 1000, timeout=5)

    def _data_ports(self) -> list[int]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _ClusterNode:
    """One line of CLUSTER NODES."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.id = fields[0]
        address = fields[1].split(",")[0]  # ip:port@cport[,hostname]
        hostport = address.split("@")[0]
        host, _, port = hostport.rpartition(":")
        self.host = host
        self.port = int(port) if port else 0
        self.flags = set(fields[2].split(","))
        self.master_id = fields[3] if fields[3] != "-" else None
        self.link = fields[7]
        self.ranges: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            start, _, end = item.partition("-")
            self.ranges.append((int(start), int(end or start)))

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.ranges)


class RedisClusterProcesses(_Processes):
    """A Redis Cluster of ``masters`` shards with ``replicas_per_master`` replicas each, for failover tests.

    Nodes time out after 2 s (``cluster-node-timeout 2000``), any replica may be promoted however
    stale (``cluster-replica-validity-factor 0``), and a shard without a master refuses its slots
    (reads too) while the other shards keep serving (``cluster-require-full-coverage no``).
    """

    NODE_TIMEOUT_MS = 2000

    def __init__(self, binary: str, masters: int = 3, replicas_per_master: int = 1) -> None:
        super().__init__(binary, "fastim-redis-cluster-")
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.cli = find_cli(binary)
        self.masters_count = masters
        self.replicas_per_master = replicas_per_master
        self.ports: list[int] = []
        count = masters * (1 + replicas_per_master)
        # The bus port is chosen too: the default (port + 10000) overflows for ports above 55535.
        ports = distinct_free_ports(2 * count)
        for index in range(count):
            port, bus_port = ports[2 * index], ports[2 * index + 1]
            label = f"cluster-node{index}"
            directory = self._new_dir(label)
            self.ports.append(port)
            self._labels[port] = label
            self._dirs[port] = directory
            self._args[port] = [
                binary, "--port", str(port), "--bind", HOST, "--dir", directory,
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus_port),
                "--cluster-node-timeout", str(self.NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor", "0",
                "--cluster-allow-reads-when-down", "no",
                "--cluster-require-full-coverage", "no",
                "--appendonly", "no", "--save", "", "--logfile", "", *FAST_SYNC,
            ]

    def _data_ports(self) -> list[int]:
        return self.ports

    @property
    def startup_nodes(self) -> list[str]:
        """``"127.0.0.1:port"`` of every node, killed ones included."""
        return [f"{HOST}:{port}" for port in self.ports]

    # -- start --------------------------------------------------------------------------------------

    def start(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Start every node, create the cluster and wait until every node sees it whole and healthy."""
        if self.cli is None:
            raise RuntimeError("no redis-cli next to the redis-server binary nor on PATH")
        try:
            for port in self.ports:
                self._launch(port)
            for port in self.ports:
                self._wait_for_ping(port)
            created = subprocess.run(
                [
                    self.cli, "--cluster", "create", *self.startup_nodes,
                    "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes",
                ],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            )
            if created.returncode != 0:
                raise self._fail(f"redis-cli --cluster create failed:\n{created.stdout}\n{created.stderr}")
            self._wait(self._settled, timeout, "the cluster did not settle")
        except BaseException:
            self.stop()
            raise

    def _settled(self) -> bool:
        """Every live node: state ok, all slots served, the same view of masters, slots and replicas."""
        live = self._live(self.ports)
        views = []
        for port in live:
            info = self._cluster_info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
            if info.get("cluster_known_nodes") != str(len(self.ports)):
                return False
            nodes = self._nodes(port)
            if nodes is None or any(node.flags & {"fail", "fail?", "handshake", "noaddr"} for node in nodes):
                return False
            if any(self.alive(node.port) and node.link != "connected" and "myself" not in node.flags
                   for node in nodes):
                return False
            views.append(self._shape(nodes))
        if not views or any(view != views[0] for view in views):
            return False
        # Every live replica has its copy of the master's data flowing.
        for port in live:
            if not self._replica_link_up(port):
                return False
        return True

    @staticmethod
    def _shape(nodes: list[_ClusterNode]) -> tuple:
        """What every node must agree on: who serves which slots, who replicates whom."""
        by_id = {node.id: node for node in nodes}
        slots = tuple(sorted((start, end, node.port) for node in nodes if node.is_master for start, end in node.ranges))
        replicas = tuple(sorted(
            (node.port, by_id[node.master_id].port if node.master_id in by_id else None)
            for node in nodes if not node.is_master
        ))
        return slots, replicas

    # -- reading the cluster ------------------------------------------------------------------------

    def _cluster_info(self, port: int) -> dict[str, str]:
        try:
            return _info_fields(_command(port, "CLUSTER", "INFO"))
        except redis.RedisError:
            return {}

    def _nodes(self, port: int) -> list[_ClusterNode] | None:
        """The node's own view (CLUSTER NODES), or None when it does not answer."""
        try:
            text = _command(port, "CLUSTER", "NODES")
        except redis.RedisError:
            return None
        return [_ClusterNode(line) for line in text.splitlines() if line.strip()]

    def _replica_link_up(self, port: int) -> bool:
        try:
            role = _command(port, "ROLE")
        except redis.RedisError:
            return False
        return role[0] == "master" or role[3] == "connected"

    def _a_view(self) -> list[_ClusterNode]:
        for port in self._live(self.ports):
            nodes = self._nodes(port)
            if nodes is not None:
                return nodes
        raise RuntimeError(f"no live cluster node answers\n{self.logs()}")

    def masters(self) -> list[tuple[str, int]]:
        """(host, port) of the masters serving slots, as a live node sees them; failed (``fail``) ones left out."""
        return sorted(
            (node.host, node.port) for node in self._a_view() if node.is_master and node.ranges and not node.failed
        )

    def master_for_slot(self, slot: int) -> tuple[str, int]:
        """(host, port) of the master serving ``slot``, as a live node sees it."""
        for node in self._a_view():
            if node.is_master and node.serves(slot):
                return node.host, node.port
        raise RuntimeError(f"no master serves slot {slot}")

    # -- failures -----------------------------------------------------------------------------------

    def shard_subscribers(self, port: int, channel: str) -> int:
        """PUBSUB SHARDNUMSUB of ``channel`` on the node at ``port``."""
        reply = _command(port, "PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])

    def classic_channels(self, port: int) -> set[str]:
        """The classic pub/sub channels with subscribers on the node at ``port`` (PUBSUB CHANNELS)."""
        return set(_command(port, "PUBSUB", "CHANNELS"))

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``."""
        self._kill(port)

    def kill_master_of_slot(self, slot: int) -> int:
        """SIGKILL the master serving ``slot``; returns its port."""
        _, port = self.master_for_slot(slot)
        self._kill(port)
        return port

    def wait_for_promotion(self, slot: int, old_port: int, timeout: float = 30,
                           poll_s: float = POLL_S) -> tuple[int, float]:
        """Wait until a node other than ``old_port`` serves ``slot`` as master and every live node agrees.

        Returns the new master's port and the ``time.monotonic()`` of the first poll at which that
        node itself claimed the slot as master (the others may learn of it a little later).
        """
        deadline = time.monotonic() + timeout
        first_seen: dict[int, float] = {}
        while True:
            owners = set()
            for port in self._live(self.ports):
                nodes = self._nodes(port)
                if nodes is None:
                    owners.add(None)
                    continue
                owner = next((n for n in nodes if n.is_master and n.serves(slot) and not n.failed), None)
                owners.add(owner.port if owner else None)
                if owner is not None and "myself" in owner.flags and owner.port != old_port:
                    first_seen.setdefault(owner.port, time.monotonic())
            if len(owners) == 1:
                (new_port,) = owners
                if new_port is not None and new_port != old_port and new_port in first_seen:
                    return new_port, first_seen[new_port]
            if time.monotonic() > deadline:
                raise self._fail(f"slot {slot} was not taken over from port {old_port} in {timeout} s (seen: {owners})")
            time.sleep(poll_s)

    def restart(self, port: int, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Start again the (killed) node on ``port`` with its directory, nodes.conf and options.

        Waits until it answers and every live node, itself included, has the same view of the
        cluster again. A master that was failed over comes back as a replica of its successor.
        """
        if self.alive(port):
            raise RuntimeError(f"the node on port {port} is running")
        self._launch(port)
        self._wait_for_ping(port)
        self._wait(self._settled_after_restart, timeout, f"the node on port {port} did not rejoin")

    def _settled_after_restart(self) -> bool:
        live = self._live(self.ports)
        views = []
        for port in live:
            nodes = self._nodes(port)
            if nodes is None or any(n.flags & {"fail", "fail?", "handshake"} for n in nodes if self.alive(n.port)):
                return False
            if self._cluster_info(port).get("cluster_state") != "ok":
                return False
            if not self._replica_link_up(port):
                return False
            # The killed-and-not-restarted nodes may still be flagged failed: leave them out.
            views.append(self._shape([n for n in nodes if self.alive(n.port)]))
        return bool(views) and all(view == views[0] for view in views)


class RedisSentinelProcesses(_Processes):
    """One master, one replica and three Sentinels (quorum 2) watching them, for failover tests.

    A master is held down after 1 s without replies (``down-after-milliseconds 1000``); a failover
    attempt that fails is retried after twice ``failover-timeout`` (5 s).
    """

    DOWN_AFTER_MS = 1000
    FAILOVER_TIMEOUT_MS = 5000

    def __init__(self, binary: str, master_name: str = "fastim") -> None:
        super().__init__(binary, "fastim-redis-sentinel-")
        self.master_name = master_name
        ports = distinct_free_ports(5)
        self.data_ports, self.sentinel_ports = ports[:2], ports[2:]
        self._initial_master = self.data_ports[0]
        for index, port in enumerate(self.data_ports):
            label = f"data{index}"
            self._labels[port] = label
            self._dirs[port] = self._new_dir(label)
            replicaof = [] if port == self._initial_master else ["--replicaof", HOST, str(self._initial_master)]
            self._args[port] = self._data_args(port, replicaof)
        for index, port in enumerate(self.sentinel_ports):
            label = f"sentinel{index}"
            directory = self._new_dir(label)
            self._labels[port] = label
            self._dirs[port] = directory
            conf = os.path.join(directory, "sentinel.conf")
            name = master_name
            with open(conf, "w") as file:  # a Sentinel rewrites its config file: it must be writable
                file.write(
                    f"port {port}\n"
                    f"bind {HOST}\n"
                    f"dir {directory}\n"
                    "logfile \"\"\n"
                    "sentinel resolve-hostnames no\n"
                    "sentinel announce-hostnames no\n"
                    f"sentinel monitor {name} {HOST} {self._initial_master} 2\n"
                    f"sentinel down-after-milliseconds {name} {self.DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {name} {self.FAILOVER_TIMEOUT_MS}\n"
                    f"sentinel parallel-syncs {name} 1\n"
                )
            self._args[port] = [binary, conf, "--sentinel"]

    def _data_args(self, port: int, replicaof: list[str]) -> list[str]:
        return [
            self.binary, "--port", str(port), "--bind", HOST, "--dir", self._dirs[port],
            "--appendonly", "no", "--save", "", "--logfile", "", *FAST_SYNC, *replicaof,
        ]

    def _data_ports(self) -> list[int]:
        return self.data_ports

    @property
    def sentinels(self) -> list[str]:
        """``"127.0.0.1:port"`` of every Sentinel."""
        return [f"{HOST}:{port}" for port in self.sentinel_ports]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every Sentinel, as ``redis.sentinel.Sentinel`` takes them."""
        return [(HOST, port) for port in self.sentinel_ports]

    # -- start --------------------------------------------------------------------------------------

    def start(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Start the master and the replica, wait for the replication link, then start and settle the Sentinels.

        The Sentinels start last so that their first INFO of the master already lists the replica
        (they ask again only every 10 s).
        """
        try:
            for port in self.data_ports:
                self._launch(port)
            for port in self.data_ports:
                self._wait_for_ping(port)
            replica = self.data_ports[1]
            self._wait(lambda: self._replica_link_up(replica), timeout, "the replica did not sync")
            for port in self.sentinel_ports:
                self._launch(port)
            for port in self.sentinel_ports:
                self._wait_for_ping(port)
            self._wait(self._sentinels_settled, timeout, "the Sentinels did not settle")
        except BaseException:
            self.stop()
            raise

    def _sentinels_settled(self) -> bool:
        expected = (HOST, self._initial_master)
        for port in self._live(self.sentinel_ports):
            try:
                if self._sentinel_master(port) != expected:
                    return False
                replicas = _command(port, "SENTINEL", "REPLICAS", self.master_name)
                others = _command(port, "SENTINEL", "SENTINELS", self.master_name)
            except redis.RedisError:
                return False
            up = [r for r in replicas if "s_down" not in _pairs(r).get("flags", "")]
            if len(up) != len(self.data_ports) - 1 or len(others) != len(self.sentinel_ports) - 1:
                return False
        return True

    # -- reading the topology -----------------------------------------------------------------------

    def _sentinel_master(self, port: int) -> tuple[str, int] | None:
        try:
            reply = _command(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        except redis.RedisError:
            return None
        return (reply[0], int(reply[1])) if reply else None

    def _replica_link_up(self, port: int) -> bool:
        try:
            role = _command(port, "ROLE")
        except redis.RedisError:
            return False
        return role[0] == "slave" and role[3] == "connected"

    def master(self) -> tuple[str, int]:
        """(host, port) of the master, as the first answering Sentinel reports it."""
        for port in self._live(self.sentinel_ports):
            address = self._sentinel_master(port)
            if address is not None:
                return address
        raise self._fail("no Sentinel reports a master")

    # -- failures -----------------------------------------------------------------------------------

    def kill(self, port: int) -> None:
        """SIGKILL the process (data node or Sentinel) on ``port``."""
        self._kill(port)

    def kill_master(self) -> int:
        """SIGKILL the master the Sentinels report; returns its port."""
        _, port = self.master()
        self._kill(port)
        return port

    def wait_for_failover(self, old_port: int, timeout: float = 30, poll_s: float = POLL_S) -> tuple[int, float]:
        """Wait until every live Sentinel reports the same master other than ``old_port`` and its ROLE is master.

        Returns the new master's port and the ``time.monotonic()`` of the first poll at which a
        Sentinel reported it while its ROLE said master.
        """
        deadline = time.monotonic() + timeout
        first_seen: dict[int, float] = {}
        while True:
            reported = {self._sentinel_master(port) for port in self._live(self.sentinel_ports)}
            for address in reported:
                if address is not None and address[1] != old_port and address[1] not in first_seen:
                    if self._is_master(address[1]):
                        first_seen[address[1]] = time.monotonic()
            if len(reported) == 1:
                (address,) = reported
                if address is not None and address[1] in first_seen and self._is_master(address[1]):
                    return address[1], first_seen[address[1]]
            if time.monotonic() > deadline:
                raise self._fail(f"no failover from port {old_port} in {timeout} s (reported: {reported})")
            time.sleep(poll_s)

    def _is_master(self, port: int) -> bool:
        try:
            return _command(port, "ROLE")[0] == "master"
        except redis.RedisError:
            return False

    def restart(self, port: int, as_replica: bool = True, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Start again the (killed) process on ``port``, in its directory.

        A Sentinel restarts with its (rewritten) config file. A data node restarts, by default, as a
        replica of the master the Sentinels report, and this waits for its replication link: left to
        the Sentinels, an old master would serve as an empty master for ``failover-timeout`` (5 s)
        before being turned into a replica. ``as_replica=False`` restarts it as a bare master.
        """
        if self.alive(port):
            raise RuntimeError(f"the process on port {port} is running")
        if port in self.sentinel_ports:
            self._launch(port)
            self._wait_for_ping(port)
            return
        replicaof: list[str] = []
        if as_replica:
            host, master_port = self.master()
            if master_port == port:
                raise RuntimeError(f"the Sentinels still report port {port} as the master: wait for the failover first")
            replicaof = ["--replicaof", host, str(master_port)]
        self._args[port] = self._data_args(port, replicaof)
        self._launch(port)
        self._wait_for_ping(port)
        if as_replica:
            self._wait(lambda: self._replica_link_up(port), timeout, f"the node on port {port} did not sync")


def _pairs(reply) -> dict[str, str]:
    """A flat ``[key, value, key, value, ...]`` reply (SENTINEL REPLICAS entries) as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2]))
