// Building DOM nodes from data without ever parsing data as HTML.

// el("li", {class: "x", text: untrusted, data: {ts: 1}}, child, "more text")
// Strings become text nodes; attribute values are set as values. Event
// handlers are attached with addEventListener, never as on* attributes.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key.toLowerCase().startsWith("on")) throw new Error(`use {on: {...}} for ${key}`);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node;
}

export function clock(ts) {
  const date = new Date(ts);
  return Number.isFinite(date.getTime())
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false })
    : "?";
}

export function fullTime(ts) {
  const date = new Date(ts);
  return Number.isFinite(date.getTime()) ? date.toLocaleString() : String(ts);
}

// Keep a scrolled list pinned to its end when it was at the end already.
export function nearBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight < 40;
}
