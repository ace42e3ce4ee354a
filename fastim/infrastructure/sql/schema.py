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
- ``fastim_presence``: each node's users online in each group, with their open sockets there.
- ``fastim_presence_nodes``: each node's lease in each group where it has users; its rows count
  while the lease lives. (group_id, user_id) serves "is this user online elsewhere".
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

presence = Table(
    "fastim_presence", metadata,
    Column("group_id", String(128), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("user_id", String(128), nullable=False),
    Column("sockets", Integer, nullable=False),
    PrimaryKeyConstraint("group_id", "node_id", "user_id", name="fastim_presence_pk"),
    Index("fastim_presence_by_user", "group_id", "user_id"),
)

presence_nodes = Table(
    "fastim_presence_nodes", metadata,
    Column("group_id", String(128), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("group_id", "node_id", name="fastim_presence_nodes_pk"),
    Index("fastim_presence_nodes_expiry", "expires_at"),
)

# Version -> the tables that step creates. Later steps add to this list (an ALTER is a step too);
# a step never changes once released.
MIGRATIONS: list[tuple[int, str, list[Table]]] = [
    (1, "streams, messages, recall events, memberships, tokens", [streams, messages, recalls, memberships, tokens]),
    (2, "presence: each node's users online per group, and its lease there", [presence, presence_nodes]),
]
LATEST = MIGRATIONS[-1][0]
