"""This node's Prometheus metrics: one registry per node, owned by the container."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

# Fan-out latency buckets, in seconds: from a loopback hop (sub-ms) to the
# 250 ms at which a live room starts to feel laggy, and beyond for outages.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REJECT_REASONS = ("empty", "too_large", "binary", "too_fast", "unavailable", "unknown", "not_accepted", "token_refused",
                  "rejected", "hook_failed")
# The publish hook's calls by outcome, and its failures by cause (fastim.domain.errors.HookFailed).
HOOK_OUTCOMES = ("accepted", "replaced", "rejected", "failed")
HOOK_FAILURE_CAUSES = ("timeout", "unreachable", "status", "answer", "busy", "error")


class _Reconnects(Collector):
    """Reads the broker's own reconnect count at scrape time."""

    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "fastim_broker_reconnects", "Times the pub/sub connection to Redis was re-established"
        )
        family.add_metric([], self._read())
        yield family


class Metrics:
    def __init__(self, broker: object) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_sockets = Gauge("fastim_open_sockets", "Open WebSocket connections", ["kind"], registry=r)
        self.messages_received = Counter(
            "fastim_messages_received", "Chat messages accepted from this node's sockets and stored", registry=r
        )
        self.events_fanned_out = Counter(
            "fastim_events_fanned_out", "Events (messages, recalls) this node fanned out to its sockets", registry=r
        )
        self.deliveries = Counter(
            "fastim_deliveries", "Events handed to this node's sockets (a frame for chat sockets, a pending push for group lists)", registry=r
        )
        self.fanout_latency = Histogram(
            "fastim_fanout_latency_seconds",
            "From a message's creation (its ts) to its hand-off to this node's sockets",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected_frames = Counter(
            "fastim_rejected_frames", "Chat frames answered with an error frame", ["reason"], registry=r
        )
        self.slow_consumer_disconnects = Counter(
            "fastim_slow_consumer_disconnects", "Sockets closed (1008) because their unsent backlog grew too large",
            registry=r,
        )
        self.keepalive_timeouts = Counter(
            "fastim_keepalive_timeouts", "Sockets cut because they did not answer a ping within [im] ping_timeout",
            registry=r,
        )
        self.refused_connections = Counter(
            "fastim_refused_connections",
            "Connections refused with 503 at accept: the node (max_connections) or the address (max_connections_per_ip) was full",
            ["limit"], registry=r,
        )
        self.sessions_ended = Counter(
            "fastim_sessions_ended", "Sockets closed (4440) because their login token ended", registry=r
        )
        self.login_throttled = Counter(
            "fastim_login_throttled", "Logins answered 429: too many failed attempts from the address or for the user",
            registry=r,
        )
        self.repaired_events = Counter(
            "fastim_repaired_events", "Events the node missed on its pub/sub connection and read back from storage",
            registry=r,
        )
        self.unrecovered_events = Counter(
            "fastim_unrecovered_events", "Events the node missed and could not read back (no longer in storage)",
            registry=r,
        )
        self.opening_reads = Counter(
            "fastim_opening_reads",
            "Storage reads for chat sockets' opening frames (page: the newest; tail: a resume); sockets of a group "
            "that open together share one",
            ["kind"], registry=r,
        )
        self.storage_errors = Counter(
            "fastim_storage_errors", "Operations that failed because the storage did not answer", registry=r
        )
        self.presence_flush_failures = Counter(
            "fastim_presence_flush_failures",
            "Presence writes (this node's coalesced changes, its lease renewals) the storage did not take; each is "
            "tried again", registry=r,
        )
        self.hook_calls = Counter(
            "fastim_hook_calls", "Publish hook calls by outcome (failed: no usable answer)", ["outcome"], registry=r
        )
        self.hook_latency = Histogram(
            "fastim_hook_latency_seconds", "From a publish hook call to its answer (or failure)",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.hook_failures = Counter(
            "fastim_hook_failures", "Chat sends the publish hook did not review, by cause (busy: max_in_flight calls "
            "already, no call made)", ["cause"], registry=r,
        )
        node = Gauge("fastim_node", "This node's process id, to tell the workers of one port apart", ["pid"], registry=r)
        node.labels(str(os.getpid())).set(1)
        for kind in ("chat", "list"):
            self.open_sockets.labels(kind)
        for reason in REJECT_REASONS:
            self.rejected_frames.labels(reason)
        for limit in ("node", "address"):
            self.refused_connections.labels(limit)
        for kind in ("page", "tail"):
            self.opening_reads.labels(kind)
        for outcome in HOOK_OUTCOMES:
            self.hook_calls.labels(outcome)
        for cause in HOOK_FAILURE_CAUSES:
            self.hook_failures.labels(cause)
        r.register(_Reconnects(lambda: getattr(broker, "reconnects", 0)))  # the memory broker never reconnects
        self.broker_healthy = Gauge(
            "fastim_broker_healthy", "1 while events published anywhere reach this node, else 0", registry=r
        )
        self.broker_healthy.set_function(lambda: 1.0 if getattr(broker, "healthy", True) else 0.0)
        # Set by the Hub, which knows its groups: read at scrape time, nothing on the message path.
        self.groups = Gauge("fastim_groups", "Groups this node follows (at least one local socket in them)", registry=r)

    def hook_called(self, outcome: str, seconds: float) -> None:
        self.hook_calls.labels(outcome).inc()
        self.hook_latency.observe(seconds)

    def hook_failed(self, cause: str) -> None:
        self.hook_failures.labels(cause).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
