"""Contract of Broker, run against every backend; two brokers stand for two nodes."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.model import Message, Recall
from tests.contract.conftest import wait_for, wait_subscribed

T0 = 1_648_368_380_132


class Inbox:
    def __init__(self) -> None:
        self.events: list = []

    def __call__(self, group_id, event) -> None:
        self.events.append((group_id, event))


@pytest.mark.gen_test
async def test_an_event_published_on_one_node_reaches_a_listener_on_another(backend):
    node_a, node_b = backend.new_broker(), backend.new_broker()
    inbox = Inbox()
    await node_a.subscribe("g1", inbox)
    await wait_subscribed(backend, "g1")
    message = Message("g1", "3", "hello", T0)
    recall = Recall("g1", "3", T0)
    await node_b.publish(message)
    await node_b.publish(recall)
    await wait_for(lambda: len(inbox.events) == 2)
    assert inbox.events == [("g1", message), ("g1", recall)]


@pytest.mark.gen_test
async def test_groups_are_isolated(backend):
    broker = backend.new_broker()
    inbox = Inbox()
    await broker.subscribe("g1", inbox)
    await wait_subscribed(backend, "g1")
    await broker.publish(Message("g2", "1", "elsewhere", T0))
    await broker.publish(Message("g1", "1", "here", T0 + 1))
    await wait_for(lambda: inbox.events)
    await asyncio.sleep(0.05)
    assert [event.info for _, event in inbox.events] == ["here"]


@pytest.mark.gen_test
async def test_async_listeners_are_awaited_and_a_failing_one_does_not_stop_others(backend):
    broker = backend.new_broker()
    received = []

    def failing(group_id, event):
        raise RuntimeError("boom")

    async def good(group_id, event):
        received.append(event)

    await broker.subscribe("g1", failing)
    await broker.subscribe("g1", good)
    await wait_subscribed(backend, "g1")
    await broker.publish(Message("g1", "1", "a", T0))
    await broker.publish(Message("g1", "1", "b", T0 + 1))
    await wait_for(lambda: len(received) == 2)
    assert [event.info for event in received] == ["a", "b"]


@pytest.mark.gen_test
async def test_unsubscribe_stops_delivery_to_that_listener_only(backend):
    broker = backend.new_broker()
    stays, leaves = Inbox(), Inbox()
    await broker.subscribe("g1", stays)
    await broker.subscribe("g1", leaves)
    await wait_subscribed(backend, "g1")
    await broker.unsubscribe("g1", leaves)
    await broker.unsubscribe("g1", leaves)  # twice is harmless
    await broker.publish(Message("g1", "1", "a", T0))
    await wait_for(lambda: stays.events)
    await asyncio.sleep(0.05)
    assert leaves.events == []


@pytest.mark.gen_test
async def test_the_last_unsubscribe_releases_the_group(backend):
    broker = backend.new_broker()
    inbox = Inbox()
    await broker.subscribe("g1", inbox)
    await wait_subscribed(backend, "g1")
    assert "g1" in broker.subscribed_groups
    await broker.unsubscribe("g1", inbox)
    assert "g1" not in broker.subscribed_groups
    if backend.raw is not None:

        async def released():
            [(_, number)] = await backend.raw.pubsub_numsub("mq:g1")
            return number == 0

        await wait_for(released)


@pytest.mark.gen_test
async def test_many_groups_are_subscribed_and_released_in_one_call_each_way(backend):
    broker = backend.new_broker()
    inbox = Inbox()
    groups = [f"m{i}" for i in range(300)]
    await broker.subscribe_many(groups, inbox)
    assert broker.subscribed_groups >= set(groups)
    await wait_subscribed(backend, "m299")
    await backend.new_broker().publish(Message("m150", "1", "one of many", T0))
    await wait_for(lambda: inbox.events)
    assert inbox.events == [("m150", Message("m150", "1", "one of many", T0))]
    await broker.unsubscribe_many(groups[:200], inbox)
    assert broker.subscribed_groups & set(groups) == set(groups[200:])


@pytest.mark.gen_test
async def test_a_notice_reaches_every_node_that_watches_notices(backend):
    from fastim.domain.model import SessionsChanged

    node_a, node_b = backend.new_broker(), backend.new_broker()
    heard_a, heard_b = [], []
    await node_a.watch_notices(heard_a.append)
    await node_b.watch_notices(heard_b.append)
    if backend.raw is not None:

        async def both_listening():
            [(_, number)] = await backend.raw.pubsub_numsub("fastim:notices")
            return number == 2

        await wait_for(both_listening)
    await node_b.notify(SessionsChanged("u1"))
    await wait_for(lambda: heard_a and heard_b)
    assert heard_a == heard_b == [SessionsChanged("u1")]


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("backend", ["fakeredis", pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
async def test_a_connection_that_silently_stops_delivering_is_found_by_the_probe_and_replaced(backend):
    broker = backend.new_broker(probe_interval_s=0.1, probe_timeout_s=0.4,
                                backoff_initial_seconds=0.01, backoff_cap_seconds=0.05)
    resumed: list[frozenset] = []
    broker.on_resume(resumed.append)
    inbox = Inbox()
    await broker.subscribe("g1", inbox)
    await wait_for(lambda: broker.healthy and broker._probe._count >= 1)  # probes go and come back
    deliver = broker.message

    def silent(channel, data):  # the connection stays up and delivers nothing: probes included
        if broker.reconnects:
            deliver(channel, data)

    broker.message = silent
    await wait_for(lambda: not broker.healthy, timeout=5)
    await wait_for(lambda: broker.reconnects == 1 and resumed == [frozenset({"g1"})], timeout=5)
    await wait_for(lambda: broker.healthy, timeout=5)  # probes come back on the new connection
    await backend.new_broker().publish(Message("g1", "1", "after", T0))
    await wait_for(lambda: inbox.events)
