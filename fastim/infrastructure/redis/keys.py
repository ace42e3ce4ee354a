"""Every Redis key and channel name of SPEC §3, in one place."""

from __future__ import annotations

# The prefixes are fast-im's; a Java node reads and writes the same names.
TOKEN_PREFIX = "login:"
MESSAGES_PREFIX = "gml:"
MEMBERSHIP_PREFIX = "ugs:"
CHANNEL_PREFIX = "mq:"
# Our own additions, under a prefix no fast-im key has: node-to-node notices (a user's token
# changed), each group's stream (its epoch and latest seq) and its recent recall events.
NOTICES_CHANNEL = "fastim:notices"
STREAM_PREFIX = "fastim:stream:"
RECALLS_PREFIX = "fastim:recalls:"


def token(user_id: str) -> str:
    """The string holding the user's login token."""
    return f"{TOKEN_PREFIX}{user_id}"


def messages(group_id: str) -> str:
    """The list of the group's messages, oldest first."""
    return f"{MESSAGES_PREFIX}{group_id}"


def stream(group_id: str) -> str:
    """The hash holding the epoch and the latest seq of the group's stream."""
    return f"{STREAM_PREFIX}{group_id}"


def recalls(group_id: str) -> str:
    """The list of the group's newest recall events, oldest first."""
    return f"{RECALLS_PREFIX}{group_id}"


def memberships(user_id: str) -> str:
    """The set of the groups the user joined."""
    return f"{MEMBERSHIP_PREFIX}{user_id}"


def channel(group_id: str) -> str:
    """The pub/sub channel carrying the group's events."""
    return f"{CHANNEL_PREFIX}{group_id}"


def group_of_channel(name: str | bytes) -> str | None:
    """The group id of a channel name, or ``None`` when it is not a group channel."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    if not name.startswith(CHANNEL_PREFIX) or len(name) == len(CHANNEL_PREFIX):
        return None
    return name[len(CHANNEL_PREFIX):]
