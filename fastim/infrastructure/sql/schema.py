"""The SQL schema (SQLite and PostgreSQL), versioned: each migration is a list of statements, run once, in order.

A team reads its history here, top to bottom; ``fastim_schema`` holds the
version a database is at, and a node migrates it on start (in one
transaction per step; two nodes starting together serialize on the version
row). Times are integer milliseconds since the epoch; ``expires_at`` NULL
means "never".

- ``fastim_streams``: one row per group: its epoch, latest seq, live message
  count and expiry (renewed by every event, as fast-im's list TTL is).
- ``fastim_messages``: the group's messages by seq; a recall deletes the row.
  The primary key (group_id, seq) serves every history read in O(page);
  (group_id, ts) serves the anchor search of ``listOldMessage``.
- ``fastim_recalls``: the newest recall events of each group (for resumes).
- ``fastim_memberships``: the groups of each user.
- ``fastim_tokens``: one login token per user, with its expiry.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, MetaData, PrimaryKeyConstraint, String, Table

metadata = MetaData()

schema_version = Table(
    "fastim_schema", metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

streams = Table(
    "fastim_streams", metadata,
    Column("group_id", String(128), primary_key=True),
    Column("epoch", String(16), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Index("fastim_streams_expiry", "expires_at"),
)

messages = Table(
    "fastim_messages", metadata,
    Column("group_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("epoch", String(16), nullable=False),
    Column("user_id", String(128), nullable=False),
    # The client's text as UTF-8 bytes: PostgreSQL's TEXT refuses NUL, which a WebSocket text frame may hold.
    Column("info", LargeBinary, nullable=False),
    Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("group_id", "seq", name="fastim_messages_pk"),
    Index("fastim_messages_by_ts", "group_id", "ts"),
)

recalls = Table(
    "fastim_recalls", metadata,
    Column("group_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("epoch", String(16), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("message_id", String(64)),
    PrimaryKeyConstraint("group_id", "seq", name="fastim_recalls_pk"),
)

memberships = Table(
    "fastim_memberships", metadata,
    Column("user_id", String(128), nullable=False),
    Column("group_id", String(128), nullable=False),
    PrimaryKeyConstraint("user_id", "group_id", name="fastim_memberships_pk"),
)

tokens = Table(
    "fastim_tokens", metadata,
    Column("user_id", String(128), primary_key=True),
    Column("token", String(256), nullable=False),
    Column("expires_at", BigInteger),
    Index("fastim_tokens_expiry", "expires_at"),
)

# Version -> the tables that step creates. Later steps add to this list (an ALTER is a step too);
# a step never changes once released.
MIGRATIONS: list[tuple[int, str, list[Table]]] = [
    (1, "streams, messages, recall events, memberships, tokens", [streams, messages, recalls, memberships, tokens]),
]
LATEST = MIGRATIONS[-1][0]
