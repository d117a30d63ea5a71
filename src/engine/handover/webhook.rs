//! The generic agent-desk provider: each event is one POST of JSON to the desk's `url`, signed
//! and authenticated like an output (Standard Webhooks headers with the handover's `secret`,
//! HTTP Basic with `user`/`password`). The desk answers through the agent routes
//! (`intake/handover.rs`).

use base64::Engine;
use serde_json::json;

use super::{Event, HandoverCall, Outcome, REQUEST_TIMEOUT, classify, transport};
use crate::config::HandoverWebhook;
use crate::crypto;

/// The event's body (handover.md, Providers).
pub(crate) fn body(call: &HandoverCall) -> String {
    let id = &call.handover_id;
    match &call.event {
        Event::Start { text, transcript, context } => json!({
            "event": "handover.requested", "handoverId": id, "endpoint": call.endpoint, "userId": call.user_id,
            "sessionId": call.session_id, "text": text, "transcript": transcript, "context": context,
        }),
        Event::Message { text, data } => {
            json!({ "event": "user.message", "handoverId": id, "text": text, "data": data })
        }
        Event::Cancel => json!({ "event": "handover.cancelled", "handoverId": id }),
    }
    .to_string()
}

/// POSTs the event; a 2xx answer is success.
pub(crate) fn perform(agent: &ureq::Agent, w: &HandoverWebhook, call: &HandoverCall) -> Outcome {
    let body = body(call);
    let mut req = agent.post(&w.url).header("Content-Type", "application/json");
    if let Some(secret) = &w.secret {
        // The same id for every attempt of one event (the desk can drop repeats), as for outputs.
        let now_s = crate::util::now_ms() / 1000;
        let id = crypto::webhook_id(&call.endpoint, &call.user_id, &call.session_id, call.message_id, &body);
        let sig = crypto::signature(secret, &id, now_s, body.as_bytes());
        req = req
            .header("webhook-id", id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", sig);
    }
    if let Some(user) = &w.user {
        let pass = w.password.as_deref().unwrap_or("");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        req = req.header("Authorization", format!("Basic {token}"));
    }
    let req = req.config().timeout_global(Some(REQUEST_TIMEOUT)).build();
    let resp = req.send(body.as_bytes()).map_err(|e| transport("the agent desk", e))?;
    classify(&resp, "the agent desk")?;
    Ok(None)
}
