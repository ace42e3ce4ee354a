"""Every Redis key and channel name of SPEC §3, in one place: fast-im's layout, and its cluster form.

On one Redis (alone or behind Sentinel) the names are fast-im's, byte for
byte, so a Java node reads and writes the same keys: ``gml:g1``,
``login:u1``. On a Redis Cluster every key and channel of one group must
share a hash slot, so that a script touches one slot and a group's channel
lives on the shard that stores it: the group id is wrapped in a hash tag,
``gml:{g1}``, ``fastim:stream:{g1}``, ``mq:{g1}``. Keys of one user (token,
group set) are single-key operations and keep their plain names.
"""

from __future__ import annotations

from dataclasses import dataclass

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
# Presence: a group's live nodes (a sorted set: node id -> lease deadline), each node's users there
# (a hash: user id -> open sockets) and the group's count of distinct users online. The node id
# comes before the group id, so that no group id can make one group's key another's.
PRESENCE_PREFIX = "fastim:presence:"
PRESENCE_NODE_PREFIX = "fastim:presence-node:"
ONLINE_PREFIX = "fastim:online:"
# A group id that starts with "}" would close the hash tag at once ("{}" is no tag: Redis would
# hash the whole name, and the group's keys would land in different slots). Such ids get this
# in front inside the tag; no id contains "/" (fastim.domain.ids), so no other group's tag can
# be the same text.
_TAG_GUARD = "/"


@dataclass(frozen=True)
class Layout:
    """Names of keys and channels: fast-im's (``cluster=False``) or hash-tagged by group (``cluster=True``)."""

    cluster: bool = False

    @property
    def publish(self) -> str:
        """The command that publishes a group's events: sharded pub/sub on a cluster."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    def _group(self, group_id: str) -> str:
        if not self.cluster:
            return group_id
        return "{" + (_TAG_GUARD + group_id if group_id.startswith("}") else group_id) + "}"

    def token(self, user_id: str) -> str:
        """The string holding the user's login token."""
        return f"{TOKEN_PREFIX}{user_id}"

    def memberships(self, user_id: str) -> str:
        """The set of the groups the user joined."""
        return f"{MEMBERSHIP_PREFIX}{user_id}"

    def messages(self, group_id: str) -> str:
        """The list of the group's messages, oldest first."""
        return MESSAGES_PREFIX + self._group(group_id)

    def stream(self, group_id: str) -> str:
        """The hash holding the epoch and the latest seq of the group's stream."""
        return STREAM_PREFIX + self._group(group_id)

    def recalls(self, group_id: str) -> str:
        """The list of the group's newest recall events, oldest first."""
        return RECALLS_PREFIX + self._group(group_id)

    def presence(self, group_id: str) -> str:
        """The sorted set of the nodes with users online in the group, scored by their lease deadline (ms)."""
        return PRESENCE_PREFIX + self._group(group_id)

    def presence_node(self, group_id: str, node_id: str) -> str:
        """The hash of one node's users online in the group and their open sockets there."""
        return self.presence_node_prefix + node_id + self.presence_node_suffix(group_id)

    @property
    def presence_node_prefix(self) -> str:
        """What comes before the node id in :meth:`presence_node`."""
        return PRESENCE_NODE_PREFIX

    def presence_node_suffix(self, group_id: str) -> str:
        """What follows the node id in :meth:`presence_node` (scripts build other nodes' keys from it)."""
        return ":" + self._group(group_id)

    def online(self, group_id: str) -> str:
        """The number of distinct users online in the group."""
        return ONLINE_PREFIX + self._group(group_id)

    def channel(self, group_id: str) -> str:
        """The pub/sub channel carrying the group's events."""
        return CHANNEL_PREFIX + self._group(group_id)

    def group_of_channel(self, name: str | bytes) -> str | None:
        """The group id of a channel name, or ``None`` when it is not a group channel of this layout."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", errors="replace")
        if not name.startswith(CHANNEL_PREFIX):
            return None
        group = name[len(CHANNEL_PREFIX):]
        if self.cluster:
            if len(group) < 3 or group[0] != "{" or group[-1] != "}":
                return None
            group = group[1:-1]
            if group.startswith(_TAG_GUARD + "}"):
                group = group[len(_TAG_GUARD):]
        return group or None


STANDALONE = Layout(cluster=False)
CLUSTER = Layout(cluster=True)
