//! The admin API under `/api/` (http-api.md §4): endpoints, sessions, dead letters. Every route
//! needs an admin key.

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use super::HttpContext;
use super::reply::{Reply, Route, admin_ok, path_key};
use crate::config::shown_url;
use crate::domain::{Replay, SessionKey, SessionRow, TranscriptLine};
use crate::engine::translate::TRANSCRIPT_KEY;
use crate::flow::model::OpKind;
use crate::flow::{Flow, SessionState};
use crate::store::StoreError;
use crate::util::now_ms;

/// Routes `/api/{rest..}`.
pub(crate) fn route(cx: &HttpContext, req: &Request, rest: &[&str]) -> Reply {
    if !admin_ok(req, &cx.config.admin_keys) {
        return Reply::error(401, "unauthorized", "the admin API needs an admin key in X-API-Key or api_key");
    }
    let m = req.method();
    // HEAD is GET without the body (tiny_http leaves it out), as HTTP has it.
    let get = *m == Method::Get || *m == Method::Head;
    // Replicas: a database known not to answer would hold this http thread for as long as it
    // does not; the console shows the 503's reason and keeps polling.
    if let Some(f) = cx.writer.unanswered() {
        return Reply::error(503, "store_unavailable", f.reason()).header("Retry-After", "5").route(Route::Admin);
    }
    let reply = match rest {
        _ if super::console_api::handles(rest) => super::console_api::route(cx, req, rest),
        ["endpoints"] if get => endpoints(cx),
        ["sessions", ep, user, session] if get || *m == Method::Delete => {
            match path_key(ep, user, session, cx.store.holds_nul()) {
                Err(reply) => reply,
                Ok(key) if get => get_session(cx, &key),
                Ok(key) => delete_session(cx, &key),
            }
        }
        ["deadletters"] if get => dead_letters(cx, req),
        ["deadletters", id, "replay"] if *m == Method::Post => replay(cx, id),
        ["endpoints"] | ["deadletters"] => Reply::error(405, "method_not_allowed", "use GET").header("Allow", "GET"),
        ["sessions", _, _, _] => {
            Reply::error(405, "method_not_allowed", "use GET or DELETE").header("Allow", "GET, DELETE")
        }
        ["deadletters", _, "replay"] => Reply::error(405, "method_not_allowed", "use POST").header("Allow", "POST"),
        _ => Reply::error(404, "not_found", "no such admin route"),
    };
    reply.route(Route::Admin)
}

pub(super) fn store_error(e: StoreError) -> Reply {
    log::error!("admin: {e}");
    Reply::error(500, "store_error", "the store could not be read; see the server log")
}

fn endpoints(cx: &HttpContext) -> Reply {
    let list: Vec<Value> = cx
        .config
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "urlToken": e.url_token,
                "enabled": e.enabled,
                "flow": e.flow.display().to_string(),
                // The query may carry a token (config::shown_url); the password is never shown.
                "webhook": {"url": shown_url(&e.webhook.url), "user": e.webhook.user, "signed": e.webhook.secret.is_some()},
                "inboundKeys": e.inbound_keys.len(),
            })
        })
        .collect();
    Reply::json(200, json!({ "endpoints": list }))
}

/// 404 `unknown_endpoint` for a session URL naming an endpoint that is not configured.
pub(super) fn known_endpoint(cx: &HttpContext, key: &SessionKey) -> Result<(), Reply> {
    match cx.config.endpoint_by_name(&key.endpoint) {
        Some(_) => Ok(()),
        None => Err(Reply::error(404, "unknown_endpoint", &format!("no endpoint is named {:?}", key.endpoint))),
    }
}

fn get_session(cx: &HttpContext, key: &SessionKey) -> Reply {
    if let Err(r) = known_endpoint(cx, key) {
        return r;
    }
    match cx.store.session(key) {
        Ok(Some(SessionRow { state: Some(state), seq, messages, .. })) => {
            let state: Option<SessionState> = serde_json::from_str(&state).ok();
            let context = state.as_ref().map_or(Value::Null, |s| s.context.clone());
            let (entrypoint, question) = match (cx.flows.get(&key.endpoint), &state) {
                (Some(flow), Some(state)) => positions(flow, state),
                _ => (Value::Null, Value::Null),
            };
            let mut answer = json!({
                    "endpoint": key.endpoint, "userId": key.user_id, "sessionId": key.session_id,
                    "context": context,
                    "entrypoint": entrypoint,
                    "pendingQuestion": question,
                    "messageCount": messages,
                    "lastSeq": seq,
                    "handover": state.as_ref().and_then(|s| s.handover.as_ref()).map(super::handover::view),
            });
            let ep = cx.config.endpoint_by_name(&key.endpoint);
            // The user's profile, when the endpoint keeps profiles (it is the user's, across
            // endpoints: console.md shows it with the session).
            if ep.is_some_and(|e| e.data_protection.contact_profiles) {
                match cx.store.profile(&key.user_id) {
                    Ok(p) => answer["profile"] = p.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(Value::Null),
                    Err(e) => return store_error(e),
                }
            }
            if ep.is_some_and(|e| e.data_protection.collect_conversations) {
                match cx.store.transcript(key) {
                    Ok(lines) => answer["transcript"] = transcript_json(lines),
                    Err(e) => return store_error(e),
                }
            }
            Reply::json(200, answer)
        }
        Ok(_) => Reply::error(404, "unknown_session", "no such session"),
        Err(e) => store_error(e),
    }
}

/// Where the session's next message starts and the Question it waits at, by node (`id`, or
/// JSON path when the node has none) rather than by op index, which means nothing outside
/// the compiled Flow.
fn positions(flow: &Flow, state: &SessionState) -> (Value, Value) {
    if state.version != flow.version {
        // Saved against another version of the Flow: the next message starts at the top
        // (`flow::run`), and the old positions may name any node now.
        return (node_at(flow, 0), Value::Null);
    }
    let question = match &state.question {
        Some(p) => json!({ "node": node_at(flow, p.pc), "attempts": p.attempts }),
        None => Value::Null,
    };
    (node_at(flow, state.entry), question)
}

/// The node an op belongs to. Jumps (the end of an `if` branch, say) are followed to where they
/// lead; the end of a Flow file has no node and is shown as `(end of the Flow)`.
fn node_at(flow: &Flow, mut pc: usize) -> Value {
    for _ in 0..=flow.ops.len() {
        match flow.ops.get(pc).map(|op| &op.kind) {
            Some(OpKind::Jump(next)) => pc = *next,
            Some(OpKind::End { .. }) => return json!("(end of the Flow)"),
            Some(_) => {
                let op = &flow.ops[pc];
                return flow.nodes.get(op.node).map_or(Value::Null, |n| json!(n.name()));
            }
            None => return Value::Null,
        }
    }
    Value::Null
}

fn transcript_json(lines: Vec<TranscriptLine>) -> Value {
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            let mut data = serde_json::from_str::<Value>(&l.data).unwrap_or(Value::Null);
            // A translated line keeps its other text in its data (engine/translate): shown apart.
            let translation = data.as_object_mut().and_then(|d| d.remove(TRANSCRIPT_KEY));
            let mut line = json!({
                "source": l.source.as_str(),
                "text": l.text,
                "data": data,
                "at": crate::util::iso8601(l.at_ms),
            });
            if let Some(t) = translation {
                line["translation"] = t;
            }
            line
        })
        .collect();
    Value::Array(lines)
}

fn delete_session(cx: &HttpContext, key: &SessionKey) -> Reply {
    if let Err(r) = known_endpoint(cx, key) {
        return r;
    }
    match cx.store.delete_session(key) {
        Ok(true) => Reply::json(200, json!({"status": "deleted"})),
        Ok(false) => Reply::error(404, "unknown_session", "no such session"),
        Err(e) => store_error(e),
    }
}

/// Dead letters a page lists unless `limit` says otherwise, and at most.
const DEAD_PAGE: usize = 100;
const DEAD_PAGE_MAX: usize = 1000;
/// A page of dead letters or outputs ends early once the bodies on it pass this many bytes (one
/// row at least): dead letters pile up while a webhook is broken, and a body becomes a JSON tree
/// many times its size in memory, so one request must not read them all at once.
const PAGE_BYTES: usize = 1 << 20;

/// Cuts `list` after the rows whose bodies (`body`) fit in `PAGE_BYTES`, keeping one at least;
/// true when it cut.
pub(super) fn cut_to_page<T>(list: &mut Vec<T>, body: impl Fn(&T) -> usize) -> bool {
    let mut bytes = 0;
    let fits = list.iter().take_while(|row| {
        bytes += body(row);
        bytes <= PAGE_BYTES
    });
    let keep = fits.count().max(1).min(list.len());
    let cut = keep < list.len();
    list.truncate(keep);
    cut
}

fn dead_letters(cx: &HttpContext, req: &Request) -> Reply {
    use super::console_api::{invalid, limit, query};
    let page = || -> Result<Reply, Reply> {
        let q = query(req, &["after", "limit"], cx.store.holds_nul())?;
        let limit = limit(&q, DEAD_PAGE, DEAD_PAGE_MAX)?;
        let after = match q.get("after") {
            None => 0,
            Some(v) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                invalid(format!("after must be a dead letter id (the \"next\" of the previous page), got {v:?}"))
            })?,
        };
        let mut list = cx.store.dead_letters_page(after, limit).map_err(store_error)?;
        let full = list.len() == limit;
        let cut = cut_to_page(&mut list, |d| d.body.len());
        let next = (full || cut).then(|| list.last().map(|d| d.id)).flatten();
        let items: Vec<Value> = list
            .into_iter()
            .map(|d| {
                json!({
                    "id": d.id, "endpoint": d.key.endpoint, "userId": d.key.user_id,
                    "sessionId": d.key.session_id, "seq": d.seq, "attempts": d.attempts,
                    "lastError": d.last_error, "diedAt": crate::util::iso8601(d.died_at_ms),
                    "body": serde_json::from_str::<Value>(&d.body).unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(Reply::json(200, json!({ "deadLetters": items, "next": next })))
    };
    page().unwrap_or_else(|r| r)
}

fn replay(cx: &HttpContext, id: &str) -> Reply {
    let Ok(id) = id.parse::<i64>() else {
        return Reply::error(400, "invalid_request", "the dead letter id must be a number");
    };
    let configured = |name: &str| cx.config.endpoint_by_name(name).is_some();
    match cx.store.replay_dead_letter(id, now_ms(), &configured) {
        Ok(Replay::Queued { id, seq }) => {
            cx.wake.all();
            Reply::json(200, json!({"status": "queued", "outputId": id, "seq": seq}))
        }
        Ok(Replay::Unknown) => Reply::error(
            404,
            "unknown_dead_letter",
            "no dead letter has this id (a dead letter leaves the list once it is replayed: see GET /api/outputs?state=replayed)",
        ),
        Ok(Replay::EndpointGone(name)) => Reply::error(
            409,
            "endpoint_not_configured",
            &format!("the dead letter is for endpoint {name:?}, which is not in the config; add it back, then replay"),
        ),
        Err(e) => store_error(e),
    }
}
