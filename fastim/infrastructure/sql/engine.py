"""The database of the SQL storage: the engine for a ``sqlite://`` or ``postgresql://`` URL, and its migration.

SQLite runs in WAL mode with ``synchronous = NORMAL``: a commit is durable
once the WAL is checkpointed or the OS flushes it, and survives a process
killed with SIGKILL (the WAL is in the file system); readers never wait for
the writer. Every SQLite call runs in aiosqlite's thread, PostgreSQL's on
asyncpg: the event loop never blocks on the database.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, insert, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from fastim.domain.errors import StorageUnavailable
from fastim.infrastructure.sql import schema

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5.0
# Two nodes migrating one PostgreSQL database at once take turns on this lock.
_MIGRATION_LOCK = zlib.crc32(b"fastim-schema")


def driver_url(url: str) -> str:
    """The SQLAlchemy URL with fastim's drivers: aiosqlite for ``sqlite://``, asyncpg for ``postgresql://``."""
    if re.match(r"^sqlite(\+aiosqlite)?://", url):
        return re.sub(r"^sqlite(\+aiosqlite)?://", "sqlite+aiosqlite://", url)
    if re.match(r"^postgres(ql)?(\+asyncpg)?://", url):
        return re.sub(r"^postgres(ql)?(\+asyncpg)?://", "postgresql+asyncpg://", url)
    raise ValueError("not a sqlite:// or postgresql:// URL")


def make_engine(url: str) -> AsyncEngine:
    """An engine for ``url``; it connects lazily."""
    full = driver_url(url)
    if full.startswith("sqlite"):
        engine = create_async_engine(full, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        full, pool_pre_ping=True, pool_size=10, max_overflow=10,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": CONNECT_TIMEOUT_S * 2},
    )


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


async def migrate(engine: AsyncEngine) -> int:
    """Bring the schema to :data:`schema.LATEST`, one versioned step at a time; the version it is at."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await connection.run_sync(schema.metadata.create_all, tables=[schema.schema_version])
        version = await _version(connection)
        for step, description, tables in schema.MIGRATIONS:
            if step <= version:
                continue
            logger.info("migrating the database schema to version %d: %s", step, description)
            await connection.run_sync(schema.metadata.create_all, tables=tables)
            if version == 0:
                await connection.execute(insert(schema.schema_version).values(id=1, version=step))
            else:
                await connection.execute(update(schema.schema_version).where(schema.schema_version.c.id == 1)
                                         .values(version=step))
            version = step
        return version


async def _version(connection: AsyncConnection) -> int:
    row = (await connection.execute(select(schema.schema_version.c.version).where(schema.schema_version.c.id == 1))).first()
    return int(row[0]) if row else 0


# What a failed database call can raise: SQLAlchemy's errors (the drivers' are wrapped in
# them), and the socket errors and timeouts that escape while connecting.
SQL_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, OSError, TimeoutError)


@contextmanager
def sql_errors(operation: str) -> Iterator[None]:
    """Re-raise a database failure inside the block as :class:`StorageUnavailable`, naming the operation."""
    try:
        yield
    except SQL_ERRORS as exc:
        raise StorageUnavailable(f"database {operation} failed: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """One line: the driver's own message when SQLAlchemy wraps one, never the statement or its parameters."""
    original = getattr(exc, "orig", None) or exc
    text_ = " ".join(str(original).split()) or type(original).__name__
    return f"{type(original).__name__}: {text_[:300]}"
