"""``fastim chat``, ``fastim tail`` and ``fastim send``: the SDK at a terminal and in shell scripts.

Exit statuses: 0 done (sent and acked; interrupted; end of input), 1 the node
said no (a refused send or login, a socket closed for good), 2 a usage error
(argparse's), 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, TextIO

from fastim.client.chat import Chat
from fastim.client.client import Client, ws_base_of
from fastim.client.errors import FastimError, FinalClose, SendError, Unreachable
from fastim.client.events import (
    ChatEvent,
    Disconnected,
    Joined,
    Left,
    Message,
    NotRecovered,
    Notice,
    Opened,
    Presence,
    Recall,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# An outage shorter than this (a node restarting) shows as one line, once the chat is back.
AWAY_NOTICE_S = 5.0
# The echo of one's last line follows its ack within the node's coalescing window (15 ms); 2 s is a slow node.
ECHO_WAIT_S = 2.0


def event_object(event: ChatEvent) -> dict[str, Any] | None:
    """What ``fastim tail`` prints for an event: the node's own JSON form; None for connection news."""
    if isinstance(event, Message):
        data: dict[str, Any] = {"groupId": event.group_id, "userId": event.user_id, "info": event.info, "ts": event.ts}
        if event.id is not None:
            data["id"] = event.id
        if event.seq is not None:
            data["seq"] = event.seq
        return data
    if isinstance(event, Recall):
        data = {"event": "recall", "groupId": event.group_id, "userId": event.user_id, "ts": event.ts}
        data.update({key: value for key, value in (("id", event.id), ("seq", event.seq), ("epoch", event.epoch))
                     if value is not None})
        return data
    if isinstance(event, (Joined, Left)):
        return {"event": "join" if isinstance(event, Joined) else "leave", "groupId": event.group_id,
                "userId": event.user_id}
    if isinstance(event, Presence):
        return {"event": "presence", "groupId": event.group_id, "online": event.online}
    if isinstance(event, NotRecovered):  # a script should know that events may be missing here
        return {"event": "not_recovered", "groupId": event.group_id, "since": event.since, "epoch": event.epoch,
                "newEpoch": event.new_epoch}
    return None


def clock(ts_ms: float | None = None) -> str:
    """``HH:MM:SS`` local time of a server timestamp (ms), or of now."""
    return time.strftime("%H:%M:%S", time.localtime(time.time() if ts_ms is None else ts_ms / 1000))


def chat_line(event: ChatEvent) -> str | None:
    """How ``fastim chat`` shows an event; None for what it does not show."""
    if isinstance(event, Message):
        return f"{clock(event.ts)} <{event.user_id}> {event.info}"
    if isinstance(event, Recall):
        return f"{clock(event.ts)} * {event.user_id} recalled a message"
    if isinstance(event, Joined):
        return f"{clock()} * {event.user_id} joined"
    if isinstance(event, Left):
        return f"{clock()} * {event.user_id} left"
    if isinstance(event, Presence):
        return f"{clock()} * {event.online} online"
    if isinstance(event, NotRecovered):
        return f"{clock()} -- some messages may be missing (the node no longer holds everything since seq {event.since})"
    if isinstance(event, Notice):
        return f"{clock()} ! {event.code} {event.msg}"
    return None


async def connect(args: argparse.Namespace, user_id: str) -> Client:
    """A client of ``args.url`` as ``user_id``: logged in with ``--password``, or with ``--token`` (or none: ``-``)."""
    client = Client(args.url, user_id=user_id, token=args.token)
    if args.password is not None:
        try:
            await client.login(user_id, args.password)
        except BaseException:
            await client.close()
            raise
    return client


async def send(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Send one message; print its id once the node acked it."""
    async with await connect(args, args.user) as client:
        chat = await client.chat(args.group)
        try:
            message = await chat.send(args.text)
        except SendError as exc:
            maybe = " (it may have been stored)" if exc.maybe_stored else ""
            print(f"fastim send: not sent: {exc}{maybe}", file=err)
            return EXIT_REFUSED
    print(message.id if message.id is not None else message.ts, file=out, flush=True)
    return EXIT_OK


async def tail(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print every event of the group as one JSON object per line, resuming across reconnects."""
    async with await connect(args, args.user) as client:
        chat = await client.chat(args.group)
        async for event in chat:
            data = event_object(event)
            if data is not None:
                out.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
                out.flush()
            elif isinstance(event, Disconnected) and event.attempt == 1:
                print(f"fastim tail: connection lost ({_why(event)}); reconnecting", file=err, flush=True)
    return EXIT_OK


async def chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Interactive: each line typed is sent; incoming events are shown with their time and user."""
    async with await connect(args, args.user) as client:
        room = await client.chat(args.group)
        print(f"{clock()} -- {args.user} in group {args.group} at {args.url}; Ctrl-D or Ctrl-C to leave",
              file=out, flush=True)
        shown = asyncio.get_running_loop().create_task(_show(room, out))
        sends: set[asyncio.Task[None]] = set()
        last: list[Message] = []  # the latest message stored, whose echo is shown before leaving
        loop = asyncio.get_running_loop()
        lines = _read_lines(sys.stdin)
        try:
            while True:
                reading = loop.create_task(lines.get())
                await asyncio.wait({reading, shown}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():  # the node closed the chat for good
                    reading.cancel()
                    break
                line = reading.result()
                if line is None:  # end of input: Ctrl-D
                    break
                text = line.rstrip("\r\n")
                if text.strip():
                    task = loop.create_task(_send_line(room, text, out, last))
                    sends.add(task)
                    task.add_done_callback(sends.discard)
            if sends:  # lines typed (or piped) just before the end are answered before leaving
                await asyncio.wait(sends, timeout=room.options.answer_timeout)
            if last:
                await _echoed(room, last[-1])
        finally:
            await room.close()
            status = await shown
        return status


async def _show(room: Chat, out: TextIO) -> int:
    """Print events until the chat ends; the exit status its end calls for.

    A reconnect is one status line, printed once the chat is back; an outage
    longer than :data:`AWAY_NOTICE_S` is announced once while it lasts.
    """
    loop = asyncio.get_running_loop()
    lost: Disconnected | None = None
    lost_at = 0.0
    announced = False
    try:
        async for event in room:
            if isinstance(event, Disconnected):
                if lost is None:
                    lost, lost_at, announced = event, loop.time(), False
                elif not announced and loop.time() - lost_at >= AWAY_NOTICE_S:
                    announced = True
                    print(f"{clock()} -- connection lost ({_why(lost)}); reconnecting...", file=out, flush=True)
                continue
            if isinstance(event, Opened):
                if event.resumed and lost is not None:
                    missed = "" if event.recovered else "; messages may be missing"
                    away = loop.time() - lost_at
                    print(f"{clock()} -- reconnected after {_why(lost)} (away {away:.1f} s){missed}",
                          file=out, flush=True)
                lost = None
                continue
            line = chat_line(event)
            if line is not None:
                print(line, file=out, flush=True)
    except FinalClose as exc:
        print(f"{clock()} -- {exc}", file=out, flush=True)
        return EXIT_REFUSED
    return EXIT_OK


async def _send_line(room: Chat, text: str, out: TextIO, last: list[Message]) -> None:
    try:
        stored = await room.send(text)  # the echo shows it
    except SendError as exc:
        maybe = " (it may have been stored)" if exc.maybe_stored else ""
        print(f"{clock()} ! not sent: {exc}{maybe}", file=out, flush=True)
        return
    if stored.seq is not None and (not last or stored.seq > (last[-1].seq or 0)):
        last[:] = [stored]


async def _echoed(room: Chat, stored: Message) -> None:
    """Wait (a little) until the chat has taken the echo of ``stored``, so that closing it still shows it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ECHO_WAIT_S
    while loop.time() < deadline and not room.closed:
        epoch, seq = room.position
        if epoch and epoch != stored.epoch:
            return  # the stream restarted since: its echo will not come
        if epoch == stored.epoch and seq is not None and seq >= stored.seq:
            return
        await asyncio.sleep(0.02)


def _read_lines(stream: TextIO) -> asyncio.Queue[str | None]:
    """Lines of ``stream``, then None, read by a daemon thread (a blocked read never holds the loop or the exit)."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)

    def read() -> None:
        try:
            for line in iter(stream.readline, ""):
                asyncio.run_coroutine_threadsafe(lines.put(line), loop).result()
        except (OSError, ValueError, RuntimeError):
            pass  # stdin closed, or the loop ended first
        finally:
            try:
                asyncio.run_coroutine_threadsafe(lines.put(None), loop)
            except RuntimeError:
                pass

    threading.Thread(target=read, name="fastim-chat-stdin", daemon=True).start()
    return lines


def _why(event: Disconnected) -> str:
    return f"{event.code} {event.reason}".strip() if event.code is not None else event.reason


COMMANDS: Mapping[str, Callable[[argparse.Namespace, TextIO, TextIO], Awaitable[int]]] = MappingProxyType({
    "chat": chat,
    "tail": tail,
    "send": send,
})


def run(args: argparse.Namespace) -> int:
    """Run ``fastim chat|tail|send`` until done, Ctrl-C or SIGTERM (exit 0); the exit status."""
    try:
        ws_base_of(args.url)
    except ValueError as exc:
        print(f"fastim {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_until_signalled(args))


async def _until_signalled(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    work = loop.create_task(COMMANDS[args.command](args, sys.stdout, sys.stderr))
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    stopped = loop.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stopped.cancel()
    if not work.done():
        work.cancel()  # its clients close on the way out
        await asyncio.gather(work, return_exceptions=True)
        return EXIT_OK
    prog = f"fastim {args.command}"
    try:
        return work.result()
    except Unreachable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except FastimError as exc:  # refused login, final close, a bad answer
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
