// A socket that comes back by itself: reconnects with capped exponential backoff and jitter,
// unless the user closed it or the server refused it for a reason that retrying cannot fix.

// 0.25 s doubling to 5 s: a restarting node is back within a second or two, and a page waits at most
// 5 s after that; the jitter spreads a node's clients, who all lost it at the same moment.
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;
// Attempts in a row without an answer before the page stops trying (about an hour at the cap).
const GIVE_UP_AFTER = 720;
// Close codes after which reconnecting cannot help until the user acts (bad id, not a member, login ended).
const FINAL_CLOSES = new Set([4400, 4403, 4440]);

// onState(state, event, detail) is told:
//   "connecting"   the first connection is being made
//   "open"         the socket is open (the server's first frame is still to come)
//   "retrying"     it closed unexpectedly (event: the CloseEvent); detail {attempt, delayMs} says when it tries again
//   "reconnecting" a new attempt has started
//   "refused"      the server closed it with a final code (event); no more attempts
//   "offline"      GIVE_UP_AFTER attempts in a row failed; no more attempts
// `url` may be a function: it is asked again for each connection (a chat socket resumes where it stopped).
export class Link {
  constructor(url, { onFrame, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.retryMs = RETRY_MIN_MS;
    this.attempt = 0; // failed attempts since the server last answered
    this.stopped = false;
    this.timer = null;
    this.socket = null;
    this.connect();
  }

  connect() {
    this.onState(this.attempt === 0 ? "connecting" : "reconnecting", null, null);
    let socket;
    try {
      socket = this.socket = new WebSocket(typeof this.url === "function" ? this.url() : this.url);
    } catch (error) { // a malformed address: no attempt can fix it
      this.stopped = true;
      this.onState("refused", { code: 0, reason: error.message }, null);
      return;
    }
    socket.addEventListener("open", () => {
      if (socket === this.socket) this.onState("open", null, null);
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return; // a socket we left: its frames are stale
      // The server answered, so it serves us: the next loss starts the backoff afresh. (An open that the
      // server closes before any frame, like 1013 at open, keeps backing off.)
      this.attempt = 0;
      this.retryMs = RETRY_MIN_MS;
      this.onFrame(String(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket || this.stopped) return;
      if (FINAL_CLOSES.has(event.code)) {
        this.stopped = true;
        this.onState("refused", event, null);
        return;
      }
      this.attempt += 1;
      if (this.attempt > GIVE_UP_AFTER) {
        this.stopped = true;
        this.onState("offline", event, { attempt: this.attempt - 1 });
        return;
      }
      const delayMs = Math.round(this.retryMs / 2 + Math.random() * (this.retryMs / 2));
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      this.timer = setTimeout(() => this.connect(), delayMs);
      this.onState("retrying", event, { attempt: this.attempt, delayMs });
    });
  }

  send(text) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(text);
    return true;
  }

  // Closed by the user (or the page): never reconnects.
  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, "left");
  }
}
