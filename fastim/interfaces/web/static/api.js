// The HTTP API (form posts, envelopes) and the socket addresses of this server.

export class Api {
  // The server's root, derived from where this page was loaded, so the page
  // works behind a proxy that mounts the node under a prefix.
  constructor(pageUrl = location.href) {
    this.root = new URL("..", pageUrl);
    this.session = null; // {userId, token} after a login
  }

  // POST form fields; resolves to the envelope {code, msg, data}, whatever the HTTP status.
  async call(path, fields = {}) {
    const headers = {};
    if (this.session) {
      headers.userId = this.session.userId;
      headers.token = this.session.token;
    }
    let response;
    try {
      response = await fetch(new URL(path.replace(/^\//, ""), this.root), {
        method: "POST",
        headers,
        body: new URLSearchParams(fields), // application/x-www-form-urlencoded
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      return { code: 0, msg: `the server could not be reached (${error.message})`, data: null };
    }
    try {
      const envelope = await response.json();
      if (envelope && typeof envelope === "object" && Number.isInteger(envelope.code)) return envelope;
    } catch (error) {
      // fall through: not an envelope
    }
    return { code: response.status, msg: response.statusText || "not a JSON envelope", data: null };
  }

  // fast-im returns the token in msg.
  async login(userId, password) {
    const envelope = await this.call("/user/login", { userId, password });
    if (envelope.code === 200) this.session = { userId, token: envelope.msg };
    return envelope;
  }

  // Forget the session here; endSession() also ends it on the server (its sockets close with 4440).
  logout() {
    this.session = null;
  }

  async endSession() {
    if (this.session) await this.call("/user/logout");
    this.session = null;
  }

  joinGroup(groupId) {
    return this.call("/user/joinGroup", { groupId });
  }

  // Recall by id when the message has one (every message this server stored), else by ts as fast-im does.
  recall(message) {
    const fields = { groupId: String(message.groupId) };
    if (typeof message.id === "string") fields.id = message.id;
    else fields.ts = String(message.ts);
    return this.call("/group/delMessage", fields);
  }

  olderThan(groupId, userId, ts, count) {
    return this.call("/group/listOldMessage", { groupId, userId, ts: String(ts), count: String(count) });
  }

  socketUrl(...segments) {
    const url = new URL(segments.map(encodeURIComponent).join("/"), this.root);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  // With resume = {since, epoch}, the server sends every event after seq `since` (if it still can).
  chatUrl(groupId, userId, token, resume = null) {
    const url = new URL(this.socketUrl("group", "chat", groupId, userId, token));
    if (resume) {
      url.searchParams.set("since", String(resume.since));
      url.searchParams.set("epoch", resume.epoch);
    }
    return url.href;
  }

  listUrl(userId, token) {
    return this.socketUrl("group", "list", userId, token);
  }
}

// Message lists in envelopes are JSON strings (fast-im's format); a bad one is skipped.
export function parseMessages(strings) {
  const messages = [];
  for (const text of strings || []) {
    try {
      const message = JSON.parse(text);
      if (isMessage(message)) messages.push(message);
    } catch (error) {
      // not a message: skipped
    }
  }
  return messages;
}

export function isRecall(data) {
  return data !== null && typeof data === "object" && data.event === "recall";
}

export function isMessage(data) {
  return data !== null && typeof data === "object" && !Array.isArray(data)
    && typeof data.info === "string" && data.userId !== undefined && Number.isFinite(data.ts);
}
