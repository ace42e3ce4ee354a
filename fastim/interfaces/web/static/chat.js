// The chat view: login, join, the chat socket, the group-list socket, recall and history.

import { isMessage, isRecall, parseMessages } from "./api.js";
import { byId, clock, el, fullTime, nearBottom } from "./dom.js";
import { Link } from "./link.js";
import { StreamPosition, placeInOrder, streamData } from "./stream.js";
import {
  LOGIN_REQUIRED_TEXT,
  explainClose,
  explainEnvelope,
  explainFrame,
  explainLoginRequired,
  isErrorFrame,
} from "./words.js";

const HISTORY_PAGE = 20; // messages fetched per "Load older"
const MAX_NOTICES = 6;
const INFO_NOTICE_MS = 15000; // information fades; errors stay until dismissed

export class ChatView {
  constructor(api) {
    this.api = api;
    this.groupId = null;
    this.chat = null; // Link to /group/chat/...
    this.list = null; // Link to /group/list/...
    this.listed = new Set(); // group ids in the last group-list push
    this.shown = new Map(); // a message's id (or "userId\u0000ts" without one) -> its <li>
    this.gone = new Set(); // ids of the open group's messages recalled: a late copy must not bring one back
    this.position = new StreamPosition(); // the last event seen of the open group's stream, to resume from
    this.total = 0;
    this.listeners = []; // told when the session or the open group changes
    this.nodes = Object.fromEntries(
      [
        "login-form", "login-user", "login-password", "login-button", "logout-button", "session", "notices",
        "groups", "groups-status", "join-form", "group-id", "join-button", "room-title", "room-total",
        "chat-status", "load-older", "messages-box", "messages", "send-form", "message-input", "send-button",
      ].map((id) => [id, byId(id)]),
    );
    const n = this.nodes;
    n["login-form"].addEventListener("submit", (event) => { event.preventDefault(); this.login(); });
    n["logout-button"].addEventListener("click", async () => {
      await this.api.endSession();
      this.logout();
    });
    n["join-form"].addEventListener("submit", (event) => { event.preventDefault(); this.join(n["group-id"].value.trim()); });
    n["send-form"].addEventListener("submit", (event) => { event.preventDefault(); this.send(); });
    n["load-older"].addEventListener("click", () => this.loadOlder());
  }

  onContextChange(listener) {
    this.listeners.push(listener);
  }

  contextChanged() {
    for (const listener of this.listeners) listener();
  }

  get me() {
    return this.api.session ? this.api.session.userId : null;
  }

  // --- notices -------------------------------------------------------------------------

  notice(text, kind = "error") {
    const list = this.nodes.notices;
    const item = el("li", { class: `notice ${kind}` },
      el("time", { text: clock(Date.now()) }),
      el("span", { class: "notice-text", text }),
      el("button", { type: "button", class: "dismiss", title: "Dismiss", "aria-label": "Dismiss", text: "×",
                     on: { click: () => item.remove() } }));
    list.prepend(item);
    while (list.children.length > MAX_NOTICES) list.lastElementChild.remove();
    if (kind === "info") setTimeout(() => item.remove(), INFO_NOTICE_MS);
  }

  // Tell the user what a failed envelope means; true when it succeeded.
  checked(envelope) {
    const problem = explainEnvelope(envelope);
    if (problem === null) return true;
    this.notice(envelope.code === 0 ? `The server could not be reached: ${envelope.msg}.` : problem);
    if (envelope.code === 440) this.logout();
    return false;
  }

  // --- login ---------------------------------------------------------------------------

  async login() {
    const n = this.nodes;
    const userId = n["login-user"].value.trim();
    if (!userId) return this.notice("Enter a user id first.");
    n["login-button"].disabled = true;
    try {
      this.logout(); // a failed login must not leave the previous one half open
      const envelope = await this.api.login(userId, n["login-password"].value);
      if (!this.checked(envelope)) return;
      n.session.textContent = `Logged in as ${userId}.`;
      n.session.classList.add("ok");
      n["logout-button"].hidden = false;
      n["join-button"].disabled = false;
      this.openGroupList();
      if (this.groupId !== null) this.open(this.groupId);
      this.contextChanged();
    } finally {
      n["login-button"].disabled = false;
    }
  }

  logout() {
    this.api.logout();
    this.closeSockets();
    this.loggedOut();
  }

  loggedOut() {
    const n = this.nodes;
    n.session.textContent = "Not logged in.";
    n.session.classList.remove("ok");
    n["logout-button"].hidden = true;
    n["join-button"].disabled = true;
    this.setComposer(false);
    this.contextChanged();
  }

  closeSockets() {
    if (this.chat) this.chat.close();
    if (this.list) this.list.close();
    this.chat = this.list = null;
    this.listed = new Set();
    this.nodes.groups.replaceChildren();
    this.setStatus("closed");
    this.nodes["groups-status"].textContent = "Log in to see your groups.";
  }

  // --- groups --------------------------------------------------------------------------

  async join(groupId) {
    if (!groupId) return this.notice("Enter a group id first.");
    if (!this.api.session) return this.notice("Log in first.");
    const envelope = await this.api.joinGroup(groupId);
    if (!this.checked(envelope)) return;
    this.open(groupId);
    // The group-list socket notices new memberships within seconds; a fresh one lists it at once.
    if (!this.listed.has(groupId)) this.openGroupList();
  }

  openGroupList() {
    if (this.list) this.list.close();
    const { userId, token } = this.api.session;
    const status = this.nodes["groups-status"];
    this.list = new Link(this.api.listUrl(userId, token), {
      onFrame: (text) => this.onGroupList(text),
      onState: (state, event, detail) => {
        if (state === "open") status.textContent = "Live: updated as messages arrive.";
        else if (state === "connecting") status.textContent = "Connecting…";
        else if (state === "reconnecting") status.textContent = "Reconnecting…";
        else this.socketClosed("Group list", state, event, detail, status);
      },
    });
  }

  onGroupList(text) {
    if (text === LOGIN_REQUIRED_TEXT) return this.notice(explainLoginRequired());
    let data;
    try {
      data = JSON.parse(text);
    } catch (error) {
      return this.notice(`The group list socket sent something unexpected: ${text.slice(0, 200)}`);
    }
    if (isErrorFrame(data)) return this.notice(`Group list: ${explainFrame(data)}`);
    if (!Array.isArray(data)) return;
    const items = data
      .filter((entry) => entry && typeof entry === "object")
      .map((entry) => this.groupEntry(entry));
    this.nodes.groups.replaceChildren(...items);
    this.listed = new Set(items.map((item) => item.dataset.group));
    this.nodes["groups-status"].textContent = items.length
      ? `${items.length} group${items.length === 1 ? "" : "s"}, live.`
      : "No groups yet: join one.";
  }

  groupEntry(entry) {
    const groupId = String(entry.groupId ?? "?");
    const newest = isMessage(entry.newMessage) ? entry.newMessage : null;
    const total = Number.isFinite(entry.total) ? entry.total : 0;
    const button = el(
      "button",
      { type: "button", class: "group-open", on: { click: () => this.open(groupId) } },
      el("span", { class: "group-name", text: `Group ${groupId}` }),
      el("span", { class: "group-total", text: `${total} message${total === 1 ? "" : "s"}` }),
      newest
        ? el("span", { class: "group-newest" },
            el("span", { class: "sender", text: String(newest.userId) }), ": ",
            el("span", { class: "newest-info", text: newest.info }),
            el("time", { text: ` · ${clock(newest.ts)}`, title: fullTime(newest.ts) }))
        : el("span", { class: "group-newest subtle", text: "no messages yet" }),
    );
    return el("li", { class: groupId === this.groupId ? "group active" : "group", data: { group: groupId } }, button);
  }

  // --- the chat socket -----------------------------------------------------------------

  open(groupId) {
    if (!this.api.session) return this.notice("Log in first.");
    if (this.chat) this.chat.close();
    this.groupId = groupId;
    this.position.reset();
    this.clearMessages();
    this.nodes["room-title"].textContent = `Group ${groupId}`;
    for (const item of this.nodes.groups.children) item.classList.toggle("active", item.dataset.group === groupId);
    const { userId, token } = this.api.session;
    // Each (re)connection asks to resume after the last event seen; the first asks for the newest page.
    this.chat = new Link(() => this.api.chatUrl(groupId, userId, token, this.position.at), {
      onFrame: (text) => this.onChatFrame(text),
      onState: (state, event, detail) => {
        this.setStatus(state, detail);
        this.setComposer(state === "open");
        if (event) this.socketClosed("Chat", state, event, detail, null);
      },
    });
    this.contextChanged();
  }

  // A socket closed (or, "offline", gave up): said once per loss, not once per failed attempt to come back.
  socketClosed(which, state, event, detail, status) {
    const why = explainClose(event.code, event.reason);
    const next = {
      retrying: " Reconnecting…",
      offline: ` Gave up after ${detail ? detail.attempt : "many"} attempts: reopen the group or log in again.`,
    }[state] || "";
    if (status) status.textContent = `Closed: ${why}.${next}`;
    if (event.code === 4440) {
      this.notice(explainLoginRequired());
      this.logout();
    } else if (state !== "retrying") {
      this.notice(`${which} socket ${why}.${next}`);
    } else if (detail && detail.attempt === 1) {
      this.notice(`${which} socket ${why}.${next}`, "info");
    }
  }

  // The chat socket's badge: how the connection stands, and how the last reconnection went.
  setStatus(state, detail = null) {
    const badge = this.nodes["chat-status"];
    const words = {
      open: "connected", connecting: "connecting…", reconnecting: "reconnecting…", retrying: "reconnecting…",
      resumed: "resumed", reloaded: "could not recover: reloaded", refused: "refused", offline: "offline",
      closed: "closed",
    };
    const looks = { reconnecting: "retrying", resumed: "open", reloaded: "open", offline: "refused" };
    badge.textContent = words[state] || state;
    badge.className = `badge ${looks[state] || state}`;
    badge.dataset.state = state;
    badge.title = state === "retrying" && detail
      ? `attempt ${detail.attempt}; next in ${(detail.delayMs / 1000).toFixed(1)} s`
      : "";
  }

  setComposer(enabled) {
    this.nodes["message-input"].disabled = !enabled;
    this.nodes["send-button"].disabled = !enabled;
  }

  onChatFrame(text) {
    if (text === LOGIN_REQUIRED_TEXT) return this.notice(explainLoginRequired());
    let data;
    try {
      data = JSON.parse(text);
    } catch (error) {
      return this.notice(`The chat socket sent something unexpected: ${text.slice(0, 200)}`);
    }
    if (data === null || typeof data !== "object") return;
    if (Array.isArray(data.list)) return this.snapshot(data);
    if (isErrorFrame(data)) return this.notice(explainFrame(data));
    if (String(data.groupId) !== this.groupId) return;
    this.position.passed(data);
    if (isRecall(data)) return this.recalled(data);
    if (isMessage(data) && this.add(data, "end")) this.setTotal(this.total + 1);
  }

  // The opening frame: the newest messages, or (when the server could resume us) every event we missed.
  // A resume the server could not make whole ("recovered": false) replaces the view: what is shown would
  // otherwise have a hole in it.
  snapshot(data) {
    const resumed = data.recovered === true;
    if (!resumed) this.clearMessages();
    let missed = 0;
    for (const item of data.list) {
      if (isRecall(item)) missed += this.recalled(item) ? 1 : 0;
      else if (isMessage(item)) missed += this.add(item, "end") ? 1 : 0;
    }
    this.setTotal(Number.isFinite(data.total) ? data.total : this.shown.size);
    this.position.opened(data.seq, data.epoch);
    if (resumed) { // added in place: the view stays where the reader left it, unless it was at the end
      this.setStatus("resumed");
      this.notice(`Reconnected and resumed: ${missed} missed event${missed === 1 ? "" : "s"} caught up.`, "info");
      return;
    }
    const view = this.nodes["messages-box"]; // what scrolls: the list and its "Load older" button
    view.scrollTop = view.scrollHeight;
    if (data.recovered === false) {
      this.setStatus("reloaded");
      this.notice("Reconnected, but could not recover what was missed (too much, or the group's history restarted): "
        + "reloaded the latest messages.", "info");
    }
  }

  send() {
    const input = this.nodes["message-input"];
    const text = input.value;
    if (!text) return;
    if (this.chat && this.chat.send(text)) {
      input.value = "";
      input.focus();
    } else {
      this.notice("Not connected: the message was not sent.");
    }
  }

  // --- messages ------------------------------------------------------------------------

  clearMessages() {
    this.shown.clear();
    this.gone.clear();
    this.nodes.messages.replaceChildren();
    this.setTotal(0);
  }

  setTotal(total) {
    this.total = Math.max(0, total);
    this.nodes["room-total"].textContent = this.groupId === null ? "" : `${this.total} message${this.total === 1 ? "" : "s"}`;
    this.nodes["load-older"].hidden = this.shown.size >= this.total;
  }

  // A message is known by its id; one stored by fast-im's own nodes has none, and is known by author and time.
  key(message) {
    return typeof message.id === "string" ? message.id : `${message.userId}\u0000${message.ts}`;
  }

  // Show one message at the "start" or "end" of the list; false when it is shown already.
  add(message, where) {
    const userId = String(message.userId);
    const key = this.key(message);
    if (this.shown.has(key) || this.gone.has(key)) return false;
    const mine = userId === this.me;
    const item = el(
      "li",
      { class: mine ? "message mine" : "message",
        data: { user: userId, ts: String(message.ts), id: key, ...streamData(message) } },
      el("div", { class: "meta" },
        el("span", { class: "sender", text: mine ? `${userId} (you)` : userId }),
        el("time", { text: clock(message.ts), title: fullTime(message.ts) }),
        mine ? el("button", { type: "button", class: "recall quiet", text: "Recall",
                              on: { click: () => this.recall(message, item) } }) : null),
      el("p", { class: "info", text: message.info }),
    );
    this.shown.set(key, item);
    const box = this.nodes.messages;
    const view = this.nodes["messages-box"];
    if (where === "start") {
      box.prepend(item);
    } else {
      const pinned = nearBottom(view);
      placeInOrder(box, item);
      if (pinned || mine) view.scrollTop = view.scrollHeight;
    }
    return true;
  }

  async recall(message, item) {
    const button = item.querySelector("button.recall");
    if (button) button.disabled = true;
    const envelope = await this.api.recall(message);
    if (this.checked(envelope)) {
      this.recalled({ groupId: message.groupId, userId: message.userId, ts: message.ts, id: message.id });
    } else if (button) {
      if (envelope.code === 100) button.remove(); // too late or gone: recalling again cannot work
      else button.disabled = false;
    }
  }

  // A recall event (or our own successful recall): the message's text disappears. True when it was shown.
  recalled(event) {
    if (String(event.groupId) !== this.groupId) return false;
    const userId = String(event.userId);
    const key = this.key(event); // a recall event names the recalled message by its id (or author and time)
    this.gone.add(key);
    const item = this.shown.get(key);
    if (!item) return false;
    this.shown.delete(key);
    item.className = "message recalled";
    item.replaceChildren(el("p", { class: "info", text: `${userId === this.me ? "You" : userId} recalled a message (sent ${clock(event.ts)})` }));
    this.setTotal(this.total - 1);
    return true;
  }

  async loadOlder() {
    const oldest = [...this.nodes.messages.children].find((item) => item.classList.contains("message") && !item.classList.contains("recalled"));
    if (!oldest) return;
    const button = this.nodes["load-older"];
    button.disabled = true;
    try {
      const envelope = await this.api.olderThan(this.groupId, oldest.dataset.user, Number(oldest.dataset.ts), HISTORY_PAGE);
      if (!this.checked(envelope)) return;
      if (envelope.data === null) return this.notice("The oldest shown message is gone (recalled or expired); reopen the group.", "info");
      const older = parseMessages(envelope.data);
      const view = this.nodes["messages-box"];
      const fromBottom = view.scrollHeight - view.scrollTop;
      for (const message of older.reverse()) this.add(message, "start");
      view.scrollTop = view.scrollHeight - fromBottom; // keep the view where it was
      this.setTotal(this.total);
      if (older.length < HISTORY_PAGE) button.hidden = true;
    } finally {
      button.disabled = false;
    }
  }
}
