"""The user's group list: ``/group/list/{userId}/{token}``, each push a :class:`GroupList`, kept open."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from fastim.client import parsing
from fastim.client.events import GroupList, ListEvent, Notice
from fastim.client.stream import Stream, StreamOptions


class GroupListStream(Stream[ListEvent]):
    """Yields a :class:`GroupList` on open (again after every reconnect) and whenever one of the groups changes.

    Each push is the whole list, so a consumer that falls behind loses nothing
    that matters: when the buffer is full the oldest buffered event makes room
    for the newest. Also yields :class:`Disconnected` and :class:`Notice`.
    """

    def __init__(self, ws_base: str, credentials: Callable[[], tuple[str, str]], options: StreamOptions) -> None:
        super().__init__(ws_base, options)
        self._credentials = credentials

    def path(self) -> str:
        user_id, token = self._credentials()
        return f"/group/list/{quote(user_id, safe='')}/{quote(token or '-', safe='')}"

    def on_text(self, text: str) -> None:
        try:
            pushed = parsing.group_list(text)
        except parsing.Malformed as exc:
            self._refused(text, exc)
            return
        if isinstance(pushed, GroupList):
            self.replace_oldest(pushed)
            self.opened()

    def _refused(self, text: str, exc: parsing.Malformed) -> None:
        """Not a list: an error frame (503 at open, 405 to a frame sent here) is a :class:`Notice`; else skipped."""
        try:
            data = parsing.load(text)
            error = parsing.error_frame(data) if isinstance(data, dict) else None
        except parsing.Malformed:
            error = None
        if error is None:
            self.skip(f"a malformed group list ({exc})")
        else:
            self.notify(Notice(error.code, error.msg))
