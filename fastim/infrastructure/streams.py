"""What both storage adapters share about a group's stream: epochs, and telling whether a tail is whole."""

from __future__ import annotations

from collections.abc import Sequence

from fastim.domain.model import Event, Message, Recall, epoch_of, parse_message_id

# An epoch is this many random bytes, in hex: 8 characters, and a restart colliding with the
# epoch before it is a one-in-four-billion chance.
EPOCH_BYTES = 4


def accounted_tail(
    messages: Sequence[Message], recalls: Sequence[Recall], since: int, latest: int, epoch: str
) -> tuple[list[Event], bool]:
    """The events of ``epoch`` after ``since`` among the newest messages and recall events, oldest first,
    and whether every seq from ``since + 1`` to ``latest`` is accounted for: by a message, by a recall
    event, or by a recall event that names the message it removed."""
    events: list[Event] = [
        event for event in (*messages, *recalls)
        if event.seq is not None and since < event.seq <= latest and epoch_of(event) == epoch
    ]
    events.sort(key=lambda event: event.seq)
    accounted = {event.seq for event in events}
    for recall in recalls:
        recalled = parse_message_id(recall.id) if recall.id is not None else None
        if recalled is not None and recalled[0] == epoch:
            accounted.add(recalled[1])
    complete = all(seq in accounted for seq in range(since + 1, latest + 1))
    return events, complete
