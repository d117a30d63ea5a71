//! Intent recognition, run before the Flow on `input.text`: fills `input.intent`,
//! `input.intentScore`, `input.intentRanking` (best first) and `input.slots`.
//!
//! `builtin` scores each intent of the Flow by its best example: words are lowercased and
//! stripped of punctuation, matched regardless of order, and a word matches a word one or two
//! typing errors away (by length); the score is the F1 of matched words, with very common words
//! counting less. `rasa` asks a Rasa server (`/model/parse`); a failure or timeout leaves the
//! intent null and the turn goes on. `none` does nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Endpoint, Nlu};
use crate::flow::Flow;
use crate::service::Shared;
use crate::util::edit_distance;

/// Words that say little about intent; they count a third of other words.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "you", "your", "is", "are", "am", "be", "to", "of", "in", "on", "for", "it",
    "this", "that", "do", "does", "can", "could", "would", "please", "and", "or", "with", "at", "we", "our",
];

/// An example sentence, ready for scoring.
#[derive(Debug, Clone)]
pub struct Example {
    words: Vec<String>,
}

/// Prepares example sentences once, when the Flow is loaded.
pub fn prepare(examples: &[String]) -> Vec<Example> {
    examples.iter().map(|e| Example { words: words(e) }).collect()
}

/// Lowercase words without punctuation.
fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn weight(w: &str) -> f64 {
    if STOPWORDS.contains(&w) { 0.3 } else { 1.0 }
}

/// Whether two words are the same up to small typos: one edit from 4 letters, two from 8.
fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let n = a.chars().count().min(b.chars().count());
    let allowed = match n {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    };
    allowed > 0 && a.chars().count().abs_diff(b.chars().count()) <= allowed && edit_distance(a, b) <= allowed
}

/// Weighted share of `of` that has a match in `among`.
fn covered(of: &[String], among: &[String]) -> f64 {
    let total: f64 = of.iter().map(|w| weight(w)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let hit: f64 = of.iter().filter(|w| among.iter().any(|x| same_word(w, x))).map(|w| weight(w)).sum();
    hit / total
}

/// Similarity of an utterance to one example, 0..=1.
fn similarity(utterance: &[String], example: &Example) -> f64 {
    let p = covered(utterance, &example.words);
    let r = covered(&example.words, utterance);
    if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) }
}

/// Every intent of the Flow with its score, best first.
pub fn rank(flow: &Flow, text: &str) -> Vec<(String, f64)> {
    let u = words(text);
    let mut ranking: Vec<(String, f64)> = flow
        .intents
        .iter()
        .map(|i| (i.name.clone(), i.prepared.iter().map(|e| similarity(&u, e)).fold(0.0, f64::max)))
        .collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranking
}

/// Runs the endpoint's NLU on `input.text` and writes the results into `input`.
pub(crate) fn annotate(shared: &Shared, ep: &Endpoint, flow: &Flow, input: &mut Value) {
    let Some(text) = input.get("text").and_then(Value::as_str).filter(|t| !t.trim().is_empty()) else { return };
    let text = text.to_owned();
    let found = match &ep.nlu {
        Nlu::None => return,
        Nlu::Builtin { threshold } => {
            if flow.intents.is_empty() {
                return;
            }
            let ranking = rank(flow, &text);
            let best = ranking.first().filter(|(_, s)| *s >= *threshold).cloned();
            Found { best, ranking, slots: json!({}) }
        }
        Nlu::Rasa { url, token, timeout } => match rasa(&shared.http_agent, url, token.as_deref(), *timeout, &text) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("{}: the Rasa NLU failed ({e}); the turn goes on without an intent", ep.name);
                return;
            }
        },
    };
    let ranking: Vec<Value> = found.ranking.iter().map(|(n, s)| json!({ "name": n, "score": round(*s) })).collect();
    let m = input.as_object_mut().expect("input is an object");
    m.insert("intent".into(), found.best.as_ref().map_or(Value::Null, |(n, _)| json!(n)));
    m.insert("intentScore".into(), found.best.as_ref().map_or(Value::Null, |(_, s)| json!(round(*s))));
    m.insert("intentRanking".into(), Value::Array(ranking));
    m.insert("slots".into(), found.slots);
}

fn round(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// An NLU answer.
struct Found {
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
