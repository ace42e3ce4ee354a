// The test page: wires the chat view and the raw console to this server.

import { Api } from "./api.js";
import { ChatView } from "./chat.js";
import { RawConsole } from "./console.js";
import { byId } from "./dom.js";

const api = new Api();
byId("server-origin").textContent = api.root.href;
const chat = new ChatView(api);
const rawConsole = new RawConsole(api, chat);
document.documentElement.dataset.ready = "1"; // for tests: the scripts ran
window.fastim = { api, chat, rawConsole }; // for poking at it from the developer tools
