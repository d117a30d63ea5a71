// hookflow console: the delivery log and the sessions views (loaded after console.js, whose
// helpers and API calls they use; the wiring at the end of console.js binds them).
"use strict";

// --- delivery log -----------------------------------------------------------------------------

function dlFilter() {
  const since = $("dl-since").value;
  return {
    endpoint: $("dl-endpoint").value,
    user: $("dl-user").value.trim(),
    session: $("dl-session").value.trim(),
    state: $("dl-state").value,
    since: since ? String(Date.now() - Number(since)) : "",
  };
}

const PAGE = 50;

/** Reads the log's first page again; `keep` (a live refresh, a replay) reads as many rows as are
 * shown, so pages opened with "Older outputs" stay open while outputs flow. */
async function refreshDeliveries(keep) {
  const want = keep ? Math.max(PAGE, app.dlShown) : PAGE;
  let rows = [];
  let next = null;
  do {
    const data = await api("GET", "/api/outputs" + qs(Object.assign(dlFilter(), { limit: PAGE, before: next })));
    rows = rows.concat(data.outputs);
    next = data.next;
  } while (next && rows.length < want);
  app.dlNext = next;
  app.dlShown = rows.length;
  const box = $("dl-list");
  keepFocus(box, () => {
    clear(box);
    if (!rows.length) box.append(h("div", { class: "empty card", text: "No outputs match." }));
    for (const o of rows) box.append(outputRow(o));
  });
  $("dl-more").hidden = !app.dlNext;
}

async function olderDeliveries() {
  if (!app.dlNext) return;
  const data = await api("GET", "/api/outputs" + qs(Object.assign(dlFilter(), { limit: PAGE, before: app.dlNext })));
  app.dlNext = data.next;
  app.dlShown += data.outputs.length;
  for (const o of data.outputs) $("dl-list").append(outputRow(o));
  $("dl-more").hidden = !app.dlNext;
}

/** Replaying "all that match" replays dead letters: with State set to anything else the list
 * shows none of them, and the button would replay what is not shown. */
function replayAllState() {
  const b = $("dl-replay-all");
  b.disabled = !["", "dead"].includes($("dl-state").value);
  b.title = b.disabled ? "Only dead letters are replayed: set State to any or dead" : "";
}

function outputRow(o) {
  const last = o.tries.length ? o.tries[o.tries.length - 1] : null;
  const open = app.open.has(o.id);
  const row = h("div", { class: "row" + (open ? " open" : ""), "data-id": o.id, "data-key": o.id, "data-state": o.state });
  const line = h("button", { class: "line", type: "button", "aria-expanded": open ? "true" : "false" },
    delivery(o),
    when(o.tries.length ? last.at : o.at),
    h("span", { class: "who", text: o.endpoint + " · " + o.userId + " / " + o.sessionId + " · Seq " + o.seq }),
    h("span", { class: "excerpt", text: excerpt(o.text ?? JSON.stringify(o.body)) }),
    h("span", { class: "nums", text: o.attempts + " attempt(s)" + (last ? " · last " + (last.status ?? "no answer") + " in " + last.latencyMs + " ms" : "") }));
  line.addEventListener("click", () => {
    if (app.open.has(o.id)) app.open.delete(o.id);
    else app.open.add(o.id);
    const again = outputRow(o);
    row.replaceWith(again);
    again.querySelector(".line").focus();
  });
  row.append(line);
  if (open) row.append(outputDetail(o));
  return row;
}

/** The first 200 characters of an output in its row; the whole body is in the row's detail. */
function excerpt(text) {
  return text.length > 200 ? text.slice(0, 200) + "…" : text;
}

function outputDetail(o) {
  const d = h("div", { class: "detail" });
  d.append(h("dl", { class: "kv" },
    h("dt", { text: "output id" }), h("dd", { class: "mono", text: o.id }),
    h("dt", { text: "webhook-id" }), h("dd", { class: "mono", text: o.webhookId ?? "– (not signed)" }),
    o.nextAttemptAt ? [h("dt", { text: "next attempt" }), h("dd", {}, Date.parse(o.nextAttemptAt) > Date.now() + 1000 ? when(o.nextAttemptAt)
      : h("span", { text: "due now: it goes out once the output before it in its session is done, or its webhook answers a probe" }))] : null,
    o.lastError ? [h("dt", { text: o.state === "dead" ? "reason" : "last error" }), h("dd", { class: "mono", text: o.lastError })] : null,
    o.replayedAs ? [h("dt", { text: "replayed as" }), h("dd", { class: "mono", text: "output #" + o.replayedAs })] : null));
  d.append(h("h3", { text: "attempts" }));
  if (!o.tries.length) d.append(h("div", { class: "muted", text: "none yet" }));
  else d.append(h("table", { class: "tries" },
    h("thead", {}, h("tr", {}, h("th", { text: "#" }), h("th", { text: "time" }), h("th", { text: "status" }),
      h("th", { text: "latency" }), h("th", { class: "hide-narrow", text: "answer (first bytes)" }))),
    h("tbody", {}, o.tries.map((t) => h("tr", {},
      h("td", { text: t.attempt }), h("td", {}, when(t.at)),
      h("td", {}, badge(t.delivered ? "delivered" : "failed", t.status ?? "no answer")),
      h("td", { text: t.latencyMs + " ms" }), h("td", { class: "answer hide-narrow", text: t.answer }))))));
  d.append(h("h3", { text: "body" }), h("pre", { class: "json", text: json(o.body) }));
  if (o.state === "dead" && o.deadLetterId) {
    const b = h("button", { type: "button", class: "replay", text: "Replay this dead letter" });
    b.addEventListener("click", async () => {
      try {
        const r = await api("POST", "/api/deadletters/" + o.deadLetterId + "/replay");
        $("dl-status").textContent = "replayed as output #" + r.outputId + " (Seq " + r.seq + ")";
        await refreshDeliveries(true);
      } catch (e) {
        $("dl-status").textContent = e.message;
      }
    });
    d.append(h("div", { class: "buttons" }, b));
  }
  return d;
}

async function replayAll() {
  const f = dlFilter();
  $("dl-status").textContent = "replaying…";
  try {
    const r = await api("POST", "/api/deadletters/replay" + qs({ endpoint: f.endpoint, user: f.user, session: f.session, since: f.since }));
    let msg = r.replayed.length + " dead letter(s) replayed";
    if (r.refused.length) msg += ", " + r.refused.length + " refused (" + r.refused[0].message + ")";
    if (r.more) msg += "; more are left: replay again";
    $("dl-status").textContent = msg;
    await refreshDeliveries(true);
  } catch (e) {
    $("dl-status").textContent = e.message;
  }
}

// --- sessions ---------------------------------------------------------------------------------

async function refreshSessions() {
  const data = await api("GET", "/api/sessions" + qs({ endpoint: $("ss-endpoint").value, q: $("ss-q").value.trim(), limit: 50 }));
  const box = $("ss-list");
  keepFocus(box, () => {
    clear(box);
    if (!data.sessions.length) box.append(h("div", { class: "empty card", text: "No session matches." }));
    for (const s of data.sessions) box.append(sessionRow(s));
  });
  if (app.selected) await openSession(app.selected).catch((e) => showSessionError(e));
}

function sessionRow(s) {
  const sel = app.selected;
  const isSel = sel && sel.endpoint === s.endpoint && sel.userId === s.userId && sel.sessionId === s.sessionId;
  const row = h("div", { class: "row" + (isSel ? " open" : ""), "data-key": JSON.stringify([s.endpoint, s.userId, s.sessionId]) });
  // "idle": the session's state was forgotten (or it only ever received notifies); its Seq is kept.
  const line = h("button", { class: "line", type: "button" },
    s.hasState ? badge("delivering", "has state") : badge("idle", "no state"),
    h("span", { class: "who", text: s.endpoint + " · " + s.userId + " / " + s.sessionId }),
    h("span", { class: "nums", text: s.messageCount + " message(s) · last Seq " + s.lastSeq }),
    when(s.updatedAt));
  line.addEventListener("click", async () => {
    app.selected = s;
    await refreshSessions().catch(showSessionError);
    // On a narrow screen the detail is below the list: bring it into view.
    $("ss-detail").scrollIntoView({ block: "nearest" });
  });
  row.append(line);
  return row;
}

function showSessionError(e) {
  const d = clear($("ss-detail"));
  d.hidden = false;
  d.append(h("p", { class: "error", text: e.message }));
}

async function openSession(s) {
  const d = $("ss-detail");
  let data;
  try {
    data = await api("GET", sessionPath(s.endpoint, s.userId, s.sessionId));
  } catch (e) {
    if (e.status !== 404) throw e;
    data = null;
  }
  clear(d).hidden = false;
  d.append(h("h2", { class: "mono", text: s.userId + " / " + s.sessionId }));
  if (!data) {
    d.append(h("p", { class: "muted", text: "This session has no state (forgotten, or it only received notifies); its output counter is kept." }));
  } else {
    const known = ["endpoint", "userId", "sessionId", "context", "entrypoint", "pendingQuestion", "messageCount", "lastSeq", "transcript"];
    d.append(h("dl", { class: "kv" },
      h("dt", { text: "endpoint" }), h("dd", { text: data.endpoint }),
      h("dt", { text: "messages" }), h("dd", { text: data.messageCount }),
      h("dt", { text: "last Seq" }), h("dd", { text: data.lastSeq }),
      h("dt", { text: "entrypoint" }), h("dd", { class: "mono", text: json(data.entrypoint) }),
      h("dt", { text: "pending question" }), h("dd", { class: "mono", text: data.pendingQuestion ? json(data.pendingQuestion) : "none" }),
      h("dt", { text: "last change" }), h("dd", {}, when(s.updatedAt))));
    d.append(h("h3", { text: "context" }), h("pre", { id: "ss-context", class: "json", text: json(data.context) }));
    for (const [k, v] of Object.entries(data)) {
      if (!known.includes(k)) d.append(h("h3", { text: k }), h("pre", { class: "json", text: json(v) }));
    }
    if (Array.isArray(data.transcript)) {
      d.append(h("h3", { text: "transcript" }));
      const t = h("div", { class: "timeline" });
      for (const l of data.transcript) {
        t.append(h("div", { class: "msg " + (l.source === "user" ? "user" : "bot") },
          h("div", { class: "text", text: l.text }), h("div", { class: "meta" }, when(l.at))));
      }
      if (!data.transcript.length) t.append(h("div", { class: "muted", text: "empty" }));
      d.append(t);
    } else {
      d.append(h("p", { class: "muted", text: "No transcript: the endpoint does not collect conversations (dataProtection.collectConversations)." }));
    }
  }
  const forget = h("button", { id: "ss-forget", type: "button", class: "ghost danger", text: "Forget session" });
  forget.addEventListener("click", () => confirmButton(forget, "Click again to forget it", async () => {
    try {
      await api("DELETE", sessionPath(s.endpoint, s.userId, s.sessionId));
    } catch (e) {
      if (e.status !== 404) return showSessionError(e);
    }
    await refreshSessions();
  }));
  const panel = h("button", { id: "ss-open", type: "button", class: "ghost", text: "Open in the interaction panel" });
  panel.addEventListener("click", () => {
    $("ia-endpoint").value = s.endpoint;
    $("ia-user").value = s.userId;
    $("ia-session").value = s.sessionId;
    keyField();
    location.hash = "#interact";
  });
  d.append(h("div", { class: "buttons" }, panel, forget));
}
