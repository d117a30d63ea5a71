//! Intent recognition, run before the Flow on `input.text`: fills `input.intent`,
//! `input.intentScore`, `input.intentRanking` (best first) and `input.slots`.
//!
//! `builtin` uses the Flow's own scorer (`flow::intents`); `rasa` asks a Rasa server
//! (`/model/parse`), and a failure or timeout leaves the intent null and the turn goes on;
//! `none` does nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Endpoint, Nlu};
use crate::flow::Flow;
use crate::flow::intents::rank;

/// A question for the Rasa server, made by a call thread while the turn is parked.
#[derive(Debug, Clone)]
pub(crate) struct RasaRequest {
    endpoint: String,
    url: String,
    token: Option<String>,
    timeout: Duration,
    text: String,
}

impl RasaRequest {
    /// Asks about `text` instead (the user's text translated into the Flow's language).
    pub(crate) fn set_text(&mut self, text: String) {
        self.text = text;
    }
}

/// Runs the endpoint's built-in NLU on `input.text` right away (pure), or returns the request
/// to make when the endpoint asks Rasa (an outbound call: the caller performs it with `ask`,
/// off the worker, then applies it with `apply`).
pub(crate) fn prepare(ep: &Endpoint, flow: &Flow, input: &mut Value) -> Option<RasaRequest> {
    let text = input.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty())?.to_owned();
    match &ep.nlu {
        Nlu::None => None,
        Nlu::Builtin { threshold } => {
            if !flow.intents.is_empty() {
                let ranking = rank(flow, &text);
                let best = ranking.first().filter(|(_, s)| *s >= *threshold).cloned();
                apply(&Found { best, ranking, slots: json!({}) }, input);
            }
            None
        }
        Nlu::Rasa { url, token, timeout } => Some(RasaRequest {
            endpoint: ep.name.clone(),
            url: url.clone(),
            token: token.clone(),
            timeout: *timeout,
            text,
        }),
    }
}

/// Asks Rasa; a failure or timeout is logged and leaves the intent null (the turn goes on).
pub(crate) fn ask(agent: &ureq::Agent, req: &RasaRequest) -> Option<Found> {
    match rasa(agent, &req.url, req.token.as_deref(), req.timeout, &req.text) {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("{}: the Rasa NLU failed ({e}); the turn goes on without an intent", req.endpoint);
            None
        }
    }
}

/// Writes an NLU answer into `input`.
pub(crate) fn apply(found: &Found, input: &mut Value) {
    let ranking: Vec<Value> = found.ranking.iter().map(|(n, s)| json!({ "name": n, "score": round(*s) })).collect();
    let m = input.as_object_mut().expect("input is an object");
    m.insert("intent".into(), found.best.as_ref().map_or(Value::Null, |(n, _)| json!(n)));
    m.insert("intentScore".into(), found.best.as_ref().map_or(Value::Null, |(_, s)| json!(round(*s))));
    m.insert("intentRanking".into(), Value::Array(ranking));
    m.insert("slots".into(), found.slots.clone());
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// An NLU answer.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    best: Option<(String, f64)>,
    ranking: Vec<(String, f64)>,
    slots: Value,
}

/// POST `{"text"}` to `{url}/model/parse` (Rasa's HTTP API).
fn rasa(agent: &ureq::Agent, url: &str, token: Option<&str>, timeout: Duration, text: &str) -> Result<Found, String> {
    let mut endpoint = format!("{}/model/parse", url.trim_end_matches('/'));
    if let Some(t) = token {
        endpoint.push_str(&format!("?token={t}"));
    }
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(&endpoint)
        .header("Content-Type", "application/json")
        .body(json!({ "text": text }).to_string())
        .map_err(|e| e.to_string())?;
    let req = agent.configure_request(req).timeout_global(Some(timeout)).build();
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    if resp.status().as_u16() != 200 {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    let text = resp.body_mut().with_config().limit(1 << 20).read_to_string().map_err(|e| e.to_string())?;
    let body: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let best =
        body["intent"]["name"].as_str().map(|n| (n.to_owned(), body["intent"]["confidence"].as_f64().unwrap_or(0.0)));
    let ranking = body["intent_ranking"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| Some((i["name"].as_str()?.to_owned(), i["confidence"].as_f64()?))).collect())
        .unwrap_or_default();
    let mut slots = serde_json::Map::new();
    for e in body["entities"].as_array().into_iter().flatten() {
        if let Some(name) = e["entity"].as_str() {
            slots.insert(name.to_owned(), e["value"].clone());
        }
    }
    Ok(Found { best, ranking, slots: Value::Object(slots) })
}
