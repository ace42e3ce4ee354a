"""Throw-away SQL databases for the tests: a SQLite file per test, a PostgreSQL database per test run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid

import asyncpg

# The machines' PostgreSQL (trust auth); FASTIM_TEST_POSTGRES_URL points elsewhere.
POSTGRES_ADMIN_URL = os.environ.get("FASTIM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CONNECT_TIMEOUT_S = 5.0


def postgres_required() -> bool:
    return os.environ.get("FASTIM_REQUIRE_POSTGRES", "") not in ("", "0")


class PostgresDatabase:
    """A database of its own on the PostgreSQL server, created for the run and dropped after it."""

    def __init__(self, admin_url: str = POSTGRES_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"fastim_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        base = admin_url.rpartition("/")[0]
        self.url = f"{base}/{self.name}"

    def create(self) -> None:
        _run_aside(self._admin(f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        _run_aside(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_url, timeout=CONNECT_TIMEOUT_S)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def truncate(self) -> None:
        """Empty fastim's tables (the schema stays)."""
        connection = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'fastim_%' AND tablename <> 'fastim_schema'")
            if tables:
                await connection.execute("TRUNCATE " + ", ".join(f'"{row[0]}"' for row in tables))
        finally:
            await connection.close()


def _run_aside(coroutine) -> None:
    """Run ``coroutine`` on a loop of its own in another thread: this thread's loop (a test's) is left alone."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def postgres_reachable(admin_url: str = POSTGRES_ADMIN_URL) -> str | None:
    """None when the server answers; else why not."""
    async def ping() -> None:
        connection = await asyncpg.connect(admin_url, timeout=CONNECT_TIMEOUT_S)
        await connection.close()

    try:
        _run_aside(ping())
    except Exception as exc:  # noqa: BLE001 - any failure means: not reachable
        return f"{type(exc).__name__}: {exc}"
    return None
