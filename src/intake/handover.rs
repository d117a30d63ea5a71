//! The agent side of a handover (handover.md): `POST /handover/{URLToken}/messages` and `/end`
//! for the generic agent desk (a key of `agentKeys` in `X-API-Key`), and
//! `POST /handover/{URLToken}/chatwoot?token=…` for Chatwoot's webhook.
//!
//! What the agent side sends is queued as a job of the session (`agent_message`, `agent_end`)
//! through the writer, like a user's message: it is answered 200 once it is durably queued, and
//! runs in the session's order (so an agent's message gets the session's next Seq). The session
//! is found from the `handoverId` itself (`engine/handover/id.rs`) and its stored state says
//! whether that handover is the active one (else 404 `unknown_handover`, 409 `handover_ended`).

use serde_json::{Map, Value, json};
use tiny_http::{Method, Request};

use super::HttpContext;
use super::reply::{Reply, Route, header_value};
use super::routes::{check_content_type, read_body, shutting_down};
use crate::config::{Endpoint, Handover};
use crate::crypto::{constant_time_eq, key_matches};
use crate::domain::{JobKind, SessionKey};
use crate::engine::AcceptError;
use crate::engine::handover::{chatwoot, id};
use crate::flow::{HandoverState, SessionState};
use crate::util::now_ms;
use crate::wire::{self, Accepted, AgentAccepted, MAX_TEXT_CHARS};

/// The handover as the admin session view shows it.
pub(super) fn view(h: &HandoverState) -> Value {
    json!({ "status": h.status.as_str(), "provider": h.provider, "handoverId": h.id,
            "since": crate::util::iso8601(h.since_ms), "agentName": h.agent_name })
}

/// `/handover/{token}/{what}`.
pub(super) fn route(cx: &HttpContext, req: &mut Request, token: &str, what: &str) -> Reply {
    let reply = match answer(cx, req, token, what) {
        Ok(r) | Err(r) => r,
    };
    reply.route(Route::Handover)
}

/// What an agent route asks for, once read.
struct AgentInput {
    handover_id: String,
    text: Option<String>,
    data: Option<Map<String, Value>>,
    agent_name: Option<String>,
    kind: JobKind,
}

fn answer(cx: &HttpContext, req: &mut Request, token: &str, what: &str) -> Result<Reply, Reply> {
    if *req.method() != Method::Post {
        return Err(Reply::error(405, "method_not_allowed", "this route only accepts POST").header("Allow", "POST"));
    }
    let ep = cx
        .config
        .endpoint_by_token(token)
        .ok_or_else(|| Reply::error(404, "unknown_endpoint", "no endpoint has this URL token"))?;
    let label = |r: Reply| r.endpoint(Some(&ep.name));
    if !ep.enabled {
        return Err(label(Reply::error(403, "endpoint_disabled", "this endpoint is disabled")));
    }
    if cx.health.stopping() {
        return Err(label(shutting_down()));
    }
    let input = match (what, &ep.handover) {
        ("messages" | "end", Some(Handover::Webhook(w))) => {
            let ok = header_value(req, "X-API-Key").is_some_and(|k| key_matches(k, &w.agent_keys));
            if !ok {
                let msg = "the agent routes need a key of the endpoint's handover.agentKeys in X-API-Key";
                return Err(label(Reply::error(401, "unauthorized", msg)));
            }
            let body = read_json(cx, req).map_err(label)?;
            desk_input(what, &body).map_err(label)?
        }
        ("chatwoot", Some(Handover::Chatwoot(c))) => {
            let token = query_param(req.url(), "token").unwrap_or_default();
            if !constant_time_eq(token.as_bytes(), c.webhook_token.as_bytes()) {
                let msg = "Chatwoot's webhook URL needs ?token= with the endpoint's handover.webhookToken";
                return Err(label(Reply::error(401, "unauthorized", msg)));
            }
            let body = read_json(cx, req).map_err(label)?;
            match chatwoot_input(&body).map_err(label)? {
                Some(input) => input,
                // Events of conversations hookflow did not start, and of kinds it does not use.
                None => return Ok(label(Reply::json(200, json!({"status": "ignored"})))),
            }
        }
        ("messages" | "end" | "chatwoot", _) => {
            let msg = format!("this endpoint has no handover provider that uses /handover/{{URLToken}}/{what}");
            return Err(label(Reply::error(404, "not_found", &msg)));
        }
        _ => {
            return Err(label(Reply::error(
                404,
                "not_found",
                "no such route; the agent routes are /messages and /end",
            )));
        }
    };
    let key = current(cx, ep, &input.handover_id).map_err(label)?;
    Ok(label(queue(cx, key, input)))
}

fn read_json(cx: &HttpContext, req: &mut Request) -> Result<Map<String, Value>, Reply> {
    check_content_type(req)?;
    let body = read_body(req, cx.config.limits.max_body_bytes)?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        let msg = crate::wire::not_json(&e);
        Reply::error(400, "invalid_json", &msg)
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(Reply::error(400, "invalid_json", "the body must be a JSON object")),
    }
}

fn invalid(msg: &str) -> Reply {
    Reply::error(400, "invalid_request", msg)
}

/// An optional string field.
fn opt_str(m: &Map<String, Value>, name: &str) -> Result<Option<String>, Reply> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("\"{name}\" must be a string"))),
    }
}

/// The body of `/messages` or `/end` (handover.md, the agent desk's routes).
fn desk_input(what: &str, m: &Map<String, Value>) -> Result<AgentInput, Reply> {
    let handover_id = opt_str(m, "handoverId")?.ok_or_else(|| invalid("\"handoverId\" is required"))?;
    if what == "end" {
        match opt_str(m, "status")?.as_deref() {
            None | Some("completed") => {}
            Some(other) => return Err(invalid(&format!("\"status\" must be \"completed\", got {other:?}"))),
        }
        let agent_name = opt_str(m, "agentName")?;
        return Ok(AgentInput { handover_id, text: None, data: None, agent_name, kind: JobKind::AgentEnd });
    }
    let text = opt_str(m, "text")?;
    if text.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS) {
        return Err(invalid(&format!("\"text\" is longer than {MAX_TEXT_CHARS} characters")));
    }
    let data = match m.get("data") {
        None | Some(Value::Null) => None,
        Some(Value::Object(d)) if crate::util::depth(&Value::Object(d.clone())) > wire::MAX_DATA_DEPTH => {
            return Err(invalid(&format!("\"data\" is nested deeper than {} levels", wire::MAX_DATA_DEPTH)));
        }
        Some(Value::Object(d)) => Some(d.clone()),
        Some(_) => return Err(invalid("\"data\" must be a JSON object")),
    };
    if data.is_none() && text.as_deref().is_none_or(str::is_empty) {
        return Err(invalid("an agent message needs a non-empty \"text\" or a \"data\" object"));
    }
    let agent_name = opt_str(m, "agentName")?;
    Ok(AgentInput { handover_id, text, data, agent_name, kind: JobKind::AgentMessage })
}

/// A Chatwoot webhook event: an agent's reply (`message_created`, outgoing, not private) or the
/// end (`conversation_status_changed` to `resolved`); `None` for everything else.
fn chatwoot_input(m: &Map<String, Value>) -> Result<Option<AgentInput>, Reply> {
    let event = m.get("event").and_then(Value::as_str).ok_or_else(|| invalid("\"event\" is required"))?;
    // The handoverId hookflow put into the conversation's additional_attributes at the start.
    let handover_id = |conversation: Option<&Value>| {
        conversation
            .and_then(|c| c.pointer(&format!("/additional_attributes/{}", chatwoot::ATTRIBUTE)))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match event {
        "message_created" => {
            let outgoing = m.get("message_type").and_then(Value::as_str) == Some("outgoing");
            let private = m.get("private").and_then(Value::as_bool).unwrap_or(false);
            let Some(id) = handover_id(m.get("conversation")).filter(|_| outgoing && !private) else { return Ok(None) };
            let text = m.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
            if text.is_empty() {
                return Ok(None);
            }
            let agent_name = m.get("sender").and_then(|s| s.get("name")).and_then(Value::as_str).map(str::to_owned);
            Ok(Some(AgentInput {
                handover_id: id,
                text: Some(text),
                data: None,
                agent_name,
                kind: JobKind::AgentMessage,
            }))
        }
        "conversation_status_changed" if m.get("status").and_then(Value::as_str) == Some("resolved") => {
            let conversation = Value::Object(m.clone());
            let Some(id) = handover_id(Some(&conversation)) else { return Ok(None) };
            let agent_name = conversation.pointer("/meta/assignee/name").and_then(Value::as_str).map(str::to_owned);
            Ok(Some(AgentInput { handover_id: id, text: None, data: None, agent_name, kind: JobKind::AgentEnd }))
        }
        _ => Ok(None),
    }
}

/// The session whose active handover `handover_id` is: 404 `unknown_handover`, 409
/// `handover_ended`.
fn current(cx: &HttpContext, ep: &Endpoint, handover_id: &str) -> Result<SessionKey, Reply> {
    let unknown = || Reply::error(404, "unknown_handover", "no handover of this endpoint has this handoverId");
    // On a store that cannot hold U+0000, a session whose ids had one was copied under their
    // storable form (`store copy`); the whole id is still compared with the session's below.
    let key = id::session(handover_id)
        .map(|k| if cx.store.holds_nul() { k } else { k.storable_form() })
        .filter(|k| k.endpoint == ep.name)
        .ok_or_else(unknown)?;
    let row = cx.store.session(&key).map_err(super::admin::store_error)?;
    let state: Option<SessionState> = row.and_then(|r| r.state).and_then(|s| serde_json::from_str(&s).ok());
    let same = |id: &str| constant_time_eq(id.as_bytes(), handover_id.as_bytes());
    let earlier = state.as_ref().is_some_and(|s| s.ended_handovers.iter().any(|id| same(id)));
    let h = state.and_then(|s| s.handover).filter(|h| same(&h.id));
    match h {
        None if earlier => {
            let msg = "this handover has ended, and the session has had another since; the bot or a newer handover has the conversation";
            Err(Reply::error(409, "handover_ended", msg))
        }
        None => Err(unknown()),
        Some(h) if !h.is_active() => {
            let msg = format!("this handover has ended ({}); the bot has the conversation again", h.status.as_str());
            Err(Reply::error(409, "handover_ended", &msg))
        }
        Some(_) => Ok(key),
    }
}

fn queue(cx: &HttpContext, key: SessionKey, input: AgentInput) -> Reply {
    let trace_id = wire::new_trace_id();
    let accepted = Accepted { text: input.text, data: input.data, trace_id, ip: None, test_mode: false, at: now_ms() };
    let job = AgentAccepted { accepted, handover_id: input.handover_id, agent_name: input.agent_name };
    let payload = serde_json::to_string(&job).expect("an agent job is plain JSON");
    match cx.writer.accept(key, input.kind, payload) {
        Ok(_) => Reply::json(200, json!({"status": "accepted"})),
        Err(AcceptError::Full) => Reply::error(503, "overloaded", "too many messages are waiting; send again shortly")
            .header("Retry-After", "1"),
        Err(AcceptError::Store) => {
            Reply::error(503, "store_unavailable", "the message could not be stored; send it again")
                .header("Retry-After", "5")
        }
        Err(AcceptError::Stopped) => shutting_down(),
    }
}

/// A query parameter's value, percent-decoded.
fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, q) = url.split_once('?')?;
    q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).map(super::reply::percent_decode)
}
