"""The SDK in a few lines: log in, send a message, and read the group until its echo comes back.

    python examples/sdk_chat.py [http://127.0.0.1:9000 [GROUP [USER]]]
"""

import asyncio
import sys

from fastim.client import Client, Message, NotRecovered, Recall, SendError


async def main(url: str, group: str, user: str) -> None:
    async with Client(url) as client:
        await client.login(user, "123456")
        chat = await client.chat(group)  # reconnects and resumes by itself
        try:
            stored = await chat.send("hello")  # returns once the node stored it
        except SendError as error:  # 413 too large, 429 too fast, 503 not stored, ...
            sys.exit(f"not sent: {error.code} {error.msg}")
        async for event in chat:  # every message once, in order, across reconnects
            if isinstance(event, Message):
                print(f"<{event.user_id}> {event.info}  (seq {event.seq})")
                if event.id == stored.id:
                    break
            elif isinstance(event, Recall):
                print(f"* {event.user_id} recalled a message")
            elif isinstance(event, NotRecovered):  # away too long: re-read what matters
                print(len((await client.history(group)).messages), "messages in history")


if __name__ == "__main__":
    given, defaults = sys.argv[1:4], ["http://127.0.0.1:9000", "1", "1"]
    asyncio.run(main(*given, *defaults[len(given):]))
