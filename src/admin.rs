//! The admin API under `/api/` (http-api.md §4): endpoints, sessions, dead letters. Every route
//! needs an admin key.

use serde_json::{Value, json};
use tiny_http::{Method, Request};

use crate::server::{Reply, admin_ok, percent_decode};
use crate::service::Shared;
use crate::store::{Replay, SessionKey};
use crate::util::now_ms;

/// Routes `/api/{rest..}`.
pub(crate) fn route(shared: &Shared, req: &Request, rest: &[&str]) -> Reply {
    if !admin_ok(shared, req) {
        return Reply::error(401, "unauthorized", "the admin API needs an admin key in X-API-Key or api_key");
    }
    let m = req.method();
    let reply = match rest {
        ["endpoints"] if *m == Method::Get => endpoints(shared),
        ["sessions", ep, user, session] if *m == Method::Get || *m == Method::Delete => {
            let key = SessionKey {
                endpoint: percent_decode(ep),
                user_id: percent_decode(user),
                session_id: percent_decode(session),
            };
            if *m == Method::Get { get_session(shared, &key) } else { delete_session(shared, &key) }
        }
        ["deadletters"] if *m == Method::Get => dead_letters(shared),
        ["deadletters", id, "replay"] if *m == Method::Post => replay(shared, id),
        ["endpoints"] | ["deadletters"] => Reply::error(405, "method_not_allowed", "use GET").header("Allow", "GET"),
        ["sessions", _, _, _] => {
            Reply::error(405, "method_not_allowed", "use GET or DELETE").header("Allow", "GET, DELETE")
        }
        ["deadletters", _, "replay"] => Reply::error(405, "method_not_allowed", "use POST").header("Allow", "POST"),
        _ => Reply::error(404, "not_found", "no such admin route"),
    };
    reply.route("admin", "-")
}

fn store_error(e: crate::store::StoreError) -> Reply {
    log::error!("admin: {e}");
    Reply::error(500, "store_error", "the store could not be read; see the server log")
}

fn endpoints(shared: &Shared) -> Reply {
    let list: Vec<Value> = shared
        .config
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "urlToken": e.url_token,
                "enabled": e.enabled,
                "flow": e.flow.display().to_string(),
                "webhook": {"url": e.webhook.url, "user": e.webhook.user, "signed": e.webhook.secret.is_some()},
                "inboundKeys": e.inbound_keys.len(),
            })
        })
        .collect();
    Reply::json(200, json!({ "endpoints": list }))
}

fn get_session(shared: &Shared, key: &SessionKey) -> Reply {
    match shared.store.session(key) {
        Ok(Some(row)) if !row.state.is_empty() => {
            let state: Value = serde_json::from_str(&row.state).unwrap_or(Value::Null);
            let mut answer = json!({
                    "endpoint": key.endpoint, "userId": key.user_id, "sessionId": key.session_id,
                    "context": state.get("context").cloned().unwrap_or(Value::Null),
                    "entrypoint": state.get("entry").cloned().unwrap_or(json!(0)),
                    "pendingQuestion": state.get("question").cloned().unwrap_or(Value::Null),
                    "messageCount": row.messages,
                    "lastSeq": row.seq,
            });
            let collects =
                shared.config.endpoint_by_name(&key.endpoint).is_some_and(|e| e.data_protection.collect_conversations);
            if collects {
                match shared.store.transcript(key) {
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

fn transcript_json(lines: Vec<crate::store::TranscriptLine>) -> Value {
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            json!({
                "source": l.source,
                "text": l.text,
                "data": serde_json::from_str::<Value>(&l.data).unwrap_or(Value::Null),
                "at": crate::util::iso8601(l.at_ms),
            })
        })
        .collect();
    Value::Array(lines)
}

fn delete_session(shared: &Shared, key: &SessionKey) -> Reply {
    match shared.store.delete_session(key) {
        Ok(true) => Reply::json(200, json!({"status": "deleted"})),
        Ok(false) => Reply::error(404, "unknown_session", "no such session"),
        Err(e) => store_error(e),
    }
}

fn dead_letters(shared: &Shared) -> Reply {
    match shared.store.dead_letters() {
        Ok(list) => {
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
            Reply::json(200, json!({ "deadLetters": items }))
        }
        Err(e) => store_error(e),
    }
}

fn replay(shared: &Shared, id: &str) -> Reply {
    let Ok(id) = id.parse::<i64>() else {
        return Reply::error(400, "invalid_request", "the dead letter id must be a number");
    };
    let configured = |name: &str| shared.config.endpoint_by_name(name).is_some();
    match shared.store.replay_dead_letter(id, now_ms(), configured) {
        Ok(Replay::Queued) => {
            shared.senders.wake_all();
            Reply::json(200, json!({"status": "queued"}))
        }
        Ok(Replay::Unknown) => Reply::error(404, "unknown_dead_letter", "no dead letter has this id"),
        Ok(Replay::EndpointGone(name)) => Reply::error(
            409,
            "endpoint_not_configured",
            &format!("the dead letter is for endpoint {name:?}, which is not in the config; add it back, then replay"),
        ),
        Err(e) => store_error(e),
    }
}
