"""The default JoinPolicy: anyone may join any group, as in fast-im."""


class AllowAnyJoin:
    """fast-im's rule: every user may join every group.

    Replace it through the container (``container.join_policy.override``) to
    decide who may join what; with ``[im] auto_join = 0`` membership then also
    guards every chat socket and history read.
    """

    async def may_join(self, user_id: str, group_id: str) -> bool:
        return True
