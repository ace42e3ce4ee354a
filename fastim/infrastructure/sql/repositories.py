"""The SQL repositories (SQLite, PostgreSQL): the same behaviour as the Redis and in-memory ones.

A group's stream row is taken with one upsert that numbers the event (a new
or expired stream restarts at seq 1 under a new epoch), so concurrent nodes
never give two events one seq. Appends issued in one loop turn share one
transaction (one commit, one fsync at most): a busy node writes in batches.
The database has no pub/sub: events are announced on the node's broker
(memory or Redis) once committed, in seq order per batch; a node that hears
them out of order reads the gap back by seq, as after any broker outage.
Expiry is in SQL: reads ignore an expired stream, the next event restarts
it, and a sweeper deletes expired groups and tokens in bounded batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import secrets
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fastim.domain.errors import OutcomeUnknown, RecallWindowExpired, StorageUnavailable
from fastim.domain.model import (
    Appended,
    Event,
    GroupSummary,
    Joined,
    Message,
    Page,
    Recall,
    RecallTarget,
    Tail,
    message_id,
    parse_message_id,
)
from fastim.domain.ports import Broker, Clock
from fastim.infrastructure.sql.engine import SQL_ERRORS, describe, sql_errors
from fastim.infrastructure.sql.schema import memberships, messages, recalls, streams, tokens
from fastim.infrastructure.streams import EPOCH_BYTES, accounted_tail

logger = logging.getLogger(__name__)

# Expired groups and tokens are deleted this often, this many per statement.
SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 1000
# A commit whose answer was lost may still have happened; reading tells which once it settled.
COMMIT_SETTLE_S = 1.0
# The most appends one transaction takes.
MAX_BATCH = 1000


def _upsert(connection: AsyncConnection):
    return (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)


def _live(now: int):
    return or_(streams.c.expires_at.is_(None), streams.c.expires_at > now)


def _expires(now: int, ttl_seconds: int) -> int | None:
    return now + ttl_seconds * 1000 if ttl_seconds > 0 else None


def _message(row: Any) -> Message:
    info = bytes(row.info).decode("utf-8", errors="replace")
    return Message(row.group_id, row.user_id, info, row.ts, seq=row.seq, id=message_id(row.epoch, row.seq))


def _recall(row: Any) -> Recall:
    return Recall(row.group_id, row.user_id, row.ts, id=row.message_id, seq=row.seq, epoch=row.epoch)


_MESSAGE_COLUMNS = (messages.c.group_id, messages.c.seq, messages.c.epoch, messages.c.user_id, messages.c.info,
                    messages.c.ts)


class SqlMessageRepository:
    """Streams, messages and recall events in SQL; see the module's docstring."""

    def __init__(self, engine: AsyncEngine, clock: Clock, broker: Broker | None = None) -> None:
        self._engine = engine
        self._clock = clock
        self._broker = broker
        self._queue: list[tuple[Message, int, int, asyncio.Future[Appended]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._connection: AsyncConnection | None = None  # the writer's own, kept between batches
        self._next_seq_statement: Any = None  # built once for the engine's dialect
        self._sweeper: asyncio.Task[None] | None = None

    # -- writing -----------------------------------------------------------------------------

    async def append(self, message: Message, ttl_seconds: int, max_length: int = 0) -> Appended:
        self._start_sweeper()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Appended] = loop.create_future()
        self._queue.append((message, ttl_seconds, max_length, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_queued(), name="fastim-sql-writer")
        return await future

    async def _write_queued(self) -> None:
        """One transaction at a time; what queues meanwhile goes in the next (group commit): under load
        batches grow, and a commit's cost is shared by every message in it."""
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Message, int, int, asyncio.Future[Appended]]]) -> None:
        """One transaction for the batch: every append is stored, or none is (and each caller is told which)."""
        committing = False
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
            async with self._connection.begin():
                appended = await self._append_all(self._connection, batch)
                committing = True
        except SQL_ERRORS as exc:
            await self._drop_connection()
            error: StorageUnavailable
            if committing:  # the commit's answer was lost: it may have happened
                error = OutcomeUnknown(f"database commit failed: {describe(exc)}; it may have been stored",
                                       settle_after=COMMIT_SETTLE_S)
            else:
                error = StorageUnavailable(f"database append failed: {describe(exc)}")
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        for (*_, future), result in zip(batch, appended):
            if not future.done():
                future.set_result(result)
        for result in appended:
            await self._announce(result.message)

    async def _append_all(self, connection: AsyncConnection,
                          batch: list[tuple[Message, int, int, asyncio.Future[Appended]]]) -> list[Appended]:
        """Number the batch's messages (one upsert for all its groups), then insert them all at once."""
        now = self._clock.now_ms()
        by_group: dict[str, list[int]] = {}
        for index, (message, *_) in enumerate(batch):
            by_group.setdefault(message.group_id, []).append(index)
        groups = sorted(by_group)  # one lock order for every batch: no deadlocks between nodes
        taken = await self._take_seqs(connection, [
            (group_id, len(by_group[group_id]), len(by_group[group_id]), batch[by_group[group_id][-1]][1])
            for group_id in groups
        ], now)
        results: list[Appended | None] = [None] * len(batch)
        rows = []
        trims: dict[str, tuple[int, int]] = {}  # group -> (its total, max_length)
        for group_id, (seq, epoch, total) in zip(groups, taken):
            indexes = by_group[group_id]
            first_seq, first_total = seq - len(indexes) + 1, total - len(indexes) + 1
            for offset, index in enumerate(indexes):
                message = batch[index][0]
                rows.append({"group_id": group_id, "seq": first_seq + offset, "epoch": epoch,
                             "user_id": message.user_id, "info": message.info.encode("utf-8", errors="surrogatepass"),
                             "ts": message.ts})
                stored = dataclasses.replace(message, seq=first_seq + offset, id=message_id(epoch, first_seq + offset))
                results[index] = Appended(stored, first_total + offset)
            max_length = batch[indexes[-1]][2]
            if max_length > 0 and total > max_length:
                trims[group_id] = (total, max_length)
        await connection.execute(messages.insert(), rows)
        for group_id, (total, max_length) in trims.items():
            cut = (select(messages.c.seq).where(messages.c.group_id == group_id).order_by(messages.c.seq)
                   .offset(total - max_length - 1).limit(1).scalar_subquery())
            await connection.execute(delete(messages).where(messages.c.group_id == group_id, messages.c.seq <= cut))
            await connection.execute(update(streams).where(streams.c.group_id == group_id).values(total=max_length))
            for index in by_group[group_id]:
                results[index] = dataclasses.replace(results[index], total=min(results[index].total, max_length))
        return results  # type: ignore[return-value]

    async def _next_seq(self, connection: AsyncConnection, group_id: str, now: int, ttl_seconds: int,
                        events: int = 1, added: int = 0) -> tuple[int, str, int]:
        """:meth:`_take_seqs` for one group."""
        (taken,) = await self._take_seqs(connection, [(group_id, events, added, ttl_seconds)], now)
        return taken

    async def _take_seqs(self, connection: AsyncConnection, wanted: list[tuple[str, int, int, int]],
                         now: int) -> list[tuple[int, str, int]]:
        """For each (group, events, added, ttl): take the stream's next ``events`` seqs (an expired or new
        stream restarts under a new epoch), add ``added`` to its total, renew its TTL. The last seq taken,
        the epoch and the total of each, in order; one statement for all."""
        if self._next_seq_statement is None:
            self._next_seq_statement = _next_seq_statement(_upsert(connection))
        params = [
            {"group_id": group_id, "epoch": secrets.token_hex(EPOCH_BYTES), "seq": events, "total": added,
             "expires_at": _expires(now, ttl), "now": now}
            for group_id, events, added, ttl in wanted
        ]
        rows = (await connection.execute(self._next_seq_statement, params)).all()
        taken = []
        for param, row in zip(params, rows):
            if row.epoch == param["epoch"]:  # a new stream: what an expired one left goes (its seqs are taken again)
                group_id = param["group_id"]
                await connection.execute(delete(messages).where(messages.c.group_id == group_id,
                                                                messages.c.epoch != row.epoch))
                await connection.execute(delete(recalls).where(recalls.c.group_id == group_id,
                                                               recalls.c.epoch != row.epoch))
            taken.append((int(row.seq), str(row.epoch), int(row.total)))
        return taken

    async def remove(self, target: RecallTarget, window: int, ttl_seconds: int, keep_recalls: int) -> Recall | None:
        group_id = target.group_id
        with sql_errors("recall"):
            async with self._engine.begin() as connection:
                now = self._clock.now_ms()
                row = await self._locate(connection, target, now)
                if row is None:
                    return None
                if row.ts < target.not_before_ms:
                    raise RecallWindowExpired("the message is older than the recall window")
                await connection.execute(delete(messages).where(messages.c.group_id == group_id,
                                                                messages.c.seq == row.seq))
                await connection.execute(update(streams).where(streams.c.group_id == group_id)
                                         .values(total=streams.c.total - 1))
                seq, epoch, _ = await self._next_seq(connection, group_id, now, ttl_seconds)
                recall = Recall(group_id, row.user_id, row.ts, id=message_id(row.epoch, row.seq), seq=seq, epoch=epoch)
                await connection.execute(recalls.insert().values(
                    group_id=group_id, seq=seq, epoch=epoch, user_id=recall.user_id, ts=recall.ts, message_id=recall.id,
                ))
                oldest_kept = (select(recalls.c.seq).where(recalls.c.group_id == group_id)
                               .order_by(recalls.c.seq.desc()).offset(max(keep_recalls, 1) - 1).limit(1).scalar_subquery())
                await connection.execute(delete(recalls).where(recalls.c.group_id == group_id,
                                                               recalls.c.seq < oldest_kept))
        await self._announce(recall)
        return recall

    async def _locate(self, connection: AsyncConnection, target: RecallTarget, now: int) -> Any | None:
        # The stream row first, as appends take it: a recall and a trimming append never wait on each other.
        stream = await self._stream(connection, target.group_id, now, lock=True)
        if stream is None:
            return None
        query = select(*_MESSAGE_COLUMNS).where(messages.c.group_id == target.group_id)
        if target.user_id is not None:  # None: a moderator's recall, of anyone's message
            query = query.where(messages.c.user_id == target.user_id)
        if target.id is not None:
            parsed = parse_message_id(target.id)
            if parsed is None or parsed[0] != stream.epoch:
                return None
            query = query.where(messages.c.seq == parsed[1], messages.c.epoch == parsed[0])
        else:
            query = query.where(messages.c.ts == target.ts).order_by(messages.c.seq.desc()).limit(1)
        return (await connection.execute(query)).first()

    async def _announce(self, event: Event) -> None:
        if self._broker is None:
            return
        try:
            await self._broker.publish(event)
        except StorageUnavailable as exc:  # stored: the next event's gap makes every node read it back
            logger.warning("an event of group %s was stored but not announced: %s", event.group_id, exc)

    # -- reading -------------------------------------------------------------------------------

    async def _stream(self, connection: AsyncConnection, group_id: str, now: int, lock: bool = False) -> Any | None:
        query = select(streams.c.seq, streams.c.epoch, streams.c.total).where(streams.c.group_id == group_id, _live(now))
        if lock:
            query = query.with_for_update()  # PostgreSQL; SQLite has one writer at a time anyway
        return (await connection.execute(query)).first()

    async def find(self, draft: Message, window: int) -> Message | None:
        with sql_errors("find a message"):
            async with self._engine.connect() as connection:
                if await self._stream(connection, draft.group_id, self._clock.now_ms()) is None:
                    return None
                row = (await connection.execute(
                    select(*_MESSAGE_COLUMNS).where(messages.c.group_id == draft.group_id, messages.c.ts == draft.ts,
                                                    messages.c.user_id == draft.user_id)
                    .order_by(messages.c.seq.desc()).limit(1)
                )).first()
        found = _message(row) if row is not None else None
        return found if found is not None and found.info == draft.info else None

    async def newest(self, group_id: str, count: int) -> Page:
        with sql_errors("read the newest messages"):
            async with self._engine.connect() as connection:
                stream = await self._stream(connection, group_id, self._clock.now_ms())
                if stream is None:
                    return Page([], 0)
                rows = [] if count <= 0 else (await connection.execute(
                    select(*_MESSAGE_COLUMNS).where(messages.c.group_id == group_id)
                    .order_by(messages.c.seq.desc()).limit(count)
                )).all()
        return Page([_message(row) for row in reversed(rows)], int(stream.total), int(stream.seq), stream.epoch)

    async def tail(self, group_id: str, since: int, limit: int) -> Tail:
        with sql_errors("read a tail"):
            async with self._engine.connect() as connection:
                stream = await self._stream(connection, group_id, self._clock.now_ms())
                if stream is None:
                    return Tail([], 0, "", complete=since == 0, total=0)
                seq, epoch, total = int(stream.seq), stream.epoch, int(stream.total)
                count = seq - since
                if count <= 0 or count > limit:
                    return Tail([], seq, epoch, complete=count == 0, total=total)
                rows = (await connection.execute(
                    select(*_MESSAGE_COLUMNS).where(messages.c.group_id == group_id, messages.c.seq > since)
                    .order_by(messages.c.seq).limit(count)
                )).all()
                recall_rows = (await connection.execute(
                    select(recalls).where(recalls.c.group_id == group_id, recalls.c.seq > since)
                    .order_by(recalls.c.seq).limit(count)
                )).all()
        events, complete = accounted_tail([_message(r) for r in rows], [_recall(r) for r in recall_rows],
                                          since, seq, epoch)
        return Tail(events, seq, epoch, complete, total)

    async def range(self, group_id: str, start: int, end: int, limit: int) -> list[Message]:
        """By list index: from the nearer end of the list, so a page costs its offset from that end."""
        with sql_errors("read a range"):
            async with self._engine.connect() as connection:
                stream = await self._stream(connection, group_id, self._clock.now_ms())
                if stream is None:
                    return []
                size = int(stream.total)
                first = max(size + start, 0) if start < 0 else start
                last = min(size + end if end < 0 else end, size - 1, first + limit - 1)
                if first > last:
                    return []
                query = select(*_MESSAGE_COLUMNS).where(messages.c.group_id == group_id)
                if first <= size - 1 - last:
                    rows = (await connection.execute(query.order_by(messages.c.seq).offset(first)
                                                     .limit(last - first + 1))).all()
                else:
                    rows = list(reversed((await connection.execute(
                        query.order_by(messages.c.seq.desc()).offset(size - 1 - last).limit(last - first + 1)
                    )).all()))
        return [_message(row) for row in rows]

    async def before(self, group_id: str, user_id: str, ts: int, count: int, window: int) -> list[Message] | None:
        with sql_errors("read the messages before an anchor"):
            async with self._engine.connect() as connection:
                if await self._stream(connection, group_id, self._clock.now_ms()) is None:
                    return None
                anchor = (await connection.execute(
                    select(messages.c.seq).where(messages.c.group_id == group_id, messages.c.ts == ts,
                                                 messages.c.user_id == user_id)
                    .order_by(messages.c.seq.desc()).limit(1)
                )).scalar()
                if anchor is None:
                    return None
                rows = [] if count <= 0 else (await connection.execute(
                    select(*_MESSAGE_COLUMNS).where(messages.c.group_id == group_id, messages.c.seq < anchor)
                    .order_by(messages.c.seq.desc()).limit(count)
                )).all()
        return [_message(row) for row in reversed(rows)]

    async def summaries(self, group_ids: Iterable[str]) -> list[GroupSummary]:
        ids = list(dict.fromkeys(group_ids))
        if not ids:
            return []
        with sql_errors(f"read the summaries of {len(ids)} groups"):
            async with self._engine.connect() as connection:
                now = self._clock.now_ms()
                live = {row.group_id: int(row.total) for row in (await connection.execute(
                    select(streams.c.group_id, streams.c.total).where(streams.c.group_id.in_(ids), _live(now))
                )).all()}
                same_group = messages.alias()
                newest_seq = (select(func.max(same_group.c.seq)).where(same_group.c.group_id == messages.c.group_id)
                              .scalar_subquery())
                rows = (await connection.execute(
                    select(*_MESSAGE_COLUMNS).where(messages.c.group_id.in_(list(live)), messages.c.seq == newest_seq)
                )).all() if live else []
        newest = {row.group_id: _message(row) for row in rows}
        return [GroupSummary(g, newest.get(g), live.get(g, 0)) for g in group_ids]

    # -- expiry --------------------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="fastim-sql-sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await self.sweep()
            except SQL_ERRORS as exc:
                logger.warning("deleting expired groups and tokens failed: %s", describe(exc))

    async def sweep(self) -> int:
        """Delete expired groups (stream, messages, recall events) and tokens, a batch at a time; how many."""
        now = self._clock.now_ms()
        swept = 0
        async with self._engine.begin() as connection:
            # Stream rows first, as appends take them, and none an append holds: no waiting on each other.
            expired = (await connection.execute(
                select(streams.c.group_id).where(streams.c.expires_at <= now).order_by(streams.c.group_id)
                .limit(SWEEP_BATCH).with_for_update(skip_locked=True)
            )).scalars().all()
            if expired:
                for table in (messages, recalls):
                    await connection.execute(delete(table).where(table.c.group_id.in_(expired)))
                await connection.execute(delete(streams).where(streams.c.group_id.in_(expired),
                                                               streams.c.expires_at <= now))
                swept += len(expired)
            result = await connection.execute(delete(tokens).where(tokens.c.expires_at <= now))
            swept += result.rowcount or 0
        return swept

    async def close(self) -> None:
        tasks = [task for task in (self._sweeper, self._writer) if task is not None]
        if self._sweeper is not None:
            self._sweeper.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except SQL_ERRORS as exc:  # it failed already: that is why it goes
                logger.debug("closing the writer's database connection failed: %s", describe(exc))


def _when(condition, value):
    """``CASE WHEN condition THEN value END`` (NULL otherwise), for COALESCE."""
    return case((condition, value))


def _next_seq_statement(insert):
    """The numbering upsert, built once: parameters group_id, epoch (a candidate), seq (how many events),
    total (how many messages added), expires_at, now. Rows come back in the order of the parameters."""
    statement = insert(streams).values(
        group_id=bindparam("group_id"), epoch=bindparam("epoch"), seq=bindparam("seq"), total=bindparam("total"),
        expires_at=bindparam("expires_at"),
    )
    expired = and_(streams.c.expires_at.is_not(None), streams.c.expires_at <= bindparam("now"))
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[streams.c.group_id],
        set_={
            "epoch": func.coalesce(_when(expired, excluded.epoch), streams.c.epoch),
            "seq": func.coalesce(_when(expired, excluded.seq), streams.c.seq + excluded.seq),
            "total": func.coalesce(_when(expired, excluded.total), streams.c.total + excluded.total),
            "expires_at": excluded.expires_at,
        },
    ).returning(streams.c.seq, streams.c.epoch, streams.c.total, sort_by_parameter_order=True)


class SqlMembershipRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def join(self, user_id: str, group_id: str, max_groups: int = 0) -> Joined:
        with sql_errors("join a group"):
            async with self._engine.begin() as connection:
                mine = memberships.c.user_id == user_id
                if (await connection.execute(select(literal(1)).where(mine, memberships.c.group_id == group_id))).first():
                    return Joined.ALREADY
                if max_groups > 0:
                    count = (await connection.execute(select(func.count()).where(mine))).scalar_one()
                    if count >= max_groups:
                        return Joined.FULL
                statement = _upsert(connection)(memberships).values(user_id=user_id, group_id=group_id)
                result = await connection.execute(statement.on_conflict_do_nothing())
        return Joined.ADDED if result.rowcount else Joined.ALREADY

    async def leave(self, user_id: str, group_id: str) -> bool:
        with sql_errors("leave a group"):
            async with self._engine.begin() as connection:
                result = await connection.execute(delete(memberships).where(
                    memberships.c.user_id == user_id, memberships.c.group_id == group_id))
        return bool(result.rowcount)

    async def groups_of(self, user_id: str) -> list[str]:
        with sql_errors("read the groups of a user"):
            async with self._engine.connect() as connection:
                rows = await connection.execute(select(memberships.c.group_id)
                                                .where(memberships.c.user_id == user_id).order_by(memberships.c.group_id))
                return list(rows.scalars())

    async def count(self, user_id: str) -> int:
        """Counted on the primary key's prefix: bounded by ``[im] max_groups_per_user``."""
        with sql_errors("count the groups of a user"):
            async with self._engine.connect() as connection:
                return int((await connection.execute(
                    select(func.count()).where(memberships.c.user_id == user_id))).scalar_one())

    async def is_member(self, user_id: str, group_id: str) -> bool:
        with sql_errors("check a membership"):
            async with self._engine.connect() as connection:
                return (await connection.execute(select(literal(1)).where(
                    memberships.c.user_id == user_id, memberships.c.group_id == group_id))).first() is not None


class SqlTokenRepository:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    def _valid(self, user_id: str, token: str):
        now = self._clock.now_ms()
        return and_(tokens.c.user_id == user_id, tokens.c.token == token,
                    or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now))

    async def issue(self, user_id: str, token: str, ttl_seconds: int) -> None:
        expires = _expires(self._clock.now_ms(), ttl_seconds)
        with sql_errors("store a token"):
            async with self._engine.begin() as connection:
                statement = _upsert(connection)(tokens).values(user_id=user_id, token=token, expires_at=expires)
                await connection.execute(statement.on_conflict_do_update(
                    index_elements=[tokens.c.user_id], set_={"token": token, "expires_at": expires}))

    async def check_and_renew(self, user_id: str, token: str, ttl_seconds: int) -> bool:
        with sql_errors("check a token"):
            async with self._engine.begin() as connection:
                result = await connection.execute(update(tokens).where(self._valid(user_id, token))
                                                  .values(expires_at=_expires(self._clock.now_ms(), ttl_seconds)))
        return bool(result.rowcount)

    async def remaining(self, user_id: str, token: str) -> float | None:
        with sql_errors("read a token"):
            async with self._engine.connect() as connection:
                row = (await connection.execute(select(tokens.c.expires_at).where(self._valid(user_id, token)))).first()
        if row is None:
            return None
        return math.inf if row.expires_at is None else (row.expires_at - self._clock.now_ms()) / 1000

    async def revoke(self, user_id: str, token: str) -> bool:
        with sql_errors("delete a token"):
            async with self._engine.begin() as connection:
                result = await connection.execute(delete(tokens).where(self._valid(user_id, token)))
        return bool(result.rowcount)

    async def revoke_all(self, user_id: str) -> bool:
        with sql_errors("delete a token"):
            async with self._engine.begin() as connection:
                result = await connection.execute(delete(tokens).where(tokens.c.user_id == user_id))
        return bool(result.rowcount)


class SqlStorage:
    """The readiness probe: does the database answer ``SELECT 1``?"""

    PING_TIMEOUT_S = 2.0

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.PING_TIMEOUT_S):
                async with self._engine.connect() as connection:
                    await connection.execute(select(literal(1)))
            return True
        except (*SQL_ERRORS, TimeoutError) as exc:
            logger.warning("the database does not answer: %s", describe(exc))
            return False
