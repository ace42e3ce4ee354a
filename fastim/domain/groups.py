"""The Groups service: memberships, who may join what, and the group-list view of a user."""

from __future__ import annotations

from fastim.domain.errors import JoinRefused, NotAMember, TooManyGroups
from fastim.domain.model import GroupSummary, Joined
from fastim.domain.ports import JoinPolicy, MembershipRepository, MessageRepository


class Groups:
    def __init__(
        self,
        memberships: MembershipRepository,
        messages: MessageRepository,
        policy: JoinPolicy,
        *,
        auto_join: bool,
        max_groups: int = 0,
    ) -> None:
        self._memberships = memberships
        self._messages = messages
        self._policy = policy
        self._auto_join = auto_join
        self._max_groups = max_groups  # [im] max_groups_per_user; 0: no limit

    async def join(self, user_id: str, group_id: str) -> bool:
        """Join the group if the policy allows and the user has room; whether the user was not a member yet."""
        if not await self._policy.may_join(user_id, group_id):
            raise JoinRefused(f"user {user_id} may not join group {group_id}")
        outcome = await self._memberships.join(user_id, group_id, self._max_groups)
        if outcome is Joined.FULL:
            raise TooManyGroups(f"a user may join at most {self._max_groups} groups; leave one first")
        return outcome is Joined.ADDED

    async def leave(self, user_id: str, group_id: str) -> bool:
        return await self._memberships.leave(user_id, group_id)

    async def groups_of(self, user_id: str) -> list[str]:
        return await self._memberships.groups_of(user_id)

    async def count_of(self, user_id: str) -> int:
        return await self._memberships.count(user_id)

    async def enter(self, user_id: str, group_id: str) -> None:
        """Admit the user to a chat room: join it with ``auto_join``, else require membership."""
        if self._auto_join:
            try:
                await self.join(user_id, group_id)
            except JoinRefused:
                if not await self._memberships.is_member(user_id, group_id):
                    raise  # a member who joined before the policy changed keeps the room
        elif not await self._memberships.is_member(user_id, group_id):
            raise NotAMember(f"user {user_id} has not joined group {group_id}")

    async def require_access(self, user_id: str, group_id: str) -> None:
        """Reading a group's history takes what opening its chat socket takes.

        With ``auto_join`` a user who may join may read (fast-im: anyone reads);
        without it, only members.
        """
        if self._auto_join and await self._policy.may_join(user_id, group_id):
            return
        if not await self._memberships.is_member(user_id, group_id):
            raise NotAMember(f"user {user_id} has not joined group {group_id}")

    async def summaries(self, user_id: str) -> list[GroupSummary]:
        """Newest message and total of every group the user joined."""
        return await self.summaries_of(await self._memberships.groups_of(user_id))

    async def summaries_of(self, group_ids: list[str]) -> list[GroupSummary]:
        """Newest message and total of each group, in the given order."""
        if not group_ids:
            return []
        return await self._messages.summaries(group_ids)
