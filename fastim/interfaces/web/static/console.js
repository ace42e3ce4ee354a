// The raw console, as in fast-im's test page: any address, connect, send text, see every frame.

import { byId, clock, el, nearBottom } from "./dom.js";
import { LOGIN_REQUIRED_TEXT, explainClose, explainFrame, explainLoginRequired, isErrorFrame } from "./words.js";

const MAX_LOG_LINES = 500;
const ANY_TOKEN = "anytoken"; // fast-im: without login_auth any non-empty token is accepted

export class RawConsole {
  constructor(api, chat) {
    this.api = api;
    this.chat = chat;
    this.socket = null;
    this.n = Object.fromEntries(
      [
        "console-form", "console-url", "console-connect", "console-disconnect", "console-use-chat",
        "console-use-list", "console-status", "console-send-form", "console-text", "console-send",
        "console-clear", "console-log",
      ].map((id) => [id, byId(id)]),
    );
    const n = this.n;
    this.suggested = n["console-url"].value = this.chatAddress();
    // Follow the chat view's login and group while the address is still the suggested one.
    chat.onContextChange(() => {
      if (n["console-url"].value === this.suggested) this.suggested = n["console-url"].value = this.chatAddress();
    });
    n["console-form"].addEventListener("submit", (event) => { event.preventDefault(); this.connect(); });
    n["console-disconnect"].addEventListener("click", () => this.disconnect());
    n["console-send-form"].addEventListener("submit", (event) => { event.preventDefault(); this.send(); });
    n["console-clear"].addEventListener("click", () => n["console-log"].replaceChildren());
    n["console-use-chat"].addEventListener("click", () => { n["console-url"].value = this.chatAddress(); });
    n["console-use-list"].addEventListener("click", () => { n["console-url"].value = this.listAddress(); });
  }

  // This server's chat URL, with the logged-in user and open group when there are some.
  chatAddress() {
    const session = this.api.session;
    return this.api.chatUrl(this.chat.groupId ?? "1", session ? session.userId : "1", session ? session.token : ANY_TOKEN);
  }

  listAddress() {
    const session = this.api.session;
    return this.api.listUrl(session ? session.userId : "1", session ? session.token : ANY_TOKEN);
  }

  log(direction, text, kind = "") {
    const box = this.n["console-log"];
    const pinned = nearBottom(box);
    box.append(el("li", { class: `line ${kind}` },
      el("time", { text: clock(Date.now()) }),
      el("span", { class: "direction", text: direction }),
      el("span", { class: "frame", text })));
    while (box.children.length > MAX_LOG_LINES) box.firstElementChild.remove();
    if (pinned) box.scrollTop = box.scrollHeight;
  }

  setState(state) {
    const open = state === "open";
    const idle = state === "closed";
    this.n["console-status"].textContent = state;
    this.n["console-status"].className = `badge ${open ? "open" : idle ? "closed" : "connecting"}`;
    this.n["console-send"].disabled = !open;
    this.n["console-disconnect"].disabled = idle;
  }

  connect() {
    this.disconnect();
    const url = this.n["console-url"].value.trim();
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      this.log("!", `cannot connect to ${url}: ${error.message}`, "error");
      return;
    }
    this.socket = socket;
    this.setState("connecting");
    this.log("·", `connecting to ${url}`, "event");
    socket.addEventListener("open", () => {
      this.setState("open");
      this.log("·", "open", "event");
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.received(String(event.data));
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return; // we left it: already logged by disconnect()
      this.log("·", `closed: ${explainClose(event.code, event.reason)}`, event.code === 1000 ? "event" : "error");
      this.socket = null;
      this.setState("closed");
    });
  }

  received(text) {
    this.log("←", text, "in");
    if (text === LOGIN_REQUIRED_TEXT) return this.log("!", explainLoginRequired(), "error");
    try {
      const data = JSON.parse(text);
      if (isErrorFrame(data)) this.log("!", explainFrame(data), "error");
    } catch (error) {
      // plain text: shown as it is
    }
  }

  disconnect() {
    if (!this.socket) return;
    this.socket.close(1000, "console");
    this.socket = null;
    this.setState("closed");
    this.log("·", "disconnected", "event");
  }

  send() {
    const text = this.n["console-text"].value;
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) {
      this.log("!", "not connected", "error");
      return;
    }
    this.socket.send(text);
    this.log("→", text, "out");
    this.n["console-text"].value = "";
  }
}
