"""The Hub's fan-out: one write per socket per batch, and the adaptive coalescing window of busy groups."""

from __future__ import annotations

import asyncio
import time

import pytest

from fastim.domain.messages import Messages
from fastim.domain.model import Message
from fastim.infrastructure.clock import ManualClock
from fastim.infrastructure.memory.broker import MemoryBroker
from fastim.infrastructure.memory.repositories import MemoryMessageRepository
from fastim.interfaces.metrics import Metrics
from fastim.interfaces.ws.hub import Hub


class FakeSocket:
    """A live chat socket that takes a while to write to (``cost`` seconds), as a big room does."""

    def __init__(self, cost: float = 0.0) -> None:
        self.cost = cost
        self.writes: list[bytes] = []

    def write_frames(self, data: bytes) -> None:
        self.writes.append(data)
        deadline = time.perf_counter() + self.cost
        while time.perf_counter() < deadline:
            pass

    def deliver(self, group_id, batch) -> None:
        self.write_frames(batch.data)

    def infos(self) -> list[list[str]]:
        """What each write carried, by message text."""
        return [[info for info in ("e1", "e2", "e3") if f'"info":"{info}"'.encode() in data] for data in self.writes]


async def live_socket(max_window_s: float, cost: float) -> tuple[Hub, MemoryBroker, FakeSocket]:
    clock, broker = ManualClock(), MemoryBroker()
    messages = Messages(MemoryMessageRepository(clock, broker), clock, message_timeout=60, list_num=0,
                        recall_time_limit=60)
    hub = Hub(broker, messages, Metrics(broker), clock, max_window_s=max_window_s)
    socket = FakeSocket(cost)
    await hub.join("g", socket)
    hub.go_live("g", socket)
    return hub, broker, socket


def event(info: str) -> Message:
    return Message("g", "u", info, 1_700_000_000_000)


async def turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.gen_test
async def test_the_events_of_one_loop_turn_share_one_write_each_still_its_own_frame():
    _, broker, socket = await live_socket(max_window_s=0.015, cost=0.0)
    await broker.publish(event("e1"))
    await broker.publish(event("e2"))
    assert socket.writes == []  # out at the end of the turn, not during it
    await turns()
    assert socket.infos() == [["e1", "e2"]]
    assert socket.writes[0].count(b"\x81") == 2  # two complete text frames in one write


@pytest.mark.gen_test
async def test_a_busy_group_gathers_what_arrives_while_a_window_as_long_as_its_last_fan_out_runs():
    _, broker, socket = await live_socket(max_window_s=1.0, cost=0.05)
    await broker.publish(event("e1"))
    await turns()  # e1 goes out alone; that fan-out took 50 ms, so the group's window is 50 ms
    await broker.publish(event("e2"))
    await turns()
    await broker.publish(event("e3"))
    await asyncio.sleep(0.2)
    assert socket.infos() == [["e1"], ["e2", "e3"]]


@pytest.mark.gen_test
async def test_the_window_never_passes_the_setting():
    _, broker, socket = await live_socket(max_window_s=0.01, cost=0.05)
    await broker.publish(event("e1"))
    await turns()
    await broker.publish(event("e2"))
    await asyncio.sleep(0.03)  # far past the 10 ms cap, well inside the 50 ms the fan-out took
    await broker.publish(event("e3"))
    await asyncio.sleep(0.2)
    assert socket.infos() == [["e1"], ["e2"], ["e3"]]


@pytest.mark.gen_test
async def test_with_the_window_off_only_one_loop_turn_shares_a_write():
    _, broker, socket = await live_socket(max_window_s=0.0, cost=0.05)
    await broker.publish(event("e1"))
    await turns()
    await broker.publish(event("e2"))
    await turns()
    assert socket.infos() == [["e1"], ["e2"]]  # e2 did not wait for a window
