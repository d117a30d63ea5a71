//! One provider request: the common HTTP part (timeout, body cap, error text without secrets)
//! over the four APIs in `deepl.rs`, `libre.rs`, `google.rs` and `microsoft.rs`, each of which
//! only builds its request and reads its answer (pure, tested on their own).

use serde_json::Value;

use super::{Request, Translated, deepl, google, libre, microsoft};
use crate::config::ProviderKind;

/// Longest provider answer read.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// Longest piece of a provider's error message kept (it goes into logs and `input.translationError`).
const MAX_ERROR_CHARS: usize = 200;

/// A request as a provider module builds it.
pub(crate) struct Http {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Sends `req` and reads the answer; an error says what failed (status and the provider's
/// message, or the transport problem), never the texts or the key.
pub(crate) fn send(agent: &ureq::Agent, req: &Request) -> Result<Translated, String> {
    if req.texts.is_empty() {
        return Ok(Translated { texts: vec![], detected: None });
    }
    let http = match req.provider.kind {
        ProviderKind::Deepl => deepl::request(req),
        ProviderKind::Libretranslate => libre::request(req),
        ProviderKind::Google => google::request(req),
        ProviderKind::Microsoft => microsoft::request(req),
    };
    let (status, body) = post(agent, req, http).map_err(|e| redact(&e, req))?;
    let parsed = match req.provider.kind {
        ProviderKind::Deepl => deepl::answer(status, &body),
        ProviderKind::Libretranslate => libre::answer(status, &body),
        ProviderKind::Google => google::answer(status, &body),
        ProviderKind::Microsoft => microsoft::answer(status, &body),
    };
    let t = parsed.map_err(|e| redact(&e, req))?;
    if t.texts.len() != req.texts.len() {
        return Err(format!("the provider answered {} texts for {} sent", t.texts.len(), req.texts.len()));
    }
    Ok(t)
}

fn post(agent: &ureq::Agent, req: &Request, http: Http) -> Result<(u16, String), String> {
    let mut b = ureq::http::Request::builder().method("POST").uri(&http.url).header("Content-Type", "application/json");
    for (k, v) in &http.headers {
        b = b.header(*k, v);
    }
    let r = b.body(http.body).map_err(|e| format!("invalid request: {e}"))?;
    let r = agent.configure_request(r).timeout_global(Some(req.provider.timeout)).build();
    let mut resp = agent.run(r).map_err(|e| match e {
        ureq::Error::Timeout(_) => format!("no answer within {} ms", req.provider.timeout.as_millis()),
        other => other.to_string(),
    })?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// The JSON of an answer, or what the provider said went wrong: `HTTP 456: Quota exceeded`.
pub(crate) fn json_or_error(
    status: u16,
    body: &str,
    message: impl Fn(&Value) -> Option<String>,
) -> Result<Value, String> {
    let v: Option<Value> = serde_json::from_str(body).ok();
    if status != 200 {
        let said = v.as_ref().and_then(message).map(|m| format!(": {}", short(&m))).unwrap_or_default();
        return Err(format!("HTTP {status}{said}"));
    }
    v.ok_or_else(|| "the answer is not JSON".to_owned())
}

fn short(s: &str) -> String {
    if s.chars().count() <= MAX_ERROR_CHARS {
        return s.to_owned();
    }
    s.chars().take(MAX_ERROR_CHARS).chain(std::iter::once('…')).collect()
}

/// Takes the key out of a message (a transport error may repeat the URL, and Google's URL
/// carries the key).
fn redact(message: &str, req: &Request) -> String {
    match req.provider.api_key.as_deref().filter(|k| !k.is_empty()) {
        Some(k) => message.replace(k, "***").replace(&percent_encode(k), "***"),
        None => message.to_owned(),
    }
}

/// Percent-encoding of a query value (everything but unreserved characters).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
