"""A rolling restart behind the committed ``deploy/nginx.conf``: nothing lost, nothing doubled, everything in order.

Two ``fastim serve`` nodes on one redis-server behind a real nginx; 20 chat
sockets in 4 groups on the SDK, all through nginx, while 8 of them send with
acks at a steady rate. Node A gets SIGTERM, exits, starts again on its port and
answers /readyz; then node B the same, as deploy/fastim@.service and the
README's procedure do it. Sending never stops. Every client must end with
every acknowledged message of its group exactly once and in seq order, and
nothing else but messages whose send ended "maybe stored".
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import pytest

from fastim.client import Chat, Client, Disconnected, Message, NotRecovered, Opened, SendError, StreamOptions
from fastim.client.backoff import BackoffPolicy
from tests.integration.conftest import metric_value
from tests.nginx import NGINX_CONF, NginxProcess, nginx_binary
from tests.processes import ServeProcess, free_port, http_status, start_nodes

pytestmark = pytest.mark.redis

GROUPS = 4
CLIENTS_PER_GROUP = 5  # 20 chat sockets
SENDERS_PER_GROUP = 2
SEND_INTERVAL_S = 0.05  # per sender: 160 sends a second in all, each awaiting its ack
TRAFFIC_BEFORE_S = 1.0
TRAFFIC_AFTER_S = 1.0
DELIVERY_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 15.0
QUICK = StreamOptions(backoff=BackoffPolicy(base=0.05, cap=0.5))
NODE_ENV = {
    "FASTIM_SERVER_TRUSTED_PROXIES": "127.0.0.1",
    # a sender's 20 a second, with room: a 429 here would be the test's own doing
    "FASTIM_IM_RATE_LIMIT": "200",
    "FASTIM_IM_RATE_BURST": "200",
    # a reconnect that did not resume would get only the newest 5 messages: the gap would show
    "FASTIM_IM_LIST_NUM": "5",
}
# How long nginx leaves a failed node out of its HTTP upstream (deploy/nginx.conf), counted in whole seconds:
# the procedure waits that long and one second more between nodes, so the HTTP API never meets two nodes out.
FAIL_TIMEOUT_S = float(re.search(r"fail_timeout=(\d+)s", NGINX_CONF.read_text()).group(1))
PAUSE_BETWEEN_NODES_S = FAIL_TIMEOUT_S + 1
HTTP_PROBE_INTERVAL_S = 0.05


@dataclass
class Receiver:
    group: str
    chat: Chat
    messages: list[Message] = field(default_factory=list)
    news: list[object] = field(default_factory=list)  # Opened, Disconnected, NotRecovered
    ended: BaseException | None = None

    async def read(self) -> None:
        try:
            async for event in self.chat:
                if isinstance(event, Message):
                    self.messages.append(event)
                elif isinstance(event, (Opened, Disconnected, NotRecovered)):
                    self.news.append(event)
        except Exception as exc:  # noqa: BLE001 - a stream that ended for good is a finding, reported below
            self.ended = exc


@dataclass
class Outcomes:
    """Each send's end, by its text: acknowledged, maybe stored, or refused."""

    acked: dict[str, Message] = field(default_factory=dict)
    acked_at: dict[str, float] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    refused: dict[str, SendError] = field(default_factory=dict)


async def send_steadily(chat: Chat, label: str, stop: asyncio.Event, outcomes: Outcomes) -> None:
    loop = asyncio.get_running_loop()
    number = 0
    while not stop.is_set():
        text = f"{label}-{number}"
        number += 1
        try:
            message = await chat.send(text)
        except SendError as exc:
            if exc.maybe_stored:  # the connection dropped before the answer: stored or not, nobody knows
                outcomes.unknown.add(text)
            else:
                outcomes.refused[text] = exc
        else:
            outcomes.acked[text] = message
            outcomes.acked_at[text] = loop.time()
        await asyncio.sleep(SEND_INTERVAL_S)


async def call_steadily(client: Client, stop: asyncio.Event, answers: list[float], failures: list[str]) -> None:
    """The HTTP API through nginx, all along: every call must be answered."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            await client.list_groups()
        except Exception as exc:  # noqa: BLE001 - every failure is the finding
            failures.append(repr(exc))
        else:
            answers.append(loop.time())
        await asyncio.sleep(HTTP_PROBE_INTERVAL_S)


def wait_ready(node: ServeProcess) -> None:
    """Until the node's /readyz answers 200, as the unit's ExecStartPost waits."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert node.process.poll() is None, f"{node.name} exited:\n{node.stderr_tail}"
        try:
            if http_status(f"{node.base_url}/readyz", timeout=1.0) == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{node.name} not ready in {READY_TIMEOUT_S:g} s:\n{node.stderr_tail}"
        time.sleep(0.05)


def chat_sockets(node: ServeProcess) -> float:
    return metric_value(node, 'fastim_open_sockets{kind="chat"}')


@pytest.mark.gen_test(timeout=120)
async def test_a_rolling_restart_behind_nginx_loses_and_doubles_nothing(fresh_redis, tmp_path):
    binary = nginx_binary()
    loop = asyncio.get_running_loop()
    nodes = start_nodes([
        ServeProcess(tmp_path, name=name, backend="redis", redis_url=fresh_redis.url, environ=NODE_ENV)
        for name in ("a", "b")
    ])
    proxy = NginxProcess(tmp_path / "nginx", free_port(), (nodes[0].port, nodes[1].port), binary)
    clients: list[Client] = []
    readers: list[asyncio.Task] = []
    try:
        proxy.start()
        receivers: list[Receiver] = []
        senders: list[tuple[Chat, str]] = []
        for g in range(GROUPS):
            group = f"rolling{g}"
            for c in range(CLIENTS_PER_GROUP):
                client = Client(proxy.base_url, user_id=f"u{g}-{c}", options=QUICK)
                clients.append(client)
                receiver = Receiver(group, await client.chat(group))
                receivers.append(receiver)
                if c < SENDERS_PER_GROUP:
                    senders.append((receiver.chat, f"{group}-s{c}"))
        readers = [loop.create_task(receiver.read()) for receiver in receivers]
        counts = await loop.run_in_executor(None, lambda: [chat_sockets(node) for node in nodes])
        assert sum(counts) == len(receivers) and min(counts) > 0, counts  # nginx spread them over both nodes

        caller = Client(proxy.base_url)
        clients.append(caller)
        await caller.login("caller", "any")
        await caller.join_group("rolling0")
        stop = asyncio.Event()
        outcomes = Outcomes()
        answers: list[float] = []
        failures: list[str] = []
        sending = [loop.create_task(send_steadily(chat, label, stop, outcomes)) for chat, label in senders]
        sending.append(loop.create_task(call_steadily(caller, stop, answers, failures)))
        await asyncio.sleep(TRAFFIC_BEFORE_S)

        def rolling_restart() -> tuple[list[ServeProcess], list[float]]:
            """The README's procedure: each node in turn stopped, started, ready; nginx's fail_timeout between."""
            restarted, marks = [], [time.monotonic()]
            for index, node in enumerate(nodes):
                if index:
                    time.sleep(PAUSE_BETWEEN_NODES_S)  # nginx takes the restarted node back before the next goes
                assert node.stop() == 0, node.stderr_tail
                again = ServeProcess(tmp_path, name=f"{node.name}-again", backend="redis", redis_url=fresh_redis.url,
                                     environ=NODE_ENV, port=node.port)
                restarted.append(again)
                again.start()
                wait_ready(again)
                marks.append(time.monotonic())
            return restarted, marks

        started = loop.time()
        restarted, marks = await loop.run_in_executor(None, rolling_restart)
        nodes.extend(restarted)
        finished = loop.time()
        took = marks[-1] - marks[0]
        print(f"\nrolling restart of two nodes behind nginx: {took:.2f} s from the first SIGTERM to the second "
              f"node ready (node a {marks[1] - marks[0]:.2f} s, a pause of {PAUSE_BETWEEN_NODES_S:g} s for nginx's "
              f"fail_timeout, node b {marks[2] - marks[1] - PAUSE_BETWEEN_NODES_S:.2f} s)")

        await asyncio.sleep(TRAFFIC_AFTER_S)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*sending), 40)

        assert not outcomes.refused, outcomes.refused  # no send was refused outright
        assert not failures, f"HTTP calls through nginx failed during the restart: {failures[:5]}"
        assert sum(started <= at <= finished for at in answers) > (finished - started) / HTTP_PROBE_INTERVAL_S / 4
        for g in range(GROUPS):
            group = f"rolling{g}"
            during = [text for text, at in outcomes.acked_at.items()
                      if text.startswith(f"{group}-") and started <= at <= finished]
            assert during, f"{group}: no send was acknowledged during the restart"

        def missing() -> int:
            return sum(
                1 for receiver in receivers for text in outcomes.acked
                if text.startswith(f"{receiver.group}-") and text not in {m.info for m in receiver.messages}
            )

        deadline = loop.time() + DELIVERY_TIMEOUT_S
        while missing() and loop.time() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # anything doubled or stray would have arrived by now

        for receiver in receivers:
            who = f"{receiver.chat.user_id} in {receiver.group}"
            assert receiver.ended is None, f"{who}: the stream ended: {receiver.ended!r}"
            assert not any(isinstance(news, NotRecovered) for news in receiver.news), f"{who}: {receiver.news}"
            texts = [m.info for m in receiver.messages]
            ids = [m.id for m in receiver.messages]
            assert len(set(ids)) == len(ids) and len(set(texts)) == len(texts), f"{who}: a message came twice"
            seqs = [m.seq for m in receiver.messages]
            assert seqs == sorted(seqs) and len({m.epoch for m in receiver.messages}) == 1, f"{who}: out of order"
            acked = {text: m for text, m in outcomes.acked.items() if text.startswith(f"{receiver.group}-")}
            lost = sorted(set(acked) - set(texts))
            assert not lost, f"{who}: {len(lost)} acknowledged messages never arrived: {lost[:10]}"
            stray = set(texts) - set(acked) - outcomes.unknown
            assert not stray, f"{who}: messages nobody sent or whose send was refused: {sorted(stray)[:10]}"
            by_text = {m.info: m.id for m in receiver.messages}
            assert all(by_text[text] == m.id for text, m in acked.items()), f"{who}: an ack's id is not the echo's"
        for g in range(GROUPS):  # and every client of a group saw the same stream
            streams = {tuple(m.id for m in r.messages) for r in receivers if r.group == f"rolling{g}"}
            assert len(streams) == 1, f"rolling{g}: the clients saw different streams"

        moved = [r for r in receivers if any(isinstance(n, Disconnected) and n.code == 1001 for n in r.news)]
        assert len(moved) == len(receivers), "every client was on a node that restarted, so each got 1001 once or more"
        for receiver in receivers:
            resumed = [n for n in receiver.news if isinstance(n, Opened) and n.resumed]
            assert resumed and all(n.recovered for n in resumed), receiver.news

        total = sum(len(r.messages) for r in receivers)
        print(f"{len(outcomes.acked)} messages acknowledged ({len(outcomes.unknown)} maybe stored), "
              f"{total} deliveries to {len(receivers)} clients: none lost, none doubled")
        logged = "\n".join(proxy.access_lines())
        assert re.search(r'"GET /group/chat/rolling0/u0-0/\*\*\*" 101 ', logged), logged[-2000:]
        assert "/u0-0/-" not in logged  # the token segment never reaches nginx's log
    finally:
        for task in readers:
            task.cancel()
        for client in clients:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:  # noqa: BLE001 - the processes below are stopped whatever a client does
                pass
        proxy.stop()
        for node in nodes:
            node.stop()
    for node in nodes:
        assert "Traceback" not in node.stderr, node.stderr_tail
    assert not re.search(r"\[(emerg|alert|crit)\]", proxy.errors()), proxy.errors()
