// What the server's codes mean, in plain words (SPEC §4-§6).

const BUSINESS = {
  "无法撤回消息": "Too late to recall: a message can be recalled only within the recall window (2 minutes by default).",
  "消息不存在": "That message does not exist any more (already recalled, or expired).",
  "用户名或密码错误": "Wrong user id or password.",
  "请登录后访问": "You are not logged in, or your login has expired. Log in again.",
};

const ENVELOPE = {
  100: "The server refused this",
  400: "The server refused the request as malformed",
  403: "Not allowed: you are not a member of this group. Join it first",
  440: "You are not logged in, or your login has expired. Log in again",
  500: "The server failed unexpectedly",
  503: "The server's storage is unavailable right now. Try again in a moment",
};

const FRAME = {
  400: "Empty message: type something first",
  413: "Message too long: it was NOT sent",
  415: "Binary frames are not accepted: send text",
  429: "You are sending too fast: that message was NOT sent; wait a moment",
  503: "The server's storage is unavailable: that message was NOT sent; try again shortly",
  504: "The server's storage stopped answering: that message may or may not have been sent; look before sending it again",
};

const CLOSE = {
  1000: "closed normally",
  1001: "the server is shutting down or restarting",
  1005: "closed without a reason",
  1006: "the connection was lost (server unreachable or network down)",
  1008: "closed by the server: this client fell too far behind or broke a rule",
  1009: "closed by the server: a frame was far over the size limit",
  1011: "closed by the server after an internal error, or because this client stopped answering its pings",
  1013: "the server's storage is unavailable; try again later",
  4400: "the group or user id in the address is invalid",
  4403: "you are not a member of this group: join it first",
  4440: "login required: the server refused the token, or the login ended (440)",
};

export const LOGIN_REQUIRED_TEXT = "440";

// One sentence for an HTTP envelope {code, msg, data}, or null when it is a success.
export function explainEnvelope(envelope) {
  if (envelope.code === 200) return null;
  const said = typeof envelope.msg === "string" ? envelope.msg : "";
  if (BUSINESS[said]) return BUSINESS[said];
  const general = ENVELOPE[envelope.code] || `The server answered code ${envelope.code}`;
  return said ? `${general} (${envelope.code}: ${said}).` : `${general} (${envelope.code}).`;
}

// One sentence for a WebSocket error frame {code, msg}.
export function explainFrame(frame) {
  const general = FRAME[frame.code] || `The server refused that frame`;
  return `${general} (${frame.code}: ${frame.msg}).`;
}

export function explainClose(code, reason) {
  const meaning = CLOSE[code] || (code >= 4000 ? "closed by the application" : "closed");
  return reason ? `${meaning} (code ${code}: ${reason})` : `${meaning} (code ${code})`;
}

export function explainLoginRequired() {
  return "The server answered 440: login required. Log in again; your token was refused or has expired.";
}

// Is this parsed frame a WebSocket error frame?
export function isErrorFrame(data) {
  return data !== null && typeof data === "object" && !Array.isArray(data)
    && Number.isInteger(data.code) && typeof data.msg === "string" && !("info" in data);
}
