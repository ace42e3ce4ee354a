"""Where a chat stream stands, by (epoch, seq): what to resume from, and which events were already yielded.

A group's events (messages and recalls) are numbered 1, 2, 3, ... within an
epoch; a new epoch restarts the numbering. Across reconnects the node may send
an event again (a resume that did not recover lists the newest page), and a
slow node may still forward events of an epoch that has ended: the cursor lets
each event through once, in order.
"""

from __future__ import annotations

from collections import deque

from fastim.client.events import Message, Recall

# Epochs that ended, kept to drop their stragglers; a group's stream restarts rarely (expiry, data loss).
RETIRED_EPOCHS = 8


class Cursor:
    """The last (epoch, seq) yielded; decides whether an event is new."""

    __slots__ = ("epoch", "seq", "retired")

    def __init__(self, epoch: str | None = None, seq: int | None = None) -> None:
        self.epoch = epoch
        self.seq = seq
        self.retired: deque[str] = deque(maxlen=RETIRED_EPOCHS)

    @property
    def started(self) -> bool:
        return self.seq is not None

    def resume_query(self) -> dict[str, str]:
        """``since`` and ``epoch`` for the chat URL; empty before anything was seen."""
        if self.seq is None:
            return {}
        query = {"since": str(self.seq)}
        if self.epoch:
            query["epoch"] = self.epoch
        return query

    def admit(self, event: Message | Recall) -> bool:
        """Whether ``event`` is new (and if so, move past it). Events without seq (fast-im's) always are."""
        if event.seq is None:
            return True
        epoch = event.epoch
        if epoch is not None and self.epoch is not None and epoch != self.epoch:
            if epoch in self.retired:
                return False  # a straggler of a stream that has restarted since
            self._restart(epoch)
        elif self.seq is not None and event.seq <= self.seq:
            return False
        self.seq = event.seq
        if epoch is not None:
            self.epoch = epoch
        return True

    def begin(self, epoch: str, seq: int) -> None:
        """An opening frame says the stream stands at (epoch, seq): a restarted stream makes every event new.

        Restarted: another epoch, or the same one numbered lower than what was
        seen (the storage went back).
        """
        if self.seq is not None and ((epoch and self.epoch and epoch != self.epoch) or seq < self.seq):
            self._restart(epoch or None)

    def settle(self, epoch: str, seq: int) -> None:
        """Every event the opening frame listed was let through: live events continue from ``seq + 1``."""
        if epoch:
            self.epoch = epoch
        self.seq = seq if self.seq is None else max(self.seq, seq)

    def _restart(self, epoch: str | None) -> None:
        """A new stream: the old epoch is retired and the numbering starts again."""
        if self.epoch is not None and self.epoch != epoch:
            self.retired.append(self.epoch)
        self.epoch = epoch
        self.seq = None
