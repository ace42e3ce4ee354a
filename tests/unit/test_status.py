"""``fastim status``'s reading of a node's metrics and its table."""

from __future__ import annotations

import pytest

from fastim.interfaces.metrics import Metrics
from fastim.status import NodeStatus, Sample, healthy, parse_metrics, render


class _Broker:
    healthy = False
    reconnects = 3


def test_a_nodes_own_exposition_is_read():
    metrics = Metrics(_Broker())
    metrics.open_sockets.labels("chat").inc(5)
    metrics.open_sockets.labels("list").inc(2)
    metrics.groups.set_function(lambda: 7)
    metrics.messages_received.inc(40)
    metrics.deliveries.inc(400)
    metrics.slow_consumer_disconnects.inc()
    sample = parse_metrics(metrics.exposition().decode())
    assert sample == Sample(chat=5, lists=2, groups=7, received=40, deliveries=400, slow_drops=1, reconnects=3,
                            broker_healthy=False)


@pytest.mark.parametrize("text", ["", "hello", "# HELP x y\n# TYPE x counter\nx_total 1\n"])
def test_anything_else_is_not_a_node(text):
    with pytest.raises(ValueError):
        parse_metrics(text)


def test_the_table_has_a_line_per_node_and_a_total():
    up = NodeStatus("http://a:9000", ready=True, sample=Sample(3, 1, 2, 10, 100, 0, 0, True),
                    received_per_s=2.0, deliveries_per_s=20.0)
    down = NodeStatus("http://b:9000", error="Connection refused")
    table = render([up, down]).splitlines()
    assert table[0].split()[:3] == ["node", "ready", "chat"]
    assert table[1].split()[:8] == ["http://a:9000", "yes", "3", "1", "2", "2.0", "20.0", "0"]
    assert "DOWN" in table[2] and "Connection refused" in table[2]
    assert table[3].startswith("total (1/2 up)")
    assert not healthy([up, down]) and healthy([up])
