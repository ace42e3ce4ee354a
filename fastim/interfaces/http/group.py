"""``/group/*``: reading a group's messages and recalling one's own."""

from __future__ import annotations

from fastim.domain.codec import encode_message
from fastim.domain.groups import Groups
from fastim.domain.messages import Messages
from fastim.domain.model import History, Message
from fastim.interfaces.errors import CODE_OK, MSG_OK, MSG_RECALLED
from fastim.interfaces.http.base import ApiHandler, HttpContext
from fastim.interfaces.http.schemas import (
    DelMessageForm,
    ListOldMessageForm,
    MessageListEnvelope,
    RangeForm,
    list_message_form,
)


def as_strings(messages: list[Message] | None) -> list[str] | None:
    """fast-im returns messages as JSON strings inside the envelope, not as objects."""
    return None if messages is None else [encode_message(message) for message in messages]


class MessagesHandler(ApiHandler):
    """History: the caller must be allowed into the group, and one answer holds ``history_page_max`` at most."""

    envelope = MessageListEnvelope

    def initialize(self, http: HttpContext, messages: Messages, groups: Groups) -> None:
        super().initialize(http)
        self.messages = messages
        self.groups = groups

    async def history(self) -> None:
        form = self.form(ListOldMessageForm)
        self.require_granted(form["groupId"])
        await self.groups.require_access(self.caller, form["groupId"])
        self.answer(await self.messages.before(form["groupId"], form["userId"], form["ts"], form["count"]))

    def answer(self, history: History) -> None:
        if history.clipped:
            self.reply(CODE_OK, MSG_OK, as_strings(history.messages), clipped=True, limit=self.messages.page_max)
        else:
            self.ok(as_strings(history.messages))


class ListMessageHandler(MessagesHandler):
    """Messages by list index; with ``ts`` and ``count`` the history before a message instead."""

    form_schema = RangeForm

    async def post(self) -> None:
        if list_message_form(self.given()) is ListOldMessageForm:
            await self.history()
            return
        form = self.form(RangeForm)
        self.require_granted(form["groupId"])
        await self.groups.require_access(self.caller, form["groupId"])
        self.answer(await self.messages.range(form["groupId"], form["startPage"], form["endPage"]))


class ListOldMessageHandler(MessagesHandler):
    """Up to ``count`` messages just before the message (userId, ts), oldest first; null if it does not exist."""

    form_schema = ListOldMessageForm

    async def post(self) -> None:
        await self.history()


class DelMessageHandler(ApiHandler):
    """The caller recalls their own message within the recall window, named by ``ts`` or by ``id``."""

    form_schema = DelMessageForm

    def initialize(self, http: HttpContext, messages: Messages) -> None:
        super().initialize(http)
        self.messages = messages

    async def post(self) -> None:
        form = self.form(DelMessageForm)
        self.require_granted(form["groupId"])
        if "id" in form:
            await self.messages.recall(form["groupId"], self.caller, message_id=form["id"])
        else:
            await self.messages.recall(form["groupId"], self.caller, ts=form["ts"])
        self.ok(msg=MSG_RECALLED)
