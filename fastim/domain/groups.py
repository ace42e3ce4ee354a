"""The Groups service: memberships and the group-list view of a user."""

from __future__ import annotations

from fastim.domain.errors import NotAMember
from fastim.domain.model import GroupSummary
from fastim.domain.ports import MembershipRepository, MessageRepository


class Groups:
    def __init__(
        self,
        memberships: MembershipRepository,
        messages: MessageRepository,
        *,
        auto_join: bool,
    ) -> None:
        self._memberships = memberships
        self._messages = messages
        self._auto_join = auto_join

    async def join(self, user_id: str, group_id: str) -> None:
        await self._memberships.join(user_id, group_id)

    async def groups_of(self, user_id: str) -> list[str]:
        return await self._memberships.groups_of(user_id)

    async def enter(self, user_id: str, group_id: str) -> None:
        """Admit the user to a chat room: join it with ``auto_join``, else require membership."""
        if self._auto_join:
            await self._memberships.join(user_id, group_id)
        elif not await self._memberships.is_member(user_id, group_id):
            raise NotAMember(f"user {user_id} has not joined group {group_id}")

    async def summaries(self, user_id: str) -> list[GroupSummary]:
        """Newest message and total of every group the user joined."""
        group_ids = await self._memberships.groups_of(user_id)
        if not group_ids:
            return []
        return await self._messages.summaries(group_ids)
