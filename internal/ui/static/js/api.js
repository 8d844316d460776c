// The API client: configuration, JSON that keeps 64-bit ids exact, fetch
// with the session cookie, and Server-Sent Event streams.

export const config = { api_base: "/api", events_base: "/api", auth_base: "/api/auth", title: "Millrace" };

export async function loadConfig() {
  const r = await fetch("config.json", { cache: "no-cache" });
  if (r.ok) Object.assign(config, await r.json());
  return config;
}

// parseJSON parses text like JSON.parse, except that integers of 16 digits
// or more (execution and event ids are 64-bit, beyond 2^53) become strings,
// so no id is ever rounded. It quotes them before parsing, skipping string
// literals.
export function parseJSON(text) {
  let out = "";
  let last = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) { // a string literal: skip it, escapes included
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 92) i += 2;
        else if (d === 34) break;
        else i++;
      }
      continue;
    }
    if (c === 45 || (c >= 48 && c <= 57)) {
      let j = c === 45 ? i + 1 : i;
      const digitsStart = j;
      while (j < n && text.charCodeAt(j) >= 48 && text.charCodeAt(j) <= 57) j++;
      const end = j;
      const next = text[j];
      if (next === "." || next === "e" || next === "E") { // not an integer
        j++;
        while (j < n && "0123456789eE+-.".includes(text[j])) j++;
        i = j - 1;
        continue;
      }
      if (end - digitsStart >= 16) {
        out += text.slice(last, i) + '"' + text.slice(i, end) + '"';
        last = end;
      }
      i = end - 1;
    }
  }
  return JSON.parse(last === 0 ? text : out + text.slice(last));
}

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// onUnauthenticated is called on any 401 (the session ended): the app
// sends the user to the login page.
let onUnauthenticated = () => {};
export function setOnUnauthenticated(fn) { onUnauthenticated = fn; }

// api calls the API under config.api_base. The session travels in the
// HttpOnly cookie the login set; the page never holds a token.
export async function api(method, path, body, { quiet401 = false, base = config.api_base } = {}) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(base + path, opts);
  } catch (e) {
    throw new APIError(0, "network", `cannot reach the server (${e.message}); is it running?`);
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = parseJSON(text); } catch { data = null; }
  }
  if (!r.ok) {
    const err = data && data.error ? data.error : {};
    const e = new APIError(r.status, err.code || String(r.status), err.message || `${method} ${path}: HTTP ${r.status}`);
    if (r.status === 401 && !quiet401) onUnauthenticated(e);
    throw e;
  }
  return data;
}

// authAPI calls login, logout, whoami and the auth config, under
// config.auth_base (the gateway answers them outside its proxy).
export function authAPI(method, path, body) {
  return api(method, path, body, { quiet401: true, base: config.auth_base });
}

// Live is one Server-Sent Event stream. The browser reconnects by itself
// and sends Last-Event-ID, so the server resumes where it left off; Live
// only tells the page whether the stream is up.
export class Live {
  // types are the SSE event names to listen for (the server names each
  // frame after its event type); onEvent gets (type, data, id).
  constructor(path, types, onEvent, onState) {
    this.onState = onState || (() => {});
    this.opened = false;
    this.closed = false;
    this.es = new EventSource(config.events_base + path, { withCredentials: true });
    const handle = (type) => (m) => {
      let data = null;
      try { data = m.data ? parseJSON(m.data) : null; } catch { data = m.data; }
      onEvent(type, data, m.lastEventId);
    };
    for (const t of types) this.es.addEventListener(t, handle(t));
    this.es.addEventListener("message", handle("message"));
    this.es.addEventListener("end", (m) => { onEvent("end", null, m.lastEventId); this.close(); });
    this.es.onopen = () => { this.opened = true; this.onState("on"); };
    this.es.onerror = () => {
      if (this.closed) return;
      // CLOSED means the browser gave up (a 4xx or a non-SSE reply):
      // the stream does not exist on this server.
      if (this.es.readyState === EventSource.CLOSED) this.onState(this.opened ? "off" : "unavailable");
      else this.onState("reconnecting");
    };
  }
  close() {
    this.closed = true;
    this.es.close();
  }
}

// The event types the server names its frames after (internal/api/events.go).
export const EVENT_TYPES = [
  "playbook.started", "playbook.completed", "playbook.failed", "execution.cancelled",
  "command.issued", "command.claimed", "command.started", "command.heartbeat", "command.completed",
  "command.failed", "command.retry_scheduled", "step.exit", "loop.started", "loop.done", "loop.failed",
  "context.updated", "join.arrived",
];

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

export function enc(s) { return encodeURIComponent(s); }

// encPath encodes each segment of a catalog path, keeping its slashes.
export function encPath(p) { return String(p).split("/").map(encodeURIComponent).join("/"); }
