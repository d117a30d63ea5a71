//! The Chatwoot provider, through Chatwoot's Application API (header `api_access_token`):
//!
//! - start: `GET /api/v1/accounts/{account_id}/contacts/search?q={userId}` for the contact whose
//!   `identifier` is the userId, else `POST /api/v1/accounts/{account_id}/contacts` with
//!   `{inbox_id, name, identifier}`; for a found contact, `POST .../contacts/{id}/contact_inboxes`
//!   `{inbox_id}` for its `source_id` in the API inbox; `POST .../conversations` with
//!   `{source_id, inbox_id, contact_id, status: "open", additional_attributes}`; the transcript
//!   and the handover text as a private note, `POST .../conversations/{id}/messages`
//!   `{content, message_type: "outgoing", private: true}`.
//! - a user message: `POST .../conversations/{id}/messages` `{content, message_type: "incoming"}`.
//! - cancel: a private note, then `POST .../conversations/{id}/toggle_status` `{status: "resolved"}`.
//!
//! The conversation carries the `handoverId` in `additional_attributes.hookflow_handover_id`,
//! which Chatwoot sends back in the conversation object of its webhook events: that is how an
//! agent's reply finds its session (`intake/handover.rs`).

use serde_json::{Value, json};

use super::{Event, Failure, HandoverCall, Outcome, REQUEST_TIMEOUT, classify, transport};
use crate::config::Chatwoot;

/// The key of the handover id in a conversation's `additional_attributes`.
pub(crate) const ATTRIBUTE: &str = "hookflow_handover_id";

struct Api<'a> {
    agent: &'a ureq::Agent,
    c: &'a Chatwoot,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/accounts/{}/{path}", self.c.base_url, self.c.account_id)
    }

    /// One request; the answer's JSON (or `null` when it has none).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let url = self.url(path);
        let what = format!("chatwoot {method} {path}");
        let what = what.split('?').next().unwrap_or_default().to_owned();
        let resp = match body {
            Some(b) => {
                let req = self.agent.post(&url).header("api_access_token", &self.c.api_token);
                let req = req.header("Content-Type", "application/json");
                let req = req.config().timeout_global(Some(REQUEST_TIMEOUT)).build();
                req.send(b.to_string().as_bytes())
            }
            None => {
                let req = self.agent.get(&url).header("api_access_token", &self.c.api_token);
                req.config().timeout_global(Some(REQUEST_TIMEOUT)).build().call()
            }
        };
        let mut resp = resp.map_err(|e| transport(&what, e))?;
        classify(&resp, &what)?;
        let text = resp.body_mut().with_config().limit(1024 * 1024).read_to_string().unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn note(&self, conversation: &str, content: &str) -> Result<Value, Failure> {
        let body = json!({ "content": content, "message_type": "outgoing", "private": true });
        self.call("POST", &format!("conversations/{conversation}/messages"), Some(body))
    }

    /// The contact's id and its `source_id` in the API inbox, found or created.
    fn contact(&self, user_id: &str) -> Result<(i64, String), Failure> {
        let q = percent_encode(user_id);
        let found = self.call("GET", &format!("contacts/search?q={q}"), None)?;
        let existing = found["payload"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["identifier"].as_str() == Some(user_id)))
            .and_then(|c| c["id"].as_i64());
        if let Some(id) = existing {
            let ci = self.call(
                "POST",
                &format!("contacts/{id}/contact_inboxes"),
                Some(json!({"inbox_id": self.c.inbox_id})),
            )?;
            let source = ci["source_id"].as_str().ok_or_else(|| unexpected("contact_inboxes", "source_id"))?;
            return Ok((id, source.to_owned()));
        }
        let body = json!({ "inbox_id": self.c.inbox_id, "name": user_id, "identifier": user_id });
        let made = self.call("POST", "contacts", Some(body))?;
        let p = &made["payload"];
        let id = p["contact"]["id"].as_i64().ok_or_else(|| unexpected("contacts", "payload.contact.id"))?;
        let source = p["contact_inbox"]["source_id"].as_str().ok_or_else(|| unexpected("contacts", "source_id"))?;
        Ok((id, source.to_owned()))
    }

    fn start(&self, call: &HandoverCall, text: &str, transcript: &[Value]) -> Outcome {
        let (contact, source) = self.contact(&call.user_id)?;
        let body = json!({
            "source_id": source, "inbox_id": self.c.inbox_id, "contact_id": contact, "status": "open",
            "additional_attributes": { ATTRIBUTE: call.handover_id, "hookflow_session_id": call.session_id },
        });
        let conv = self.call("POST", "conversations", Some(body))?;
        let id = conv["id"].as_i64().ok_or_else(|| unexpected("conversations", "id"))?.to_string();
        let mut note = String::from("Handed over by the bot");
        if !text.is_empty() {
            note.push_str(&format!(" (\"{text}\")"));
        }
        note.push_str(".\n");
        for line in transcript {
            let who = line["source"].as_str().unwrap_or("?");
            note.push_str(&format!("\n{who}: {}", line["text"].as_str().unwrap_or("")));
        }
        self.note(&id, &note)?;
        Ok(Some(id))
    }
}

fn unexpected(route: &str, field: &str) -> Failure {
    Failure::new(false, format!("chatwoot {route}: the answer has no {field}"))
}

/// Makes the call through Chatwoot's API.
pub(crate) fn perform(agent: &ureq::Agent, c: &Chatwoot, call: &HandoverCall) -> Outcome {
    let api = Api { agent, c };
    let conversation = || call.conversation.clone().ok_or(Failure::new(false, "no Chatwoot conversation was started"));
    match &call.event {
        Event::Start { text, transcript, .. } => api.start(call, text, transcript),
        Event::Message { text, data } => {
            let content = match (text, data) {
                (Some(t), _) if !t.is_empty() => t.clone(),
                (_, Some(d)) => d.to_string(),
                _ => String::new(),
            };
            let body = json!({ "content": content, "message_type": "incoming", "private": false });
            api.call("POST", &format!("conversations/{}/messages", conversation()?), Some(body))?;
            Ok(None)
        }
        Event::Cancel => {
            let id = conversation()?;
            api.note(&id, "The user went back to the bot.")?;
            api.call("POST", &format!("conversations/{id}/toggle_status"), Some(json!({"status": "resolved"})))?;
            Ok(None)
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
