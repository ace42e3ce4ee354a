"""The Presence service: counting sockets, coalescing flushes, retrying failed writes, renewing leases."""

from __future__ import annotations

import asyncio

import pytest

from fastim.domain.errors import StorageUnavailable
from fastim.domain.model import PRESENCE_LISTED_MAX, OnlineUser, PresenceChanged
from fastim.domain.presence import Presence, announcement

FLUSH_S = 0.02
RENEW_S = 0.05


class FakeRepository:
    """Records every call; fails the next ``failing`` writes; reports ``lapsed`` groups once."""

    def __init__(self) -> None:
        self.applied: list[dict[str, dict[str, int]]] = []
        self.renewed: list[list[str]] = []
        self.dropped: list[list[str]] = []
        self.announce: list[bool] = []
        self.failing = 0
        self.lapsed: set[str] = set()
        self.counted: list[list[str]] = []

    def _maybe_fail(self) -> None:
        if self.failing:
            self.failing -= 1
            raise StorageUnavailable("storage is away")

    async def apply(self, node_id, changes, lease_s, announce):
        assert node_id == "node-1"
        self.announce.append(announce)
        self._maybe_fail()
        self.applied.append({group: dict(users) for group, users in changes.items()})
        lapsed, self.lapsed = self.lapsed & set(changes), self.lapsed - set(changes)
        return lapsed

    async def renew(self, node_id, group_ids, lease_s, announce):
        self._maybe_fail()
        self.renewed.append(sorted(group_ids))
        lapsed, self.lapsed = self.lapsed & set(group_ids), self.lapsed - set(group_ids)
        return lapsed

    async def drop(self, node_id, group_ids, announce):
        self._maybe_fail()
        self.dropped.append(sorted(group_ids))

    async def users(self, group_id):
        self._maybe_fail()
        return [OnlineUser("u1", 2)]

    async def counts(self, group_ids):
        self._maybe_fail()
        self.counted.append(list(group_ids))
        return {group_id: 1 for group_id in group_ids}


def service(repository: FakeRepository, failures: list | None = None, **options) -> Presence:
    on_failure = None if failures is None else (lambda: failures.append(1))
    return Presence(repository, "node-1", announce=options.pop("announce", True), flush_s=FLUSH_S,
                    renew_s=options.pop("renew_s", 3600.0), on_failure=on_failure, **options)


async def until(condition, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def quiet(seconds: float = FLUSH_S * 4) -> None:
    await asyncio.sleep(seconds)


@pytest.mark.gen_test
async def test_the_changes_of_one_flush_go_in_one_write_as_absolute_counts():
    repository = FakeRepository()
    presence = service(repository)
    presence.enter("g", "u1")
    presence.enter("g", "u1")  # a second tab
    presence.enter("g", "u2")
    presence.enter("h", "u1")
    await until(lambda: repository.applied)
    await quiet()
    assert repository.applied == [{"g": {"u1": 2, "u2": 1}, "h": {"u1": 1}}]
    assert repository.announce == [True]
    await presence.close()


@pytest.mark.gen_test
async def test_a_leave_and_a_join_within_one_flush_cancel_out():
    repository = FakeRepository()
    presence = service(repository)
    presence.enter("g", "u1")
    await until(lambda: repository.applied)
    presence.exit("g", "u1")  # a page reload: out, and in again
    presence.enter("g", "u1")
    presence.enter("g", "u2")
    presence.exit("g", "u2")  # in and out: storage never needs to hear of it
    await quiet()
    assert repository.applied == [{"g": {"u1": 1}}]
    await presence.close()


@pytest.mark.gen_test
async def test_an_exit_without_an_enter_changes_nothing():
    repository = FakeRepository()
    presence = service(repository)
    presence.exit("g", "u1")
    presence.enter("g", "u1")
    presence.exit("g", "u2")
    await until(lambda: repository.applied)
    await quiet()
    assert repository.applied == [{"g": {"u1": 1}}]
    presence.exit("g", "u1")
    presence.exit("g", "u1")  # once too often
    await until(lambda: len(repository.applied) == 2)
    assert repository.applied[1] == {"g": {"u1": 0}}
    await presence.close()


@pytest.mark.gen_test
async def test_a_failed_write_is_tried_again_and_no_leave_is_lost():
    repository, failures = FakeRepository(), []
    presence = service(repository, failures)
    presence.enter("g", "u1")
    await until(lambda: repository.applied)
    repository.failing = 2
    presence.exit("g", "u1")
    await until(lambda: len(repository.applied) == 2, timeout=5.0)
    assert repository.applied[1] == {"g": {"u1": 0}}
    assert len(failures) == 2
    await presence.close()


@pytest.mark.gen_test
async def test_after_a_failed_write_a_count_back_where_it_was_is_still_written():
    repository = FakeRepository()
    presence = service(repository)
    repository.failing = 1
    presence.enter("g", "u1")  # this write fails, but may have reached storage
    await until(lambda: repository.announce)
    presence.exit("g", "u1")  # back to 0, what storage held before: yet storage may hold 1 now
    await until(lambda: repository.applied, timeout=5.0)
    assert repository.applied == [{"g": {"u1": 0}}]
    await presence.close()


@pytest.mark.gen_test
async def test_a_group_that_lapsed_is_written_again_in_full():
    repository = FakeRepository()
    presence = service(repository)
    presence.enter("g", "u1")
    presence.enter("g", "u2")
    await until(lambda: repository.applied)
    repository.lapsed = {"g"}  # e.g. the node was paused past its lease
    presence.enter("g", "u3")
    await until(lambda: len(repository.applied) == 3)
    assert repository.applied[1:] == [{"g": {"u3": 1}}, {"g": {"u1": 1, "u2": 1}}]
    await presence.close()


@pytest.mark.gen_test
async def test_leases_are_renewed_while_the_node_has_sockets_and_lapsed_groups_are_rewritten():
    repository = FakeRepository()
    presence = service(repository, renew_s=RENEW_S)
    presence.enter("g", "u1")
    presence.enter("h", "u2")
    await until(lambda: repository.renewed)
    assert repository.renewed[0] == ["g", "h"]
    repository.lapsed = {"h"}
    await until(lambda: len(repository.applied) == 2)
    assert repository.applied[1] == {"h": {"u2": 1}}
    presence.exit("g", "u1")
    presence.exit("h", "u2")
    await until(lambda: len(repository.applied) == 3)
    renewals = len(repository.renewed)
    await quiet(RENEW_S * 3)
    assert len(repository.renewed) <= renewals + 1  # no sockets, no lease: the timer stopped
    await presence.close()


@pytest.mark.gen_test
async def test_a_failed_renewal_is_counted_and_tried_again():
    repository, failures = FakeRepository(), []
    presence = service(repository, failures, renew_s=RENEW_S)
    presence.enter("g", "u1")
    await until(lambda: repository.applied)
    repository.failing = 1
    await until(lambda: repository.renewed, timeout=5.0)
    assert failures == [1]
    await presence.close()


@pytest.mark.gen_test
async def test_close_drops_every_group_the_node_may_hold_and_stops_counting():
    repository = FakeRepository()
    presence = service(repository)
    presence.enter("g", "u1")
    presence.enter("h", "u1")
    await until(lambda: repository.applied)
    presence.exit("h", "u1")  # not flushed yet: h must be dropped too
    await presence.close()
    assert repository.dropped == [["g", "h"]]
    presence.enter("k", "u1")  # a socket closing after the node stopped counting
    await quiet()
    assert repository.applied == [{"g": {"u1": 1}, "h": {"u1": 1}}]
    await presence.close()  # twice is harmless
    assert repository.dropped == [["g", "h"]]


@pytest.mark.gen_test
async def test_close_survives_a_storage_that_does_not_answer():
    repository = FakeRepository()
    presence = service(repository)
    presence.enter("g", "u1")
    repository.failing = 10
    await presence.close()  # logs; the lease lapses instead
    assert repository.dropped == []


@pytest.mark.gen_test
async def test_reads_go_to_storage_and_counts_ask_once_per_group():
    repository = FakeRepository()
    presence = service(repository)
    assert await presence.users("g") == [OnlineUser("u1", 2)]
    assert await presence.counts(["g", "h", "g"]) == {"g": 1, "h": 1}
    assert await presence.counts([]) == {}
    assert repository.counted == [["g", "h"]]
    repository.failing = 1
    with pytest.raises(StorageUnavailable):
        await presence.counts(["g"])


@pytest.mark.gen_test
async def test_without_presence_events_writes_say_so():
    repository = FakeRepository()
    presence = service(repository, announce=False)
    presence.enter("g", "u1")
    await until(lambda: repository.applied)
    assert repository.announce == [False]
    await presence.close()


def test_an_announcement_lists_few_changes_and_only_counts_many():
    assert announcement("g", [], [], 3) is None
    assert announcement("g", ["a"], ["b"], 3) == PresenceChanged("g", ("a",), ("b",), 3)
    many = [f"u{i}" for i in range(PRESENCE_LISTED_MAX + 1)]
    assert announcement("g", many, [], 50) == PresenceChanged("g", (), (), 50)
    assert announcement("g", many[:-1], [], 50) == PresenceChanged("g", tuple(many[:-1]), (), 50)
