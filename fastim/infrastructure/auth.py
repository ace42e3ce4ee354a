"""The default Authenticator: any password is accepted, as in fast-im."""


class AcceptAnyPassword:
    """fast-im's default login: every (userId, password) gets a token.

    Replace it through the container (``container.authenticator.override``)
    with a check against your own user store before going to production.
    """

    async def authenticate(self, user_id: str, password: str) -> bool:
        return True
