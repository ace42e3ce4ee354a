"""Serve fastim with a JoinPolicy that decides who may join which group, instead of letting anyone join anything.

Run it like ``fastim serve`` (same settings file, environment and defaults):

    python examples/join_policy.py

Groups whose id starts with ``public-`` are open to everyone; any other group
only to the users invited to it. With ``[im] auto_join = 1`` (the default) the
policy is asked when a chat socket opens a group the user has not joined and
before a history read; with ``auto_join = 0`` only members get in and
``/user/joinGroup`` is the one way in, through the policy.
"""

from __future__ import annotations

import sys

from dependency_injector import providers

from fastim.cli import serve_with

OPEN_PREFIX = "public-"


class InviteOnly:
    """A JoinPolicy: ``public-*`` groups for all, the others for their invited users."""

    def __init__(self, invited: dict[str, set[str]]) -> None:
        self._invited = invited  # groupId -> userIds; in production: your database or your API

    async def may_join(self, user_id: str, group_id: str) -> bool:
        return group_id.startswith(OPEN_PREFIX) or user_id in self._invited.get(group_id, set())


DEMO_INVITES = {"vip": {"1", "2"}}


def use_invitations(container) -> None:
    container.join_policy.override(providers.Singleton(InviteOnly, DEMO_INVITES))


if __name__ == "__main__":
    sys.exit(serve_with(use_invitations))
