"""``fastim status``: each node's sockets, groups, message rates, slow-consumer drops and broker health at a glance.

Reads what every node already serves, ``/metrics`` (twice, ``interval`` seconds
apart, for the rates) and ``/readyz``; nothing is added to a node for it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024  # a node's metrics are a few KB; anything larger is not a node


@dataclass(frozen=True)
class Sample:
    """The figures of one scrape of one node."""

    chat: int
    lists: int
    groups: int
    received: float  # chat messages stored from this node's sockets, since it started
    deliveries: float
    slow_drops: float
    reconnects: float
    broker_healthy: bool


@dataclass(frozen=True)
class NodeStatus:
    url: str
    error: str | None = None  # why the node could not be read
    ready: bool = False
    ready_msg: str = ""
    sample: Sample | None = None
    received_per_s: float = 0.0
    deliveries_per_s: float = 0.0


def parse_metrics(text: str) -> Sample:
    """The figures ``fastim status`` shows, from a node's Prometheus text; ValueError when it is not a node's."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    if ("fastim_open_sockets", (("kind", "chat"),)) not in values:
        raise ValueError("no fastim metrics in the answer")

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    return Sample(
        chat=int(value("fastim_open_sockets", kind="chat")),
        lists=int(value("fastim_open_sockets", kind="list")),
        groups=int(value("fastim_groups")),
        received=value("fastim_messages_received_total"),
        deliveries=value("fastim_deliveries_total"),
        slow_drops=value("fastim_slow_consumer_disconnects_total"),
        reconnects=value("fastim_broker_reconnects_total") or value("fastim_broker_reconnects"),
        broker_healthy=value("fastim_broker_healthy") == 1.0,
    )


async def _get(client: AsyncHTTPClient, url: str) -> tuple[int, str]:
    try:
        response = await client.fetch(url, request_timeout=TIMEOUT_S, connect_timeout=TIMEOUT_S, raise_error=False)
    except HTTPClientError as exc:
        raise OSError(str(exc)) from None
    if response.code == 599:
        error = response.error
        raise OSError(" ".join(str(error).split()) if error else "no answer")
    return response.code, response.body[:MAX_ANSWER_BYTES].decode("utf-8", "replace")


async def _scrape(client: AsyncHTTPClient, url: str) -> Sample:
    code, text = await _get(client, url + "/metrics")
    if code != 200:
        raise OSError(f"/metrics answered {code}")
    try:
        return parse_metrics(text)
    except ValueError as exc:
        raise OSError(f"/metrics: {exc}") from None


async def _ready(client: AsyncHTTPClient, url: str) -> tuple[bool, str]:
    code, text = await _get(client, url + "/readyz")
    try:
        msg = str(json.loads(text).get("msg", ""))
    except (ValueError, AttributeError):
        msg = text[:80]
    return code == 200, msg


async def node_status(client: AsyncHTTPClient, url: str, interval_s: float) -> NodeStatus:
    url = url.rstrip("/")
    try:
        first = await _scrape(client, url)
        await asyncio.sleep(interval_s)
        second, (ready, ready_msg) = await asyncio.gather(_scrape(client, url), _ready(client, url))
    except OSError as exc:
        return NodeStatus(url, error=str(exc) or type(exc).__name__)
    return NodeStatus(
        url,
        ready=ready,
        ready_msg=ready_msg,
        sample=second,
        received_per_s=max(0.0, second.received - first.received) / interval_s,
        deliveries_per_s=max(0.0, second.deliveries - first.deliveries) / interval_s,
    )


async def cluster_status(urls: list[str], interval_s: float = 1.0) -> list[NodeStatus]:
    """Every node's status, read at the same time."""
    client = AsyncHTTPClient(force_instance=True, max_body_size=MAX_ANSWER_BYTES)
    try:
        return list(await asyncio.gather(*(node_status(client, url, interval_s) for url in urls)))
    finally:
        client.close()


HEADERS = ("node", "ready", "chat", "list", "groups", "msgs/s", "deliveries/s", "slow drops", "broker")


def render(statuses: list[NodeStatus]) -> str:
    """One line per node, columns aligned, and a total line when there are several nodes."""
    rows = []
    for status in statuses:
        if status.sample is None:
            rows.append((status.url, "DOWN", "-", "-", "-", "-", "-", "-", status.error or ""))
            continue
        s = status.sample
        broker = "ok" if s.broker_healthy else "RECONNECTING"
        broker += f" ({int(s.reconnects)} reconnects)" if s.reconnects else ""
        rows.append((
            status.url, "yes" if status.ready else f"NO: {status.ready_msg}", str(s.chat), str(s.lists),
            str(s.groups), f"{status.received_per_s:.1f}", f"{status.deliveries_per_s:.1f}", str(int(s.slow_drops)),
            broker,
        ))
    up = [status for status in statuses if status.sample is not None]
    if len(statuses) > 1:
        rows.append((
            f"total ({len(up)}/{len(statuses)} up)", "", str(sum(s.sample.chat for s in up)),
            str(sum(s.sample.lists for s in up)), "", f"{sum(s.received_per_s for s in up):.1f}",
            f"{sum(s.deliveries_per_s for s in up):.1f}", str(int(sum(s.sample.slow_drops for s in up))), "",
        ))
    widths = [max(len(row[i]) for row in [HEADERS, *rows]) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [HEADERS, *rows]]
    return "\n".join(lines)


def healthy(statuses: list[NodeStatus]) -> bool:
    return all(status.sample is not None and status.ready for status in statuses)
