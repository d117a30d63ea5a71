//! An `http` node's request, made by a call thread (`calls.rs`) while the turn is parked at its
//! checkpoint (flows.md, Execution), or right away by `hookflow try`. The answer becomes
//! `{status, headers, body}` (body parsed when it is JSON) or `{error}`.
//!
//! Redirects are followed here, not by ureq (at most `MAX_REDIRECTS`), because ureq drops only
//! `Authorization` and `Cookie` on the way: an `X-API-Key` of the node's `headers` went on to
//! whatever origin the API redirected to. The node's headers are sent only to the origin
//! (scheme, host, port) of its URL; from the first hop to another origin on, they are dropped,
//! even if a later hop comes back (that origin chose the path). Like ureq: 301, 302 and 303
//! become a GET without body, 307 and 308 are followed for methods without a body only (the
//! answer is returned as it is otherwise), and the whole chain shares the node's `timeoutMs`.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use ureq::http::{Method, Uri};

use crate::flow::HttpCall;

/// Longest answer body kept in `context`.
const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Most redirects followed (README, the `http` node).
const MAX_REDIRECTS: usize = 5;

/// The agent for `http` nodes: statuses as values, redirects left to `send` (see the file doc).
pub(crate) fn agent(tls: ureq::tls::TlsConfig) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
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

/// One request of the chain.
struct Hop {
    method: Method,
    uri: Uri,
    /// The node's body (on the first request only: redirects never resend it).
    body: Option<Vec<u8>>,
    /// Whether the node's headers go with it.
    headers: bool,
}

fn send(agent: &ureq::Agent, call: &HttpCall) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_millis(call.timeout_ms);
    let uri: Uri = call.url.parse().map_err(|e| format!("invalid request: {e}"))?;
    let origin = Origin::of(&uri);
    let method = Method::from_bytes(call.method.as_bytes()).map_err(|e| format!("invalid request: {e}"))?;
    let mut hop = Hop { method, uri, body: Some(encode_body(call)), headers: true };
    let mut redirects = 0;
    let mut resp = loop {
        let resp = request(agent, call, &hop, deadline)?;
        let Some(next) = follow(&resp, &hop)? else { break resp };
        if redirects == MAX_REDIRECTS {
            return Err(format!("more than {MAX_REDIRECTS} redirects"));
        }
        redirects += 1;
        // Sticky: once the chain has left the node's origin, its headers stay behind.
        let headers = hop.headers && Origin::of(&next) == origin;
        if hop.headers && !headers {
            log::debug!("http node: redirected to another origin; the node's headers are not sent there");
        }
        hop = Hop { method: redirect_method(resp.status().as_u16(), &hop.method), uri: next, body: None, headers };
    };
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

/// The body as sent: a string as it is, any other JSON value as JSON text.
fn encode_body(call: &HttpCall) -> Vec<u8> {
    match &call.body {
        None => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(v) => v.to_string().into_bytes(),
    }
}

/// Sends one request of the chain, within what is left of the node's timeout.
fn request(
    agent: &ureq::Agent,
    call: &HttpCall,
    hop: &Hop,
    deadline: Instant,
) -> Result<ureq::http::Response<ureq::Body>, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("timeout: no answer within {} ms", call.timeout_ms));
    }
    let mut req = ureq::http::Request::builder().method(hop.method.clone()).uri(hop.uri.clone());
    if hop.headers {
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
    }
    let body = hop.body.clone().unwrap_or_default();
    let json_body = hop.body.is_some() && matches!(&call.body, Some(v) if !v.is_string());
    let has_type = hop.headers && call.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if json_body && !has_type {
        req = req.header("Content-Type", "application/json");
    }
    let req = req.body(body).map_err(|e| format!("invalid request: {e}"))?;
    let req = agent.configure_request(req).timeout_global(Some(left)).build();
    agent.run(req).map_err(|e| e.to_string())
}

/// Where a redirect answer sends the next request, or `None` when the answer is the result (not
/// a redirect, no `Location`, or a 307/308 of a method with a body).
fn follow(resp: &ureq::http::Response<ureq::Body>, hop: &Hop) -> Result<Option<Uri>, String> {
    let status = resp.status().as_u16();
    let preserving = matches!(status, 307 | 308);
    if !(301..=303).contains(&status) && !preserving {
        return Ok(None);
    }
    let body_method = matches!(hop.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if preserving && body_method {
        return Ok(None);
    }
    let Some(location) = resp.headers().get("location") else { return Ok(None) };
    let location = location.to_str().map_err(|_| format!("redirect {status} with a Location that is not ASCII"))?;
    resolve(&hop.uri, location).map(Some)
}

/// 301/302/303 turn any method but HEAD into GET (as browsers, curl and ureq do); 307/308 keep it.
fn redirect_method(status: u16, method: &Method) -> Method {
    match status {
        307 | 308 => method.clone(),
        _ if *method == Method::HEAD => Method::HEAD,
        _ => Method::GET,
    }
}

/// `location` resolved against `base` (RFC 3986 §5.2, for the shapes servers send: absolute,
/// `//authority/…`, `/path`, a relative path, `?query`); only http and https are followed.
fn resolve(base: &Uri, location: &str) -> Result<Uri, String> {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let text = if location.contains("://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = if location.starts_with('?') { path } else { &path[..path.rfind('/').map_or(0, |i| i + 1)] };
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = text.parse().map_err(|e| format!("redirect to an invalid Location: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err("redirect to a Location that is not an http:// or https:// URL".into()),
    }
}

/// The origin of a URL (RFC 6454): scheme, host and port, the port made explicit.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Origin {
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Origin { scheme, host: uri.host().unwrap_or("").to_ascii_lowercase(), port }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = uri("http://api.example:8080/v1/orders/42?x=1");
        let cases = [
            ("https://other.example/a", "https://other.example/a"),
            ("//cdn.example/b", "http://cdn.example/b"),
            ("/c?d=1", "http://api.example:8080/c?d=1"),
            ("43", "http://api.example:8080/v1/orders/43"),
            ("?page=2", "http://api.example:8080/v1/orders/42?page=2"),
        ];
        for (location, want) in cases {
            assert_eq!(resolve(&base, location).unwrap().to_string(), want, "{location}");
        }
        assert!(resolve(&base, "file:///etc/passwd").is_err());
        assert!(resolve(&base, "ftp://h/x").is_err());
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let o = |s: &str| Origin::of(&uri(s));
        assert_eq!(o("http://API.example/x"), o("http://api.example:80/y?z"));
        assert_eq!(o("https://h/"), o("https://h:443/"));
        assert_ne!(o("http://h/"), o("https://h/"));
        assert_ne!(o("http://h:8080/"), o("http://h:8081/"));
        assert_ne!(o("http://h/"), o("http://h.evil/"));
    }

    #[test]
    fn see_other_becomes_get_and_temporary_keeps_the_method() {
        assert_eq!(redirect_method(303, &Method::POST), Method::GET);
        assert_eq!(redirect_method(302, &Method::HEAD), Method::HEAD);
        assert_eq!(redirect_method(307, &Method::GET), Method::GET);
    }
}
