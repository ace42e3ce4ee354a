// A group's stream as the page sees it: every message and recall takes the group's next seq, a message's id
// is `{epoch}-{seq}`, and a new epoch means the numbering restarted. The page resumes from the last event it
// saw and shows messages in seq order, whatever order they reached it in.

// The seq of an event, or null (messages stored by fast-im's own nodes have none).
export function seqOf(event) {
  return Number.isInteger(event.seq) && event.seq >= 0 ? event.seq : null;
}

// The epoch of an event's stream, or null: a recall event names it; a message's id begins with it.
export function epochOf(event) {
  if (typeof event.epoch === "string") return event.epoch;
  const seq = seqOf(event);
  if (typeof event.id !== "string" || seq === null) return null;
  const suffix = `-${seq}`;
  return event.id.endsWith(suffix) && event.id.length > suffix.length ? event.id.slice(0, -suffix.length) : null;
}

// The last event seen of one group's stream: what a reconnecting chat socket asks to resume from.
export class StreamPosition {
  constructor() {
    this.at = null; // {since, epoch}, or null before the opening frame
  }

  reset() {
    this.at = null;
  }

  // The opening frame says where the stream stands ("" is the epoch of a stream not started yet).
  opened(seq, epoch) {
    this.at = Number.isInteger(seq) && seq >= 0 && typeof epoch === "string" ? { since: seq, epoch } : null;
  }

  // A live event moves the position forward; one of a new epoch (the stream restarted) starts it again.
  passed(event) {
    const seq = seqOf(event);
    if (this.at === null || seq === null) return;
    const epoch = epochOf(event) ?? this.at.epoch;
    if (epoch !== this.at.epoch || seq > this.at.since) this.at = { since: seq, epoch };
  }
}

// The data attributes that place a message's item in its stream.
export function streamData(message) {
  const seq = seqOf(message);
  const epoch = epochOf(message);
  return seq === null || epoch === null ? {} : { seq: String(seq), epoch };
}

// Insert an item after the last shown item of its stream with a smaller seq (at the end, usually). Items
// without a seq, and items of another epoch, are not reordered: they stay in the order they arrived.
export function placeInOrder(box, item) {
  const { seq, epoch } = item.dataset;
  let before = null;
  let node = box.lastElementChild;
  while (seq !== undefined && node && node.dataset.epoch === epoch && Number(node.dataset.seq) > Number(seq)) {
    before = node;
    node = node.previousElementSibling;
  }
  box.insertBefore(item, before);
}
