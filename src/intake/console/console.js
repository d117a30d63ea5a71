// hookflow console: vanilla JavaScript, no framework, no build step.
//
// Everything shown comes from the admin API (README, Admin API) with the key the user gives,
// kept in this tab's sessionStorage. Everything a user, a Flow or a webhook sent is put into the
// page as text (textContent, createTextNode), never parsed as HTML.
//
// Live updates: GET /api/stats once a second; its `changes` value moves after any commit of the
// store, and only then is the open view read again (README, "Live updates").
//
// The delivery log and the sessions views are in console-records.js, loaded after this file
// (both deferred, so both have run when the wiring below runs).
"use strict";

const KEY = "hookflow.adminKey";
const POLL_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// How long a button waits for its second click.
const CONFIRM_MS = 4000;
// How often a reloaded page tries its key again while hookflow cannot answer.
const RETRY_MS = 2000;
// A sent message not seen in a trace after this long is no longer shown as waiting.
const PENDING_MS = 10 * 60 * 1000;

const app = {
  key: sessionStorage.getItem(KEY) || "",
  endpoints: [],
  stats: null,
  changes: null,
  view: "overview",
  timer: null,
  busy: false,
  // The open view is to be read again once the read under way is done (refreshView).
  again: false,
  // Login retried while hookflow cannot answer (a reload during a restart or an outage).
  retry: null,
  // Interaction panel: messages sent and not yet seen in a trace, with their session.
  pending: [],
  // Delivery log: rows open, the cursor of the next page, how many rows are shown.
  open: new Set(),
  dlNext: null,
  dlShown: 0,
  selected: null,
  // Until when a button waits for its second click (confirmButton): the open view is not
  // redrawn meanwhile, or the redrawn button would have forgotten the first click.
  armedUntil: 0,
};

// --- DOM helpers: text only -------------------------------------------------------------------

/** An element with attributes (`text`, `class`, `on*` handlers, `data-*`, others) and children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

function json(v) {
  return JSON.stringify(v, null, 2);
}

// --- time: relative and exact -----------------------------------------------------------------

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  let t;
  if (a < 2) return future ? "now" : "just now";
  if (a < 60) t = a + " s";
  else if (a < 3600) t = Math.floor(a / 60) + " min";
  else if (a < 86400) t = Math.floor(a / 3600) + " h";
  else t = Math.floor(a / 86400) + " d";
  return future ? "in " + t : t + " ago";
}

function exact(ms) {
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  const time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  const today = new Date().toDateString() === d.toDateString();
  return today ? time : d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + time;
}

/** A <time> showing "12 s ago · 14:03:21"; the full ISO time is its title. */
function when(iso) {
  if (!iso) return h("span", { class: "muted", text: "–" });
  const ms = Date.parse(iso);
  const el = h("time", { datetime: iso, title: iso, "data-ms": ms });
  el.append(h("span", { class: "rel", text: ago(ms) }), " · ", h("span", { class: "exact", text: exact(ms) }));
  return el;
}

function refreshTimes() {
  for (const t of document.querySelectorAll("time[data-ms] .rel")) {
    t.textContent = ago(Number(t.parentElement.dataset.ms));
  }
}

function badge(state, extra) {
  return h("span", { class: "state", "data-state": state, text: extra ? state + " · " + extra : state });
}

// --- the API ----------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(method, path, body, headers) {
  const init = { method, headers: Object.assign({ "X-API-Key": app.key }, headers || {}) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    setLive(false, "offline");
    throw new ApiError("hookflow cannot be reached: " + e.message);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (resp.status === 401 && path.startsWith("/api/")) {
    logout("The admin key was refused (401). Log in with a key from adminKeys.");
    throw new ApiError("unauthorized");
  }
  if (!resp.ok) {
    const err = data && data.error ? data.error.code + ": " + data.error.message : "HTTP " + resp.status;
    const e = new ApiError(err);
    e.status = resp.status;
    throw e;
  }
  return data;
}

const enc = encodeURIComponent;
const sessionPath = (ep, user, session) => "/api/sessions/" + enc(ep) + "/" + enc(user) + "/" + enc(session);

function qs(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) parts.push(enc(k) + "=" + enc(v));
  return parts.length ? "?" + parts.join("&") : "";
}

// --- login, views, polling --------------------------------------------------------------------

async function login(key) {
  clearTimeout(app.retry);
  app.key = key;
  const data = await api("GET", "/api/endpoints");
  $("login-error").textContent = "";
  sessionStorage.setItem(KEY, key);
  app.endpoints = data.endpoints;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("status").hidden = false;
  fillEndpointSelects();
  initInteract();
  showView(location.hash.slice(1) || "overview");
  poll();
}

/** Logs in again with the tab's key after a reload. A key refused (401) logs out (in `api`); any
 * other failure (hookflow restarting, unreachable, 503) keeps the key and tries again. */
function resume() {
  clearTimeout(app.retry);
  login(app.key).catch((e) => {
    if (!app.key) return;
    $("login").hidden = false;
    $("login-error").textContent = e.message + " · trying again every " + RETRY_MS / 1000 + " s";
    app.retry = setTimeout(resume, RETRY_MS);
  });
}

function logout(message) {
  sessionStorage.removeItem(KEY);
  app.key = "";
  clearTimeout(app.timer);
  clearTimeout(app.retry);
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  // Nothing read with the key stays in the page once it is gone.
  for (const id of ["ov-cards", "ia-timeline", "dl-list", "ss-list", "ss-detail"]) clear($(id));
  for (const id of ["ov-summary", "ia-status", "dl-status"]) $(id).textContent = "";
  $("ia-key").value = "";
  app.pending = [];
  app.selected = null;
  app.open.clear();
  $("nav").hidden = true;
  $("status").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

function showView(name) {
  if (!["overview", "interact", "deliveries", "sessions"].includes(name)) name = "overview";
  app.view = name;
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  refreshView().catch(showError);
}

function setLive(ok, text) {
  const el = $("live");
  el.dataset.live = ok ? "yes" : "no";
  el.textContent = text;
}

/** The poll: stats every second; the open view again when the store changed. */
async function poll() {
  clearTimeout(app.timer);
  if (!app.key) return;
  if (!document.hidden) {
    try {
      const stats = await api("GET", "/api/stats");
      setLive(true, "live");
      app.stats = stats;
      renderOverview();
      // The cursor moves only once the view has been read again, so a failed read is retried.
      if (stats.changes !== app.changes && !app.busy && app.armedUntil <= Date.now()) {
        if (app.view !== "overview") await refreshView();
        app.changes = stats.changes;
      }
      refreshTimes();
    } catch (e) {
      if (app.key) setLive(false, "offline");
    }
  }
  if (app.key) app.timer = setTimeout(poll, POLL_MS);
}

async function refreshView() {
  // One read at a time; asked for meanwhile (another view opened, the store changed), the view
  // open then is read once more when this one is done, so it is never left unread.
  app.again = true;
  if (app.busy) return;
  app.busy = true;
  try {
    while (app.again) {
      app.again = false;
      if (app.view === "overview") renderOverview();
      else if (app.view === "interact") await refreshInteract();
      else if (app.view === "deliveries") await refreshDeliveries(true);
      else if (app.view === "sessions") await refreshSessions();
    }
  } finally {
    app.busy = false;
    app.again = false;
  }
}

function showError(e) {
  if (app.view === "sessions") return showSessionError(e);
  const where = { interact: "ia-status", deliveries: "dl-status", overview: "ov-summary" }[app.view];
  if (where) $(where).textContent = e.message;
}

/** Rebuilds the rows of `box` with `fill`, keeping the keyboard focus on the row with the same
 * `data-key` (a live refresh redraws lists while someone moves through them). */
function keepFocus(box, fill) {
  const had = box.contains(document.activeElement) ? document.activeElement.closest("[data-key]") : null;
  const key = had ? had.dataset.key : null;
  fill();
  if (key === null) return;
  const row = [...box.querySelectorAll("[data-key]")].find((r) => r.dataset.key === key);
  if (row) row.querySelector(".line").focus();
}

function fillEndpointSelects() {
  for (const id of ["ia-endpoint", "dl-endpoint", "ss-endpoint"]) {
    const sel = clear($(id));
    if (id !== "ia-endpoint") sel.append(h("option", { value: "", text: "all" }));
    for (const ep of app.endpoints) sel.append(h("option", { value: ep.name, text: ep.name }));
  }
}

// --- overview ---------------------------------------------------------------------------------

function renderOverview() {
  const s = app.stats;
  if (!s || app.view !== "overview") return;
  $("ov-summary").textContent =
    s.delivered + " delivered, " + s.retried + " retried, " + s.dead + " dead since start · " +
    s.queueDepth + " message(s) in the inbound queue · " + s.sessionsActive + " active session(s) · up " +
    ago(Date.now() - s.uptimeSeconds * 1000).replace(" ago", "");
  const box = $("ov-cards");
  const cards = new Map([...box.children].map((c) => [c.dataset.endpoint, c]));
  for (const ep of s.endpoints) {
    const card = endpointCard(ep);
    const old = cards.get(ep.name);
    if (old) old.replaceWith(card);
    else box.append(card);
  }
}

function endpointCard(ep) {
  const m = ep.minutes;
  const n = (label, v) => h("div", {}, h("b", { text: v }), h("span", { text: label }));
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  const lat = m.latencyMs.filter((v) => v !== null);
  const lastLat = lat.length ? lat[lat.length - 1] + " ms" : "–";
  return h("article", { class: "card endpoint", "data-endpoint": ep.name },
    h("div", { class: "title" }, h("h2", { text: ep.name }), badge(ep.state, ep.enabled ? null : "disabled")),
    h("div", { class: "url mono", text: ep.webhook }),
    h("div", { class: "numbers" },
      n("queued", ep.queued), n("delivered", ep.delivered), n("failed attempts", ep.failedAttempts), n("dead letters", ep.deadLetters)),
    h("div", { class: "chart" },
      h("div", { class: "label" }, h("span", { text: "delivered / failed per minute, last hour" }),
        h("span", { text: sum(m.delivered) + " / " + sum(m.failed) })),
      barChart([[m.delivered, "ok"], [m.failed, "bad"]])),
    h("div", { class: "chart" },
      h("div", { class: "label" }, h("span", { text: "delivery latency, ms (average per minute)" }),
        h("span", { text: lastLat })),
      barChart([[m.latencyMs, "lat"]])),
    h("div", { class: "url" }, "last attempt ", when(ep.lastAttemptAt)));
}

/** A small bar chart, one bar a minute; `series` are stacked ([values, css class], nulls are
 * gaps). Built with DOM APIs. */
function barChart(series) {
  const w = 120, hgt = 40;
  const n = series[0][0].length;
  const totals = series[0][0].map((_, i) => series.reduce((t, [v]) => t + (v[i] || 0), 0));
  const max = Math.max(1, ...totals);
  const el = svg("svg", { viewBox: "0 0 " + w + " " + hgt, preserveAspectRatio: "none", role: "img" });
  const bw = w / n;
  for (let i = 0; i < n; i++) {
    let y = hgt;
    for (const [values, cls] of series) {
      const v = values[i] || 0;
      if (!v) continue;
      const bh = Math.max(1.5, (v / max) * (hgt - 4));
      y -= bh;
      el.append(svg("rect", { class: cls, x: (i * bw + 0.15).toFixed(2), y: y.toFixed(2), width: (bw - 0.3).toFixed(2), height: bh.toFixed(2) }));
    }
  }
  return el;
}

// --- interaction panel ------------------------------------------------------------------------

function newSessionId() {
  const b = crypto.getRandomValues(new Uint8Array(4));
  return "console-" + [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function initInteract() {
  if (!$("ia-user").value) $("ia-user").value = "console";
  if (!$("ia-session").value) $("ia-session").value = newSessionId();
  keyField();
}

function currentEndpoint() {
  return app.endpoints.find((e) => e.name === $("ia-endpoint").value) || app.endpoints[0];
}

function keyField() {
  const ep = currentEndpoint();
  $("ia-key-label").hidden = !(ep && ep.inboundKeys > 0);
}

function iaSession() {
  return { ep: currentEndpoint(), user: $("ia-user").value.trim(), session: $("ia-session").value.trim() };
}

function messageBody() {
  const { user, session } = iaSession();
  if (!user || !session) throw new ApiError("userId and sessionId are needed");
  const body = { userId: user, sessionId: session };
  const text = $("ia-text").value;
  if (text) body.text = text;
  const raw = $("ia-data").value.trim();
  if (raw) {
    try { body.data = JSON.parse(raw); } catch (e) { throw new ApiError("data is not valid JSON: " + e.message); }
  }
  if (!body.text && !body.data) throw new ApiError("type a message (or give data)");
  return body;
}

async function send(route) {
  const status = $("ia-status");
  try {
    const body = messageBody();
    const ep = iaSession().ep;
    const headers = {};
    if (route === "test" && $("ia-key").value) headers["X-Webhook-Key"] = $("ia-key").value;
    const answer = await api("POST", "/" + route + "/" + enc(ep.urlToken), body, headers);
    if (route === "test") {
      app.pending.push({ traceId: answer.traceId, body, at: new Date().toISOString(), ep: ep.name, user: body.userId, session: body.sessionId });
    }
    status.textContent = route === "test" ? "" : route + " accepted (" + answer.traceId + ")";
    $("ia-text").value = "";
    await refreshInteract();
  } catch (e) {
    status.textContent = e.message;
  }
}

async function refreshInteract() {
  const { ep, user, session } = iaSession();
  const box = $("ia-timeline");
  if (!ep || !user || !session) return;
  const [turns, outs] = await Promise.all([
    api("GET", sessionPath(ep.name, user, session) + "/turns"),
    api("GET", "/api/outputs" + qs({ endpoint: ep.name, user, session, limit: 200 })),
  ]);
  const bySeq = new Map(outs.outputs.map((o) => [o.seq, o]));
  const seen = new Set(turns.turns.map((t) => t.traceId));
  const stale = Date.now() - PENDING_MS;
  app.pending = app.pending.filter((p) => !seen.has(p.traceId) && Date.parse(p.at) > stale);
  const mine = app.pending.filter((p) => p.ep === ep.name && p.user === user && p.session === session);
  const items = [];
  const covered = new Set();
  for (const t of turns.turns) {
    for (let s = t.seqFrom; s <= t.seqTo; s++) covered.add(s);
    items.push({ at: Date.parse(t.at), el: () => turnElements(t, bySeq) });
  }
  for (const o of outs.outputs) {
    if (!covered.has(o.seq)) {
      const first = o.tries.length ? o.tries[0].at : o.at;
      const ai = o.body && o.body.AIOutput ? o.body.AIOutput : {};
      const note = ai.source === "agent" ? "from the agent" + (ai.agentName ? " " + ai.agentName : "") : "output without a trace (inject, notify, replay, or a turn not sent from here)";
      items.push({ at: Date.parse(first), el: () => [botMessage(o.text ?? "", ai.data ?? null, o, note)] });
    }
  }
  for (const p of mine) items.push({ at: Date.parse(p.at), el: () => [userMessage(p.body, p.at, "sent · waiting for the Flow")] });
  items.sort((a, b) => a.at - b.at);
  const openTraces = new Set([...box.querySelectorAll("details.trace[open]")].map((d) => d.dataset.key));
  clear(box);
  if (!items.length) {
    box.append(h("div", { class: "hint muted card", text: "No messages in this session yet. Type one above: its outputs, their delivery to the webhook and the trace of each turn appear here." }));
  }
  for (const it of items) append(box, it.el());
  for (const d of box.querySelectorAll("details.trace")) if (openTraces.has(d.dataset.key)) d.open = true;
}

function userMessage(input, at, note) {
  const text = input.text ?? "";
  return h("div", { class: "msg user" },
    h("div", { class: "text", text }),
    input.data ? h("pre", { class: "data", text: json(input.data) }) : null,
    h("div", { class: "meta" }, when(at), note ? h("span", { text: note }) : null));
}

function botMessage(text, data, out, note) {
  const hasData = data && typeof data === "object" && Object.keys(data).length > 0;
  return h("div", { class: "msg bot", "data-seq": out ? out.seq : "" },
    h("div", { class: "text", text }),
    hasData ? h("pre", { class: "data", text: json(data) }) : null,
    h("div", { class: "meta" }, out ? delivery(out) : badge("queued", "committing"),
      out ? h("span", { text: "Seq " + out.seq }) : null, note ? h("span", { text: note }) : null));
}

/** An output's delivery state in words: status and time, the last error, or the next attempt. */
function delivery(o) {
  if (o.forgotten) return badge("idle", "no longer in the log");
  const last = o.tries.length ? o.tries[o.tries.length - 1] : null;
  let extra = null;
  if (o.state === "delivered" && last) extra = (last.status ?? "") + " · " + last.latencyMs + " ms";
  else if (o.state === "retrying") extra = (o.lastError || "failed") + " · " + nextAttempt(o);
  else if (o.state === "dead") extra = o.lastError || "";
  else if (o.state === "replayed") extra = "as #" + o.replayedAs;
  return badge(o.state, extra);
}

/** When a pending output goes out: at its next attempt, or, once that time has passed, as soon as
 * the output before it in its session is done or its webhook answers a probe (README, Delivery). */
function nextAttempt(o) {
  const due = Date.parse(o.nextAttemptAt);
  return due > Date.now() + 1000 ? "next " + ago(due) : "due now";
}

function turnElements(t, bySeq) {
  const out = [];
  if (t.part !== "resumed" && t.input) out.push(userMessage(t.input, t.at, t.input.kind === "inject" ? "inject" : null));
  const texts = t.outputs || [];
  for (let s = t.seqFrom, i = 0; s <= t.seqTo; s++, i++) {
    const o = bySeq.get(s);
    const text = texts[i] ? texts[i].text : o ? o.text : "";
    out.push(botMessage(text ?? "", texts[i] ? texts[i].data : null, o || { seq: s, tries: [], forgotten: true }, null));
  }
  out.push(traceDetails(t));
  return out;
}

function traceDetails(t) {
  const errors = t.errors || [];
  const nodes = t.nodes || [];
  const changes = t.contextChanges || [];
  const d = h("details", { class: "trace", "data-key": t.traceId + ":" + t.part + ":" + t.seqFrom });
  d.append(h("summary", {},
    h("span", { text: "trace" + (t.part === "resumed" ? " (resumed: after an http call or a handover)" : "") }),
    h("span", { text: nodes.length + " node(s)" }),
    h("span", { text: changes.length + " context change(s)" }),
    (t.http || []).length ? h("span", { text: t.http.length + " http call(s)" }) : null,
    errors.length ? h("span", { class: "bad", text: errors.length + " error(s)" }) : null,
    h("span", { text: (t.ms ?? 0).toFixed(1) + " ms" })));
  d.append(h("h3", { text: "nodes run" }),
    nodes.length ? h("div", { class: "chips" }, nodes.map((n) => h("span", { class: "chip" }, n.node, " ", h("i", { text: n.type }))))
      : h("div", { class: "muted", text: "none" }));
  d.append(h("h3", { text: "NLU" }), nluView(t.nlu));
  if ((t.http || []).length) {
    d.append(h("h3", { text: "http calls" }), h("div", { class: "list" }, t.http.map((c) => h("div", { class: "mono" },
      c.method + " " + c.url + " → ",
      c.state === "waiting" ? "waiting for the answer" : c.error ? "error: " + c.error : "HTTP " + c.status,
      c.ms !== null && c.ms !== undefined ? " · " + c.ms + " ms" : ""))));
  }
  if (errors.length) d.append(h("h3", { class: "bad", text: "errors" }), h("div", { class: "list" }, errors.map((e) => h("div", { class: "mono bad", text: e }))));
  d.append(h("h3", { text: "context changes" }), changesView(changes, t.truncated));
  return d;
}

function nluView(nlu) {
  if (!nlu) return h("div", { class: "muted", text: "no intent looked for" });
  const ranking = (nlu.ranking || []).map((r) => h("span", { class: "chip" }, r.name, " ", h("i", { text: r.score })));
  return h("dl", { class: "kv" },
    h("dt", { text: "intent" }), h("dd", { text: nlu.intent ?? "none" }),
    h("dt", { text: "score" }), h("dd", { text: nlu.score ?? "–" }),
    h("dt", { text: "ranking" }), h("dd", {}, h("div", { class: "chips" }, ranking)));
}

function changesView(changes, truncated) {
  if (!changes || !changes.length) return h("div", { class: "muted", text: truncated ? "too large to keep" : "none" });
  const short = (v) => (v === null || v === undefined ? "–" : typeof v === "string" ? JSON.stringify(v) : JSON.stringify(v));
  return h("table", { class: "changes" },
    h("thead", {}, h("tr", {}, h("th", { text: "path" }), h("th", { text: "before" }), h("th", { text: "after" }))),
    h("tbody", {}, changes.map((c) => h("tr", {},
      h("td", { class: "mono", text: c.path || "(all)" }),
      h("td", { class: "mono before", text: short(c.before) }),
      h("td", { class: "mono after", text: short(c.after) })))));
}

/** A button that asks for a second click before it acts. */
function confirmButton(btn, label, action) {
  if (btn.dataset.armed === "yes") {
    delete btn.dataset.armed;
    btn.classList.remove("confirm");
    btn.textContent = btn.dataset.label;
    app.armedUntil = 0;
    action();
    return;
  }
  btn.dataset.label = btn.textContent;
  btn.dataset.armed = "yes";
  btn.classList.add("confirm");
  btn.textContent = label;
  app.armedUntil = Date.now() + CONFIRM_MS;
  setTimeout(() => {
    if (btn.dataset.armed === "yes") {
      delete btn.dataset.armed;
      btn.classList.remove("confirm");
      btn.textContent = btn.dataset.label;
      app.armedUntil = 0;
    }
  }, CONFIRM_MS);
}

async function resetSession() {
  const { ep, user, session } = iaSession();
  try {
    await api("DELETE", sessionPath(ep.name, user, session));
    $("ia-status").textContent = "session forgotten: the next message starts the Flow again";
  } catch (e) {
    $("ia-status").textContent = e.status === 404 ? "nothing to reset: the session has no state" : e.message;
  }
  app.pending = app.pending.filter((p) => !(p.ep === ep.name && p.user === user && p.session === session));
  await refreshInteract();
}

// --- wiring -----------------------------------------------------------------------------------

function debounce(f, ms) {
  let t = null;
  return () => { clearTimeout(t); t = setTimeout(() => f().catch(showError), ms); };
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    login($("key").value).catch((e) => { if (e.message !== "unauthorized") $("login-error").textContent = e.message; });
  });
  $("logout").addEventListener("click", () => logout(""));
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });

  $("ia-form").addEventListener("submit", (ev) => { ev.preventDefault(); send("test"); });
  $("ia-inject").addEventListener("click", () => send("inject"));
  $("ia-notify").addEventListener("click", () => send("notify"));
  $("ia-new").addEventListener("click", () => { $("ia-session").value = newSessionId(); $("ia-status").textContent = ""; refreshInteract().catch(showError); });
  $("ia-reset").addEventListener("click", (ev) => confirmButton(ev.currentTarget, "Click again to reset", resetSession));
  $("ia-endpoint").addEventListener("change", () => { keyField(); $("ia-status").textContent = ""; refreshInteract().catch(showError); });
  for (const id of ["ia-user", "ia-session"]) $(id).addEventListener("change", () => { $("ia-status").textContent = ""; refreshInteract().catch(showError); });

  const dl = debounce(refreshDeliveries, 250);
  for (const id of ["dl-endpoint", "dl-state", "dl-since"]) $(id).addEventListener("change", dl);
  $("dl-state").addEventListener("change", replayAllState);
  replayAllState();
  for (const id of ["dl-user", "dl-session"]) $(id).addEventListener("input", dl);
  $("dl-form").addEventListener("submit", (ev) => ev.preventDefault());
  $("dl-more").addEventListener("click", () => olderDeliveries().catch(showError));
  $("dl-replay-all").addEventListener("click", (ev) => confirmButton(ev.currentTarget, "Click again to replay all that match", replayAll));

  const ss = debounce(refreshSessions, 250);
  $("ss-endpoint").addEventListener("change", ss);
  $("ss-q").addEventListener("input", ss);
  $("ss-form").addEventListener("submit", (ev) => ev.preventDefault());

  if (app.key) resume();
  else $("key").focus();
});
