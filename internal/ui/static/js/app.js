// Millrace's web UI: a hash router and one function per page. Pages read
// the API, and live pages follow Server-Sent Event streams; nothing polls
// in a tight loop.
import { api, APIError, authAPI, config, enc, encPath, EVENT_TYPES, Live, loadConfig, parseJSON, setOnUnauthenticated, TERMINAL } from "./api.js";
import { badge, duration, fill, h, pretty, when } from "./dom.js";
import { renderGraph, stepStatus } from "./graph.js";

const main = document.getElementById("main");
let me = null; // whoami: {role, user, auth_disabled}
let cleanups = [];

function onCleanup(fn) { cleanups.push(fn); }

function flash(msg, kind = "error") {
  const el = document.getElementById("flash");
  el.textContent = msg;
  el.className = kind === "info" ? "info" : "";
  el.hidden = !msg;
  if (msg && kind === "info") setTimeout(() => { if (el.textContent === msg) el.hidden = true; }, 5000);
}

function canOperate() { return me && (me.auth_disabled || me.role === "admin" || me.role === "operator"); }

function show(...nodes) {
  fill(main, nodes);
}

function liveBadge() {
  const el = h("span", { class: "live", id: "live", "data-live": "connecting" }, "connecting");
  el.set = (state) => {
    const text = { on: "live", ended: "ended (live)", static: "ended", off: "disconnected", reconnecting: "reconnecting", unavailable: "live updates unavailable", fallback: "refreshing every few seconds (no live stream on this server)" }[state] || state;
    el.textContent = text;
    el.dataset.live = state;
    el.className = "live " + (state === "on" ? "on" : ["connecting", "ended", "static"].includes(state) ? "" : "off");
  };
  return el;
}

// every runs fn every ms while the page is shown and the tab visible: the
// safety net when a live stream is not available, never a tight loop.
function every(ms, fn) {
  const t = setInterval(() => { if (!document.hidden) fn(); }, ms);
  onCleanup(() => clearInterval(t));
}

function errorBox(e) {
  return h("div", { class: "card" }, h("p", { class: "err" }, e instanceof APIError ? `${e.message} (${e.code})` : String(e)));
}

// ---------------------------------------------------------------- routing

const routes = [
  [/^\/login$/, pageLogin],
  [/^\/executions$/, pageExecutions],
  [/^\/executions\/(\d+)$/, pageExecution],
  [/^\/catalog$/, pageCatalog],
  [/^\/catalog\/(.+)$/, pagePlaybook],
  [/^\/queries$/, pageQueries],
  [/^\/queries\/([^/]+)\/([^/]+)$/, pageQuery],
  [/^\/streams$/, pageStreams],
  [/^\/credentials$/, pageCredentials],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/executions";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

async function route() {
  for (const fn of cleanups) { try { fn(); } catch { /* already gone */ } }
  cleanups = [];
  flash("");
  const { path, query } = parseHash();
  if (path.startsWith("id_token=") || path.startsWith("error=")) return finishOIDC(new URLSearchParams(path));
  if (!me && path !== "/login") return goLogin();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", path.startsWith("/" + a.dataset.nav));
  for (const [re, page] of routes) {
    const m = path.match(re);
    if (m) {
      try {
        await page(m.slice(1).map(decodeURIComponent), query);
      } catch (e) {
        if (!(e instanceof APIError && e.status === 401)) show(errorBox(e));
      }
      return;
    }
  }
  location.hash = "#/executions";
}

function goLogin() {
  const back = location.hash && !location.hash.startsWith("#/login") ? location.hash : "#/executions";
  sessionStorage.setItem("millrace.back", back);
  me = null;
  renderWho();
  if (location.hash !== "#/login") location.hash = "#/login";
  else route();
}

function renderWho() {
  const who = document.getElementById("who");
  document.getElementById("nav").hidden = !me;
  if (!me) return fill(who);
  const name = me.user && (me.user.display_name || me.user.email || me.user.user_id);
  fill(who,
    me.auth_disabled ? h("span", { class: "badge s-cancelled", title: "MILLRACE_AUTH=none: anyone who can reach the server can use it" }, "auth off") :
      h("span", { id: "whoami", "data-role": me.role }, `${name || "signed in"} · ${me.role}`),
    me.auth_disabled ? null : h("button", { onclick: logout }, "Sign out"));
}

async function whoami() {
  try {
    const w = await authAPI("GET", "/whoami", undefined);
    me = w.auth_disabled ? { ...w, role: "admin" } : w;
  } catch (e) {
    if (e.status === 404) me = { role: "admin", auth_disabled: true }; // a server without the auth API
    else if (e.status === 401) me = null;
    else throw e;
  }
  renderWho();
}

async function logout() {
  try { await authAPI("POST", "/logout", undefined); } catch { /* the session is gone either way */ }
  me = null;
  goLogin();
}

// ------------------------------------------------------------------ login

async function pageLogin() {
  if (me) { location.hash = "#/executions"; return; }
  let authCfg = { auth: "tokens", oidc: null };
  try { authCfg = await authAPI("GET", "/config", undefined); } catch { /* older server: tokens */ }
  const token = h("input", { type: "password", id: "token", placeholder: "mrt_…", autocomplete: "off", required: true });
  const err = h("p", { class: "err", id: "login-error" });
  const form = h("form", { id: "login-form", onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    try {
      await authAPI("POST", "/login", { api_token: token.value.trim() });
      token.value = "";
      await afterLogin();
    } catch (e) {
      err.textContent = e.status === 401 ? "That token is not accepted (unknown, expired or revoked)." : e.message;
    }
  } },
  h("p", {}, h("label", { for: "token" }, "API token")), token,
  h("p", {}, h("button", { class: "primary", type: "submit", id: "login" }, "Sign in")),
  h("p", { class: "muted" }, "Make one with ", h("code", {}, "millrace token create --role operator"),
    ". The token becomes a session cookie; the page never stores it."));
  const sso = authCfg.oidc ? h("p", {}, h("button", { id: "sso", onclick: () => startOIDC(authCfg.oidc).catch((e) => { err.textContent = e.message; }) }, "Sign in with SSO")) : null;
  show(h("div", { class: "card login" }, h("h1", {}, `Sign in to ${config.title}`), sso, form, err));
  token.focus();
}

async function afterLogin() {
  await whoami();
  if (!me) throw new Error("signed in, but the server does not recognise the session; is a proxy dropping cookies?");
  const back = sessionStorage.getItem("millrace.back") || "#/executions";
  sessionStorage.removeItem("millrace.back");
  location.hash = back;
}

function randomText() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// startOIDC sends the browser to the issuer (implicit flow, id_token only);
// it comes back to this page with #id_token=...
async function startOIDC(oidc) {
  const disco = await (await fetch(oidc.issuer.replace(/\/$/, "") + "/.well-known/openid-configuration")).json();
  const nonce = randomText(), state = randomText();
  sessionStorage.setItem("millrace.oidc", JSON.stringify({ nonce, state }));
  const u = new URL(disco.authorization_endpoint);
  u.search = new URLSearchParams({ response_type: "id_token", client_id: oidc.client_id, redirect_uri: location.origin + location.pathname,
    scope: "openid email profile", nonce, state }).toString();
  location.assign(u.toString());
}

async function finishOIDC(params) {
  const saved = parseJSON(sessionStorage.getItem("millrace.oidc") || "{}");
  sessionStorage.removeItem("millrace.oidc");
  history.replaceState(null, "", location.pathname + "#/login");
  if (params.get("error")) return flash(`SSO sign-in failed: ${params.get("error_description") || params.get("error")}`);
  const idToken = params.get("id_token");
  let claims = {};
  try { claims = JSON.parse(atob(idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { /* checked below */ }
  if (!saved.state || params.get("state") !== saved.state || claims.nonce !== saved.nonce) {
    return flash("SSO sign-in refused: the reply does not match the request this page made (state or nonce); sign in again.");
  }
  try {
    await authAPI("POST", "/login", { id_token: idToken });
    await afterLogin();
  } catch (e) {
    flash(`SSO sign-in refused: ${e.message}`);
    route();
  }
}

// ------------------------------------------------------------- executions

async function pageExecutions(_, query) {
  const status = query.get("status") || "";
  const playbook = query.get("playbook") || "";
  const page = Math.max(1, Number(query.get("page")) || 1);
  const size = 200;
  const live = liveBadge();
  const statusSel = h("select", { id: "filter-status", onchange: () => setQuery({ status: statusSel.value, page: "" }) },
    ["", "running", "completed", "failed", "cancelled"].map((s) => h("option", { value: s, selected: s === status }, s || "any status")));
  const pbInput = h("input", { id: "filter-playbook", placeholder: "playbook path", value: playbook, list: "playbooks",
    title: "the playbook path; end it with * for every path that starts with it",
    onchange: () => setQuery({ playbook: pbInput.value.trim(), page: "" }) });
  const tbody = h("tbody", { id: "executions" });
  const count = h("span", { class: "muted", id: "count" });
  const pager = h("div", { class: "pager" });
  const datalist = h("datalist", { id: "playbooks" });
  show(h("div", { class: "row" }, h("h1", {}, "Executions"), live),
    h("div", { class: "card row" }, statusSel, pbInput, datalist, count),
    h("table", {}, h("thead", {}, h("tr", {}, ["Execution", "Playbook", "Status", "Started", "Duration", "Parent"].map((t) => h("th", {}, t)))), tbody),
    pager);

  const rows = new Map(); // execution id -> {ex, tr}
  // The server filters (status; path exact, or a prefix ending in *); a
  // live execution is checked the same way before it is shown.
  const matches = (ex) => (!status || ex.status === status) &&
    (!playbook || (playbook.endsWith("*") ? ex.path.startsWith(playbook.slice(0, -1)) : ex.path === playbook));
  const rowOf = (ex) => h("tr", { class: "clickable", "data-execution": ex.execution_id, "data-status": ex.status, onclick: () => { location.hash = `#/executions/${ex.execution_id}`; } },
    h("td", { class: "mono" }, String(ex.execution_id)),
    h("td", {}, `${ex.path} v${ex.version}`),
    h("td", {}, badge(ex.status)),
    h("td", {}, when(ex.started_at)),
    h("td", {}, duration(ex.started_at, ex.ended_at)),
    h("td", { class: "mono" }, ex.parent_execution_id ? String(ex.parent_execution_id) : ""));
  let total = 0; // executions that match the filters, every page
  const recount = () => { count.textContent = `${rows.size} shown of ${total}`; };
  const put = (ex, top) => {
    const id = String(ex.execution_id);
    const old = rows.get(id);
    if (!matches(ex)) {
      // A live execution that does not match is not added; a shown one
      // that no longer matches (it ended) leaves.
      if (old) { old.tr.remove(); rows.delete(id); total = Math.max(0, total - 1); }
      return;
    }
    const tr = rowOf(ex);
    if (old) old.tr.replaceWith(tr);
    else if (top) { tbody.prepend(tr); total++; }
    else tbody.append(tr);
    rows.set(id, { ex, tr });
  };
  const load = async () => {
    const qs = new URLSearchParams({ page: String(page), page_size: String(size) });
    if (status) qs.set("status", status);
    if (playbook) qs.set("path", playbook);
    const p = await api("GET", `/executions?${qs}`);
    fill(tbody);
    rows.clear();
    for (const ex of p.executions) put(ex, false);
    const paths = [...new Set(p.executions.map((e) => e.path))].sort();
    fill(datalist, ...paths.map((x) => h("option", { value: x })));
    total = Number(p.total);
    recount();
    const pages = Math.max(1, Math.ceil(Number(p.total) / size));
    fill(pager,
      h("button", { disabled: page <= 1, onclick: () => setQuery({ page: String(page - 1) }) }, "‹ Newer"),
      h("span", {}, `page ${page} of ${pages}`),
      h("button", { disabled: page >= pages, onclick: () => setQuery({ page: String(page + 1) }) }, "Older ›"));
  };
  await load();
  // Live: the global feed names every execution event; a new execution is
  // fetched once, an ended one once more for its end time.
  const seen = new Set();
  const onEvent = async (type, ev) => {
    if (!ev || !ev.execution_id) return;
    type = ev.event_type || type;
    const id = String(ev.execution_id);
    const known = rows.get(id);
    const ends = type === "playbook.completed" || type === "playbook.failed" || type === "execution.cancelled";
    if (known && !ends) {
      if (type === "playbook.started" || known.ex.status === "running") return;
    }
    if (!known && page !== 1) return;
    if (!known && seen.has(id) && !ends) return;
    seen.add(id);
    try { put(await api("GET", `/executions/${id}`), !known); recount(); } catch { /* deleted or not visible: skip */ }
  };
  const stream = new Live("/stream", EVENT_TYPES, onEvent, (st) => {
    live.set(st);
    if (st === "unavailable") { live.set("fallback"); every(5000, load); }
  });
  onCleanup(() => stream.close());
}

function setQuery(changes) {
  const { path, query } = parseHash();
  for (const [k, v] of Object.entries(changes)) { if (v) query.set(k, v); else query.delete(k); }
  const qs = query.toString();
  location.hash = "#" + path + (qs ? "?" + qs : "");
}

// -------------------------------------------------------------- execution

async function pageExecution([id]) {
  let ex = await api("GET", `/executions/${id}`);
  const [evs, graph] = await Promise.all([
    api("GET", `/executions/${id}/events`),
    api("GET", `/graph/${encPath(ex.path)}?version=${ex.version}`).catch(() => null),
  ]);
  const events = [];
  const seen = new Set();
  const live = liveBadge();
  const head = h("div", {});
  const timeline = h("tbody", { id: "timeline" });
  const result = h("div", { id: "result" });
  const graphBox = h("div", { class: "graph", id: "graph" });
  const steps = new Map(); // step name -> its commands' statuses, exit, attempts and workers
  if (graph && graph.steps.length) graphBox.append(renderGraph(graph));
  else graphBox.append(h("p", { class: "muted" }, "No step graph: the playbook version could not be read."));

  const paintSteps = () => {
    for (const node of graphBox.querySelectorAll("g.node")) {
      const info = steps.get(node.dataset.step);
      let st = info ? aggregate(info) : "idle";
      if (info) {
        node.querySelector("text.attempts").textContent = info.attempts > 1 ? `attempt ${info.attempts}` : "";
        node.querySelector("title").textContent = `${node.dataset.step}: ${st}` +
          (info.attempts ? `, ${info.attempts} attempt(s)` : "") + (info.workers.size ? `, on ${[...info.workers].join(", ")}` : "");
      }
      if (ex.status === "cancelled" && ["issued", "claimed", "running", "retrying"].includes(st)) st = "cancelled";
      node.dataset.status = st;
    }
  };
  const renderHead = () => {
    const buttons = [];
    if (canOperate() && ex.status === "running") {
      buttons.push(h("button", { class: "danger", id: "cancel", onclick: async (e) => {
        e.target.disabled = true;
        try { ex = await api("POST", `/executions/${id}/cancel`); renderHead(); paintSteps(); flash("Cancelled.", "info"); } catch (err) { flash(err.message); e.target.disabled = false; }
      } }, "Cancel"));
    }
    if (canOperate()) {
      buttons.push(h("button", { id: "rerun", onclick: async () => {
        try {
          const st = await api("POST", "/execute", { path: ex.path, version: ex.version });
          location.hash = `#/executions/${st.execution_id}`;
        } catch (err) { flash(err.message); }
      } }, "Re-run"));
    }
    fill(head,
      h("div", { class: "row" }, h("h1", {}, "Execution ", h("span", { class: "mono", id: "execution-id" }, String(ex.execution_id))),
        h("span", { id: "status" }, badge(ex.status)), live, h("span", { class: "row", style: "margin-left:auto" }, buttons)),
      h("div", { class: "card" }, h("dl", { class: "kv" },
        h("dt", {}, "Playbook"), h("dd", {}, h("a", { href: `#/catalog/${encPath(ex.path)}?version=${ex.version}` }, `${ex.path} v${ex.version}`)),
        h("dt", {}, "Started"), h("dd", {}, when(ex.started_at)),
        h("dt", {}, "Ended"), h("dd", {}, ex.ended_at ? when(ex.ended_at) : "—"),
        h("dt", {}, "Duration"), h("dd", {}, duration(ex.started_at, ex.ended_at)),
        ex.parent_execution_id ? [h("dt", {}, "Parent"), h("dd", {}, h("a", { href: `#/executions/${ex.parent_execution_id}` }, String(ex.parent_execution_id)))] : null)));
    fill(result,
      ex.error ? h("div", { class: "card" }, h("h2", {}, "Error"), h("pre", { class: "err", id: "error" }, ex.error)) : null,
      ex.result !== undefined && ex.result !== null ? h("div", { class: "card" }, h("h2", {}, "Result"), h("pre", { id: "result-json" }, pretty(ex.result))) : null,
      ex.context ? h("div", { class: "card" }, h("h2", {}, "Context"), h("pre", {}, pretty(ex.context))) : null);
  };
  const add = (ev) => {
    const eid = String(ev.event_id);
    if (seen.has(eid)) return false;
    seen.add(eid);
    events.push(ev);
    const st = stepStatus(ev);
    if (st && ev.step) {
      if (!steps.has(ev.step)) steps.set(ev.step, { cmds: new Map(), exit: null, loop: null, attempts: 0, workers: new Set() });
      const info = steps.get(ev.step);
      if (ev.event_type === "step.exit") info.exit = st;
      else if (ev.event_type.startsWith("loop.")) info.loop = st;
      else info.cmds.set(ev.command_id || ev.event_type, st);
      if (ev.attempt) info.attempts = Math.max(info.attempts, Number(ev.attempt));
      if (ev.worker_id) info.workers.add(ev.worker_id);
    }
    const detail = ev.error ? h("span", { class: "err" }, ev.error) : ev.result !== undefined && ev.result !== null ? h("code", {}, clip(pretty(ev.result).replace(/\s+/g, " "), 120)) : "";
    timeline.append(h("tr", { "data-event": eid, "data-type": ev.event_type },
      h("td", { class: "mono" }, when(ev.created_at)),
      h("td", {}, ev.event_type),
      h("td", {}, ev.step || ""),
      h("td", {}, ev.status ? badge(ev.status) : ""),
      h("td", { class: "num" }, ev.attempt || ""),
      h("td", { class: "mono" }, ev.worker_id || ""),
      h("td", {}, detail)));
    return true;
  };
  for (const ev of evs.events) add(ev);
  renderHead();
  paintSteps();
  show(head,
    h("div", { class: "card" }, h("h2", {}, "Steps"), graphBox),
    result,
    h("div", { class: "card" }, h("h2", {}, "Timeline"),
      h("table", {}, h("thead", {}, h("tr", {}, ["Time", "Event", "Step", "Status", "Attempt", "Worker", "Result or error"].map((t) => h("th", {}, t)))), timeline)));

  const refresh = async () => {
    ex = await api("GET", `/executions/${id}`);
    renderHead();
    paintSteps();
  };
  if (TERMINAL.has(ex.status)) { live.set("static"); return; }
  // Live: the stream starts after the last event this page has, and the
  // browser resumes it with Last-Event-ID after a drop.
  const last = events.length ? String(events[events.length - 1].event_id) : "0";
  let ending = false;
  const stream = new Live(`/executions/${id}/stream?after=${last}`, EVENT_TYPES, async (type, ev) => {
    if (type === "end") {
      live.set("ended");
      await refresh();
      return;
    }
    if (!ev || typeof ev !== "object" || !add(ev)) return;
    type = ev.event_type || type;
    paintSteps();
    if ((type.startsWith("playbook.") && type !== "playbook.started") || type === "execution.cancelled") {
      ending = true;
      await refresh();
    }
  }, (st) => {
    if (st === "unavailable" && !ending) {
      live.set("fallback");
      every(2000, async () => {
        const more = await api("GET", `/executions/${id}/events`);
        for (const ev of more.events) add(ev);
        await refresh();
      });
    } else live.set(st);
  });
  onCleanup(() => stream.close());
}

// aggregate is a step's status from all its commands (a loop runs many):
// running while any runs, then what the step's exit or loop said.
function aggregate(info) {
  const vals = [...info.cmds.values()];
  for (const st of ["running", "retrying", "claimed", "issued"]) if (vals.includes(st)) return st;
  if (info.loop === "running") return "running";
  if (info.exit) return info.exit;
  if (info.loop) return info.loop;
  if (vals.includes("failed")) return "failed";
  return vals.length ? "completed" : "idle";
}

function clip(t, n) { return t.length > n ? t.slice(0, n - 1) + "…" : t; }

// ---------------------------------------------------------------- catalog

async function pageCatalog() {
  const list = await api("GET", "/catalog");
  show(h("h1", {}, "Catalog"),
    h("table", { id: "catalog" }, h("thead", {}, h("tr", {}, ["Path", "Name", "Latest version", "Registered"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.entries.map((e) => h("tr", { class: "clickable", "data-path": e.path, onclick: () => { location.hash = `#/catalog/${encPath(e.path)}`; } },
        h("td", { class: "mono" }, e.path), h("td", {}, e.name), h("td", { class: "num" }, e.version), h("td", {}, when(e.created_at)))))),
    list.entries.length ? null : h("p", { class: "muted" }, "Nothing registered yet: millrace register playbook.yaml"));
}

async function pagePlaybook([path], query) {
  const version = Number(query.get("version")) || 0;
  const [entry, latest, graph] = await Promise.all([
    api("GET", `/catalog/${encPath(path)}?version=${version}`),
    api("GET", `/catalog/${encPath(path)}`),
    api("GET", `/graph/${encPath(path)}?version=${version}`).catch((e) => ({ steps: [], arcs: [], errors: [{ message: e.message }], warnings: [] })),
  ]);
  const versions = [];
  for (let v = latest.version; v >= 1; v--) {
    versions.push(v === entry.version ? h("strong", {}, `v${v}`) : h("a", { href: `#/catalog/${encPath(path)}?version=${v}` }, `v${v}`));
  }
  const problems = [...graph.errors.map((p) => ({ ...p, level: "err" })), ...graph.warnings.map((p) => ({ ...p, level: "warn" }))];
  const payload = h("textarea", { id: "payload", placeholder: '{"key": "value"} (optional: overrides the workload)' });
  const run = canOperate() ? h("div", { class: "card" }, h("h2", {}, "Run"), payload,
    h("p", {}, h("button", { class: "primary", id: "run", onclick: async (e) => {
      let body = { path: entry.path, version: entry.version };
      if (payload.value.trim()) {
        try { body.payload = parseJSON(payload.value); } catch (err) { return flash(`The payload is not JSON: ${err.message}`); }
      }
      e.target.disabled = true;
      try {
        const st = await api("POST", "/execute", body);
        location.hash = `#/executions/${st.execution_id}`;
      } catch (err) { flash(err.message); e.target.disabled = false; }
    } }, `Run ${entry.path} v${entry.version}`))) : null;
  show(h("h1", {}, entry.path, " ", h("span", { class: "muted" }, `v${entry.version}`)),
    h("div", { class: "card" }, h("dl", { class: "kv" },
      h("dt", {}, "Name"), h("dd", {}, entry.name),
      h("dt", {}, "Registered"), h("dd", {}, when(entry.created_at)),
      h("dt", {}, "Catalog id"), h("dd", { class: "mono" }, String(entry.catalog_id)),
      h("dt", {}, "Versions"), h("dd", { class: "row", id: "versions" }, versions))),
    run,
    h("div", { class: "card" }, h("h2", {}, "Validation"),
      problems.length ? h("ul", { class: "problems", id: "problems" }, problems.map((p) => h("li", { class: p.level },
        `${p.file || ""}${p.line ? ":" + p.line : ""}${p.col ? ":" + p.col : ""} ${p.level === "warn" ? "warning: " : ""}${p.message}${p.hint ? " (hint: " + p.hint + ")" : ""}`)))
        : h("p", { class: "muted", id: "problems" }, "No problems.")),
    graph.steps.length ? h("div", { class: "card" }, h("h2", {}, "Steps"), h("div", { class: "graph" }, renderGraph(graph))) : null,
    h("div", { class: "card" }, h("h2", {}, "Source"), h("pre", { id: "source" }, entry.content || "")));
}

// ---------------------------------------------------------------- queries

async function pageQueries(_, query) {
  const projects = (await api("GET", "/v2/projects")).projects || [];
  const project = query.get("project") || (projects[0] && projects[0].name) || "";
  const page = Math.max(1, Number(query.get("page")) || 1);
  const sel = h("select", { id: "project", onchange: () => setQuery({ project: sel.value, page: "" }) },
    projects.map((p) => h("option", { value: p.name, selected: p.name === project }, `${p.name} (${p.warehouse_type})`)));
  const sql = h("textarea", { id: "sql", placeholder: "select …" });
  const submit = canOperate() ? h("div", { class: "card" }, h("h2", {}, "New SQL query"), sql,
    h("p", {}, h("button", { class: "primary", id: "run-sql", onclick: async (e) => {
      e.target.disabled = true;
      try {
        const s = await api("POST", `/v2/projects/${enc(project)}/query/sql`, { sql: sql.value, invalidateCache: false });
        location.hash = `#/queries/${enc(project)}/${enc(s.queryUuid)}`;
      } catch (err) { flash(err.message); e.target.disabled = false; }
    } }, "Run"))) : null;
  if (!project) {
    show(h("h1", {}, "Queries"), h("p", { class: "muted" }, "No projects: add one with millrace project put (admin)."));
    return;
  }
  const hist = await api("GET", `/v2/projects/${enc(project)}/query/history?page=${page}&pageSize=25`);
  const pages = Math.max(1, Math.ceil(Number(hist.total) / 25));
  show(h("h1", {}, "Queries"), h("div", { class: "card row" }, h("label", { for: "project" }, "Project"), sel), submit,
    h("h2", {}, "History"),
    h("table", { id: "history" }, h("thead", {}, h("tr", {}, ["Created", "Status", "Rows", "Cache", "Lane", "SQL"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (hist.queries || []).map((q) => h("tr", { class: "clickable", "data-query": q.queryUuid, onclick: () => { location.hash = `#/queries/${enc(project)}/${enc(q.queryUuid)}`; } },
        h("td", {}, when(q.createdAt)), h("td", {}, badge(q.status)), h("td", { class: "num" }, q.totalResults ?? ""),
        h("td", {}, q.cacheHit ? "hit" : ""), h("td", {}, q.context || ""), h("td", { class: "mono" }, clip(q.sql || (q.metricQuery ? "metric query" : ""), 100)))))),
    h("div", { class: "pager" },
      h("button", { disabled: page <= 1, onclick: () => setQuery({ page: String(page - 1) }) }, "‹ Newer"),
      h("span", {}, `page ${page} of ${pages}`),
      h("button", { disabled: page >= pages, onclick: () => setQuery({ page: String(page + 1) }) }, "Older ›")));
}

async function pageQuery([project, uuid], query) {
  const page = Math.max(1, Number(query.get("page")) || 1);
  const size = Math.min(5000, Math.max(1, Number(query.get("size")) || 100));
  const head = h("div", {});
  const body = h("div", {});
  show(head, body);
  let stopped = false;
  onCleanup(() => { stopped = true; });
  let delay = 300;
  const draw = (q) => {
    const running = ["pending", "queued", "executing"].includes(q.status);
    fill(head, h("div", { class: "row" },
      h("h1", {}, "Query ", h("span", { class: "mono" }, uuid)), h("span", { id: "query-status" }, badge(q.status)),
      h("a", { href: `#/queries?project=${enc(project)}` }, `project ${project}`),
      running && canOperate() ? h("button", { class: "danger", id: "cancel-query", style: "margin-left:auto", onclick: async (e) => {
        e.target.disabled = true;
        try { draw(await api("POST", `/v2/projects/${enc(project)}/query/${enc(uuid)}/cancel`)); } catch (err) { flash(err.message); }
      } }, "Cancel") : null));
    if (q.status === "error") fill(body, h("div", { class: "card" }, h("pre", { class: "err" }, q.error || "failed")));
    else if (q.status !== "ready") fill(body, h("p", { class: "muted" }, running ? "Waiting for the warehouse…" : `The query is ${q.status}.`));
    else {
      const cols = q.columns || [];
      const pages = Number(q.totalPageCount) || 1;
      const go = (p) => setQuery({ page: String(p), size: String(size) });
      fill(body,
        h("div", { class: "pager", id: "pager" },
          h("button", { id: "prev-page", disabled: !q.previousPage, onclick: () => go(page - 1) }, "‹ Previous"),
          h("span", { id: "page-info", "data-page": page, "data-pages": pages }, `page ${page} of ${pages} · ${q.totalResults} rows`),
          h("button", { id: "next-page", disabled: !q.nextPage, onclick: () => go(page + 1) }, "Next ›"),
          q.initialQueryExecutionMs !== undefined ? h("span", { class: "muted" }, `ran in ${q.initialQueryExecutionMs} ms${q.cacheMetadata && q.cacheMetadata.cacheHit ? " (cache hit)" : ""}`) : null),
        h("div", { style: "overflow:auto" }, h("table", { id: "results" },
          h("thead", {}, h("tr", {}, cols.map((c) => h("th", { title: c.type, class: q.rows && q.rows.length && typeof q.rows[0][c.name] === "number" ? "num" : null }, c.name)))),
          h("tbody", {}, (q.rows || []).map((r) => h("tr", {}, cols.map((c) => h("td", { class: typeof r[c.name] === "number" ? "num" : "" }, cell(r[c.name])))))))));
    }
    return running;
  };
  // A pending query is read again with a growing pause (0.3 s to 3 s):
  // queries have no live stream, and one request at a time is no storm.
  const poll = async () => {
    if (stopped) return;
    const q = await api("GET", `/v2/projects/${enc(project)}/query/${enc(uuid)}?page=${page}&pageSize=${size}`);
    if (stopped) return;
    if (draw(q)) {
      delay = Math.min(3000, delay * 1.5);
      const t = setTimeout(() => poll().catch((e) => flash(e.message)), delay);
      onCleanup(() => clearTimeout(t));
    }
  };
  await poll();
}

function cell(v) {
  if (v === null || v === undefined) return h("span", { class: "muted" }, "null");
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

// -------------------------------------------------------- workers, streams

async function pageStreams() {
  const box = h("div", {});
  const auto = h("input", { type: "checkbox", id: "auto", checked: true });
  show(h("div", { class: "row" }, h("h1", {}, "Workers and streams"), h("label", { class: "muted" }, auto, " refresh every 5 s")), box);
  const load = async () => {
    const [health, st] = await Promise.all([api("GET", "/health").catch((e) => ({ status: "error", store: e.message })), api("GET", "/streams")]);
    const stats = st.stats || {};
    const qs = st.queries || {};
    fill(box,
      h("div", { class: "grid2" },
        h("div", { class: "card" }, h("h2", {}, "Server"), h("dl", { class: "kv" },
          h("dt", {}, "Status"), h("dd", {}, badge(health.status)),
          h("dt", {}, "Store"), h("dd", {}, health.store || ""),
          h("dt", {}, "NATS"), h("dd", {}, st.nats || health.nats || ""),
          health.detail && health.detail.queries_stalled ? [h("dt", {}, "Queries"), h("dd", { class: "err" }, health.detail.queries_stalled)] : null)),
        h("div", { class: "card" }, h("h2", {}, "Work"), h("dl", { class: "kv", id: "work" },
          h("dt", {}, "Executions running"), h("dd", {}, stats.executions_running ?? "?"),
          h("dt", {}, "Commands pending"), h("dd", {}, stats.commands_pending ?? "?"),
          h("dt", {}, "Outbox depth"), h("dd", { id: "outbox" }, stats.outbox_depth ?? "?"),
          h("dt", {}, "Queries queued"), h("dd", {}, qs.queued ?? 0),
          h("dt", {}, "Queries executing"), h("dd", {}, qs.executing ?? 0)))),
      st.streams.map((s) => h("div", { class: "card", "data-stream": s.name },
        h("h2", {}, `${s.role}: `, h("span", { class: "mono" }, s.name)),
        h("p", { class: "muted" }, `${s.messages} messages, ${s.bytes} bytes, subjects ${(s.subjects || []).join(", ")}`),
        s.error ? h("p", { class: "err" }, s.error) : null,
        h("table", {}, h("thead", {}, h("tr", {}, ["Consumer (worker pool)", "Lag", "In-flight slots", "", "Redelivered", "Idle pulls", "Ack wait", "Max deliver", "Last delivery"].map((t) => h("th", {}, t)))),
          h("tbody", {}, s.consumers.map((c) => h("tr", { "data-consumer": c.name },
            h("td", { class: "mono" }, c.name), h("td", { class: "num" }, c.pending),
            h("td", { class: "num" }, `${c.in_flight} / ${c.max_in_flight > 0 ? c.max_in_flight : "∞"}`),
            h("td", {}, h("div", { class: "bar" }, h("span", { style: `width:${c.max_in_flight > 0 ? Math.min(100, (100 * c.in_flight) / c.max_in_flight) : 0}%` }))),
            h("td", { class: "num" }, c.redelivered), h("td", { class: "num" }, c.waiting), h("td", {}, c.ack_wait),
            h("td", { class: "num" }, c.max_deliver), h("td", {}, when(c.last_active)))))))),
      st.streams.length ? null : h("p", { class: "muted" }, "No streams to show."));
  };
  await load();
  every(5000, () => { if (auto.checked) load().catch((e) => flash(e.message)); });
}

// ------------------------------------------------------------ credentials

async function pageCredentials() {
  const list = await api("GET", "/credentials");
  show(h("h1", {}, "Credentials"),
    h("p", { class: "muted" }, "Names and kinds only: credential data is only ever given to workers."),
    h("table", { id: "credentials" }, h("thead", {}, h("tr", {}, ["Name", "Kind", "Description", "Updated"].map((t) => h("th", {}, t)))),
      h("tbody", {}, (list.credentials || []).map((c) => h("tr", {}, h("td", { class: "mono" }, c.name), h("td", {}, c.kind), h("td", {}, c.description || ""), h("td", {}, when(c.updated_at)))))));
}

// ------------------------------------------------------------------ start

async function start() {
  await loadConfig();
  document.title = config.title;
  document.getElementById("brand").textContent = config.title;
  setOnUnauthenticated(() => { if (me) flash("Your session ended; sign in again."); goLogin(); });
  try {
    await whoami();
  } catch (e) {
    show(errorBox(e));
    return;
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
