//! An `http` node's request, made by a call thread (`calls.rs`) while the turn is parked at its
//! checkpoint (flows.md, Execution), or right away by `hookflow try`. The answer becomes
//! `{status, headers, body}` (body parsed when it is JSON) or `{error}`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::flow::HttpCall;

/// Longest answer body kept in `context`.
const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// The agent for `http` nodes: statuses as values, a few redirects followed (unlike webhook
/// deliveries, an API lookup that moved should still work).
pub(crate) fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(5)
        .user_agent(concat!("hookflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Performs the call; never fails: trouble is described in the result.
pub(crate) fn perform(agent: &ureq::Agent, call: &HttpCall) -> Value {
    match send(agent, call) {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    }
}

fn send(agent: &ureq::Agent, call: &HttpCall) -> Result<Value, String> {
    let mut req = ureq::http::Request::builder().method(call.method.as_str()).uri(&call.url);
    let has_type = call.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    for (k, v) in &call.headers {
        req = req.header(k, v);
    }
    let body = match &call.body {
        None => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v) => {
            if !has_type {
                req = req.header("Content-Type", "application/json");
            }
            v.to_string().into_bytes()
        }
    };
    let req = req.body(body).map_err(|e| format!("invalid request: {e}"))?;
    let req = agent.configure_request(req).timeout_global(Some(Duration::from_millis(call.timeout_ms))).build();
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (k, v) in resp.headers() {
        headers.insert(k.as_str().to_owned(), Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()));
    }
    let bytes = resp.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_vec().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // Kept as text when it is not JSON, or nests so deeply that the session could not be read
    // back (see `wire::MAX_DATA_DEPTH`).
    let body = match serde_json::from_str::<Value>(&text) {
        Ok(v) if crate::util::depth(&v) <= crate::wire::MAX_DATA_DEPTH => v,
        _ => Value::String(text),
    };
    Ok(json!({ "status": status, "headers": headers, "body": body }))
}
