"""fastim's asyncio client SDK: log in, read history, chat with acked sends, and resume without loss.

::

    async with Client("http://127.0.0.1:9000") as client:
        await client.login("1", "123456")
        chat = await client.chat("7")
        await chat.send("hello")          # returns once the node stored it
        async for event in chat:          # every message once, in order, across reconnects
            if isinstance(event, Message):
                print(event.user_id, event.info)
"""

from fastim.client.backoff import Backoff, BackoffPolicy
from fastim.client.chat import Chat
from fastim.client.client import Client, History
from fastim.client.errors import (
    ApiError,
    BadAnswer,
    BadRequest,
    ConnectionLost,
    FastimError,
    FinalClose,
    LoginEnded,
    LoginRefused,
    NotAllowed,
    NotSent,
    PolicyViolation,
    SendError,
    Unreachable,
)
from fastim.client.events import (
    ChatEvent,
    Disconnected,
    GroupEntry,
    GroupList,
    Joined,
    Left,
    ListEvent,
    Message,
    NotRecovered,
    Notice,
    Opened,
    Presence,
    Recall,
)
from fastim.client.group_list import GroupListStream
from fastim.client.stream import StreamOptions

__all__ = [
    "ApiError", "Backoff", "BackoffPolicy", "BadAnswer", "BadRequest", "Chat", "ChatEvent", "Client",
    "ConnectionLost", "Disconnected", "FastimError", "FinalClose", "GroupEntry", "GroupList", "GroupListStream",
    "History", "Joined", "Left", "ListEvent", "LoginEnded", "LoginRefused", "Message", "NotAllowed", "NotRecovered",
    "NotSent", "Notice", "Opened", "PolicyViolation", "Presence", "Recall", "SendError", "StreamOptions",
    "Unreachable",
]
