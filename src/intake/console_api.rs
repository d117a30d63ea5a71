//! The admin routes behind the console (console.md, "The API behind it"): the delivery log, the
//! session search, the turn traces, the overview numbers, and the replay of every dead letter a
//! filter matches. Reached through `admin::route`, so every one needs the admin key; usable by
//! scripts as well as by the page (README, Admin API).
//!
//! The page polls `GET /api/stats` once a second and reads the rest again only when its
//! `changes` value moved (README, "Live updates"): a poll costs a thread about a millisecond,
//! where a long poll would hold one of the few http threads for as long as it waits.

use std::collections::BTreeMap;

use serde_json::Value;
use tiny_http::{Method, Request};

use super::HttpContext;
use super::admin::{known_endpoint, store_error};
use super::reply::{Reply, path_key, percent_decode};
use crate::delivery::DOWN_AFTER;
use crate::domain::{OutputEntry, OutputFilter, OutputState, Replay, SessionKey, TraceRow};
use crate::ops::metrics::{EndpointAttempts, MINUTES};
use crate::util::{iso8601, now_ms, obj, parse_iso8601};

/// Default and largest page of the delivery log and the session search.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 200;
/// Default and largest number of dead letters one bulk replay queues.
const DEFAULT_REPLAY_LIMIT: usize = 1000;
const MAX_REPLAY_LIMIT: usize = 10_000;

/// The routes this file answers, for `admin::route`.
pub(crate) fn handles(rest: &[&str]) -> bool {
    matches!(rest, ["outputs"] | ["sessions"] | ["stats"] | ["deadletters", "replay"] | ["sessions", _, _, _, "turns"])
}

/// Answers one of `handles`' routes (the admin key is checked already).
pub(crate) fn route(cx: &HttpContext, req: &Request, rest: &[&str]) -> Reply {
    let post = matches!(rest, ["deadletters", "replay"]);
    let get = *req.method() == Method::Get || *req.method() == Method::Head;
    let method_ok = if post { *req.method() == Method::Post } else { get };
    if !method_ok {
        let allow = if post { "POST" } else { "GET" };
        return Reply::error(405, "method_not_allowed", &format!("use {allow}")).header("Allow", allow);
    }
    let result = match rest {
        ["outputs"] => outputs(cx, req),
        ["sessions"] => sessions(cx, req),
        ["stats"] => stats(cx),
        ["deadletters", "replay"] => replay(cx, req),
        ["sessions", ep, user, session, "turns"] => {
            path_key(ep, user, session, cx.store.holds_nul()).and_then(|key| turns(cx, &key))
        }
        _ => unreachable!("handles() lists the routes"),
    };
    result.unwrap_or_else(|r| r)
}

type Answer = Result<Reply, Reply>;

pub(super) fn invalid(message: String) -> Reply {
    Reply::error(400, "invalid_request", &message)
}

// --- query strings -------------------------------------------------------------------------------

/// The query parameters, decoded; a parameter not in `known` (or `api_key`) is a 400 naming it.
/// On a store that cannot hold U+0000 (`Store::holds_nul`), a value with one is a 400: nothing
/// there can match it, and PostgreSQL refuses it in a parameter.
pub(super) fn query(req: &Request, known: &[&str], holds_nul: bool) -> Result<BTreeMap<String, String>, Reply> {
    let mut out = BTreeMap::new();
    let q = req.url().split_once('?').map_or("", |(_, q)| q);
    for kv in q.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = percent_decode(k);
        if k == "api_key" {
            continue;
        }
        if !known.contains(&k.as_str()) {
            let hint = match crate::util::suggest(&k, known) {
                s if s.is_empty() => format!("; known here: {}", known.join(", ")),
                s => s,
            };
            return Err(invalid(format!("unknown query parameter {k:?}{hint}")));
        }
        let v = percent_decode(v);
        if !holds_nul && v.contains('\0') {
            return Err(invalid(format!("query parameter {k:?} must not contain U+0000 (the NUL character)")));
        }
        if out.contains_key(&k) {
            return Err(invalid(format!("query parameter {k:?} is given twice: give it once")));
        }
        if !v.is_empty() {
            out.insert(k, v);
        }
    }
    Ok(out)
}

pub(super) fn limit(q: &BTreeMap<String, String>, default: usize, max: usize) -> Result<usize, Reply> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid(format!("limit must be a whole number from 1 to {max}, got {v:?}"))),
        },
    }
}

/// A time: Unix milliseconds or ISO 8601 (`2026-01-31T12:00:00Z`).
fn time(q: &BTreeMap<String, String>, name: &str) -> Result<Option<i64>, Reply> {
    let Some(v) = q.get(name) else { return Ok(None) };
    v.parse::<i64>().ok().or_else(|| parse_iso8601(v)).filter(|ms| *ms >= 0).map(Some).ok_or_else(|| {
        invalid(format!(
            "{name} must be Unix milliseconds or an ISO 8601 time in UTC like 2026-01-31T12:00:00Z, got {v:?}"
        ))
    })
}

/// The `endpoint` filter, which must name a configured endpoint: a typo would otherwise match
/// nothing and look like an empty store (or a bulk replay that found nothing to replay), while a
/// session URL naming an unknown endpoint is refused too.
fn endpoint<'q>(cx: &HttpContext, q: &'q BTreeMap<String, String>) -> Result<Option<&'q str>, Reply> {
    match q.get("endpoint") {
        Some(name) if cx.config.endpoint_by_name(name).is_none() => {
            let names = cx.config.endpoint_names();
            let hint = match crate::util::suggest(name, &names) {
                s if s.is_empty() => format!(" (the config has: {})", names.join(", ")),
                s => s,
            };
            Err(invalid(format!("query parameter \"endpoint\": no endpoint is named {name:?}{hint}")))
        }
        e => Ok(e.map(String::as_str)),
    }
}

/// The endpoint, userId and sessionId filters.
fn filter(cx: &HttpContext, q: &BTreeMap<String, String>) -> Result<OutputFilter, Reply> {
    Ok(OutputFilter {
        endpoint: endpoint(cx, q)?.map(str::to_owned),
        user_id: q.get("user").cloned(),
        session_id: q.get("session").cloned(),
        ..OutputFilter::default()
    })
}

// --- GET /api/outputs ----------------------------------------------------------------------------

fn outputs(cx: &HttpContext, req: &Request) -> Answer {
    let q = query(
        req,
        &["endpoint", "user", "session", "state", "before", "since", "until", "limit"],
        cx.store.holds_nul(),
    )?;
    let state = match q.get("state") {
        None => None,
        Some(s) => Some(OutputState::parse(s).ok_or_else(|| {
            let names: Vec<&str> = OutputState::ALL.iter().map(|s| s.as_str()).collect();
            invalid(format!("state must be one of {}, got {s:?}", names.join(", ")))
        })?),
    };
    let before_id = match q.get("before") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
            invalid(format!("before must be an output id (the \"next\" of the previous page), got {v:?}"))
        })?),
    };
    let limit = limit(&q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let f = OutputFilter {
        state,
        before_id,
        since_ms: time(&q, "since")?,
        until_ms: time(&q, "until")?,
        limit,
        ..filter(cx, &q)?
    };
    let mut list = cx.store.outputs(&f).map_err(store_error)?;
    let cut = super::admin::cut_to_page(&mut list, |e| e.body.len());
    let next = (cut || list.len() == limit).then(|| list.last().map(|e| e.id)).flatten();
    let items: Vec<Value> = list.iter().map(|e| output_json(cx, e)).collect();
    Ok(Reply::json(200, obj(vec![("outputs", items.into()), ("next", next.into())])))
}

fn output_json(cx: &HttpContext, e: &OutputEntry) -> Value {
    let k = &e.key;
    // The id a receiver saw in `webhook-id` (sent when the endpoint signs its outputs).
    let signed = cx.config.endpoint_by_name(&k.endpoint).is_some_and(|ep| ep.webhook.secret.is_some());
    let webhook_id = signed.then(|| crate::crypto::webhook_id(&k.endpoint, &k.user_id, &k.session_id, e.seq, &e.body));
    let body: Value = serde_json::from_str(&e.body).unwrap_or_else(|_| Value::String(e.body.clone()));
    let pending = matches!(e.state, OutputState::Queued | OutputState::Retrying);
    let mut tries = Vec::with_capacity(e.tries.len());
    for t in &e.tries {
        tries.push(obj(vec![
            ("attempt", t.attempt.into()),
            ("at", iso8601(t.at_ms).into()),
            ("status", t.status.into()),
            ("latencyMs", t.latency_ms.into()),
            ("answer", t.answer.as_str().into()),
            ("delivered", t.delivered.into()),
        ]));
    }
    let text = body.pointer("/AIOutput/text").cloned().unwrap_or(Value::Null);
    obj(vec![
        ("id", e.id.into()),
        ("endpoint", k.endpoint.as_str().into()),
        ("userId", k.user_id.as_str().into()),
        ("sessionId", k.session_id.as_str().into()),
        ("seq", e.seq.into()),
        ("webhookId", webhook_id.into()),
        ("state", e.state.as_str().into()),
        ("attempts", e.attempts.into()),
        ("at", iso8601(e.at_ms).into()),
        ("nextAttemptAt", pending.then(|| iso8601(e.at_ms)).into()),
        ("lastError", e.last_error.clone().into()),
        ("deadLetterId", e.dead_letter.into()),
        ("replayedAs", e.replayed_as.into()),
        ("text", text),
        ("body", body),
        ("tries", tries.into()),
    ])
}

// --- GET /api/sessions ---------------------------------------------------------------------------

fn sessions(cx: &HttpContext, req: &Request) -> Answer {
    let q = query(req, &["endpoint", "q", "limit"], cx.store.holds_nul())?;
    let limit = limit(&q, DEFAULT_LIMIT, MAX_LIMIT)?;
    let text = q.get("q").map_or("", String::as_str);
    let found = cx.store.find_sessions(endpoint(cx, &q)?, text, limit).map_err(store_error)?;
    let mut items = Vec::with_capacity(found.len());
    for s in found {
        items.push(obj(vec![
            ("endpoint", s.key.endpoint.into()),
            ("userId", s.key.user_id.into()),
            ("sessionId", s.key.session_id.into()),
            ("messageCount", s.messages.into()),
            ("lastSeq", s.seq.into()),
            ("updatedAt", iso8601(s.updated_ms).into()),
            ("hasState", s.has_state.into()),
        ]));
    }
    Ok(Reply::json(200, obj(vec![("sessions", items.into())])))
}

// --- GET /api/sessions/{endpoint}/{userId}/{sessionId}/turns -------------------------------------

fn turns(cx: &HttpContext, key: &SessionKey) -> Answer {
    known_endpoint(cx, key)?;
    let rows = cx.store.traces(key).map_err(store_error)?;
    let items: Vec<Value> = rows.into_iter().map(turn_json).collect();
    Ok(Reply::json(200, obj(vec![("turns", items.into())])))
}

fn turn_json(t: TraceRow) -> Value {
    let mut v: Value = serde_json::from_str(&t.body).unwrap_or_else(|_| obj(vec![]));
    if let Value::Object(m) = &mut v {
        m.insert("at".into(), iso8601(t.at_ms).into());
        m.insert("traceId".into(), t.trace_id.into());
        m.insert("seqFrom".into(), t.first_seq.into());
        m.insert("seqTo".into(), t.last_seq.into());
    }
    v
}

// --- GET /api/stats ------------------------------------------------------------------------------

fn stats(cx: &HttpContext) -> Answer {
    let changes = cx.store.changes().map_err(store_error)?;
    let counts = cx.store.endpoint_counts().map_err(store_error)?;
    let attempts = cx.metrics.endpoint_attempts();
    let now = now_ms();
    let mut endpoints = Vec::with_capacity(cx.config.endpoints.len());
    for ep in &cx.config.endpoints {
        let c = counts.iter().find(|c| c.endpoint == ep.name);
        let a = attempts.get(&ep.name).cloned().unwrap_or_default();
        endpoints.push(obj(vec![
            ("name", ep.name.as_str().into()),
            ("enabled", ep.enabled.into()),
            // The query may carry a token (config::shown_url).
            ("webhook", crate::config::shown_url(&ep.webhook.url).into()),
            ("state", state(&a).into()),
            ("queued", c.map_or(0, |c| c.queued).into()),
            ("deadLetters", c.map_or(0, |c| c.dead_letters).into()),
            ("delivered", a.delivered.into()),
            ("failedAttempts", a.failed.into()),
            ("consecutiveFailures", a.consecutive_failures.into()),
            ("lastAttemptAt", (a.last_ms > 0).then(|| iso8601(a.last_ms)).into()),
            ("minutes", minutes(&a, now)),
        ]));
    }
    let (delivered, retried, dead) = cx.metrics.delivery_totals();
    let (depth, sessions) = super::routes::backlog(cx);
    Ok(Reply::json(
        200,
        obj(vec![
            ("changes", changes.into()),
            ("now", iso8601(now).into()),
            ("uptimeSeconds", cx.metrics.uptime().as_secs().into()),
            ("queueDepth", depth.into()),
            ("sessionsActive", sessions.into()),
            ("delivered", delivered.into()),
            ("retried", retried.into()),
            ("dead", dead.into()),
            ("endpoints", endpoints.into()),
        ]),
    ))
}

/// The overview's word for an endpoint: `down` after as many consecutive failures as make the
/// sender lanes hold its outputs, `failing` after fewer, `delivering`, or `idle` (no attempt yet).
fn state(a: &EndpointAttempts) -> &'static str {
    match a.consecutive_failures {
        n if n >= DOWN_AFTER as u64 => "down",
        n if n > 0 => "failing",
        _ if a.last_ms > 0 => "delivering",
        _ => "idle",
    }
}

/// The last hour, one value a minute, oldest first (the current minute last).
fn minutes(a: &EndpointAttempts, now_ms: i64) -> Value {
    let this = now_ms / 60_000;
    let mut delivered = Vec::with_capacity(MINUTES);
    let mut failed = Vec::with_capacity(MINUTES);
    let mut latency = Vec::with_capacity(MINUTES);
    for minute in this + 1 - MINUTES as i64..=this {
        let slot = a.minutes.get(minute.rem_euclid(MINUTES as i64) as usize).filter(|s| s.minute == minute);
        let (d, f) = slot.map_or((0, 0), |s| (s.delivered, s.failed));
        delivered.push(d);
        failed.push(f);
        latency
            .push(slot.filter(|s| s.delivered > 0).map(|s| (s.latency_ms / s.delivered as f64 * 10.0).round() / 10.0));
    }
    obj(vec![
        ("start", iso8601((this + 1 - MINUTES as i64) * 60_000).into()),
        ("delivered", delivered.into()),
        ("failed", failed.into()),
        ("latencyMs", latency.into()),
    ])
}

// --- POST /api/deadletters/replay ----------------------------------------------------------------

fn replay(cx: &HttpContext, req: &Request) -> Answer {
    let q = query(req, &["endpoint", "user", "session", "since", "until", "limit"], cx.store.holds_nul())?;
    let limit = limit(&q, DEFAULT_REPLAY_LIMIT, MAX_REPLAY_LIMIT)?;
    // The time is when the output became a dead letter, as in the delivery log.
    let f = OutputFilter { limit, since_ms: time(&q, "since")?, until_ms: time(&q, "until")?, ..filter(cx, &q)? };
    let configured = |name: &str| cx.config.endpoint_by_name(name).is_some();
    let done = cx.store.replay_matching(&f, now_ms(), &configured).map_err(store_error)?;
    let more = done.len() == limit;
    let (mut replayed, mut refused) = (Vec::new(), Vec::new());
    for (dead, r) in done {
        match r {
            Replay::Queued { id, seq } => {
                replayed.push(obj(vec![("deadLetterId", dead.into()), ("outputId", id.into()), ("seq", seq.into())]))
            }
            Replay::EndpointGone(name) => refused.push(obj(vec![
                ("deadLetterId", dead.into()),
                ("code", "endpoint_not_configured".into()),
                ("message", format!("endpoint {name:?} is not in the config; add it back, then replay").into()),
            ])),
            // Another replay took it meanwhile (the transaction saw it gone).
            Replay::Unknown => {}
        }
    }
    if !replayed.is_empty() {
        cx.wake.all();
    }
    Ok(Reply::json(
        200,
        obj(vec![
            ("status", "queued".into()),
            ("replayed", replayed.into()),
            ("refused", refused.into()),
            ("more", more.into()),
        ]),
    ))
}
